/**
 * The RabbitMQ broker passes the broker conformance suite against the machine's RabbitMQ (real
 * time: `advance` waits). Every broker of the run has its own prefix; its queues, exchanges and
 * dead-letter stream are deleted at the end.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type AmqpBroker, createAmqpBroker } from '../src/adapters/amqp/amqp-broker.ts';
import { MAX_LETTER_MESSAGE } from '../src/broker/outcome.ts';
import { createEnvelope, ParleyError, systemClock } from '../src/index.ts';
import { BROKERS, cuttableProxy, needBroker } from './brokers.ts';
import { brokerConformance } from './conformance/broker.ts';
import { waitFor } from './helpers.ts';
import { assertFarNotBeforeLetter } from './letter-room.ts';

const skip = await needBroker('rabbitmq');
let n = 0;
const made: AmqpBroker[] = [];

if (skip === false) {
  brokerConformance({
    name: 'rabbitmq',
    noHistory: "RabbitMQ keeps messages only in the groups' queues: there is no log to read",
    clock: systemClock,
    create: async () => {
      const broker = await createAmqpBroker({
        url: BROKERS.rabbitmq.url,
        prefix: `ptest${process.pid}r${++n}`,
        log: () => {},
      });
      made.push(broker);
      return broker;
    },
    advance: (ms) => sleep(ms),
    // As another client publishes: persistent, and no message id or header of Parley's.
    inject: (broker, topic, body) =>
      (broker as AmqpBroker).publishConfirmed((broker as AmqpBroker).topicsExchange, topic, body, {
        persistent: true,
      }),
    // Marked as a letter record, as the store marks its own (other records are not letters).
    injectLetter: (broker, body) =>
      (broker as AmqpBroker).publishConfirmed('', (broker as AmqpBroker).dlq, body, {
        persistent: true,
        headers: { 'x-parley-record': 'letter' },
      }),
    skip: {
      'a new group starts from now, or from the beginning when asked':
        'RabbitMQ: a queue holds only what arrived after it was bound; a group created later cannot start from the beginning (only a stream could)',
    },
  });
  after(async () => {
    for (const broker of made) await broker.destroyAll();
  });
} else {
  it('broker conformance: rabbitmq', { skip }, () => {});
}

describe('rabbitmq broker: reconnects', { skip }, () => {
  it('consumers come back after the connection drops; a message held at the cut is redelivered', async () => {
    // A proxy whose connections the test cuts, as a network failure would.
    const proxy = await cuttableProxy(BROKERS.rabbitmq.port);
    const { port } = proxy;
    const logs: string[] = [];
    const broker = await createAmqpBroker({
      url: `amqp://guest:guest@127.0.0.1:${port}`,
      prefix: `ptest${process.pid}cut`,
      log: (m) => logs.push(m),
    });
    try {
      const seen: string[] = [];
      let hold: (() => void) | undefined;
      await broker.subscribe({ topic: 'cut.t', group: 'g' }, async (d) => {
        seen.push(`${d.envelope.data}#${d.attempt}`);
        if (d.envelope.data === 'held' && d.attempt === 1) await new Promise<void>((r) => (hold = r));
      });
      await broker.publish(createEnvelope({ source: '/t', type: 'cut.t', data: 'held' }));
      await waitFor(() => seen.length === 1, 5000, 'the first delivery');
      proxy.cut();
      await waitFor(() => logs.some((l) => l.includes('reconnected')), 10_000, 'the reconnect');
      hold?.(); // its ack is ignored: the message went back with the connection
      await broker.publish(createEnvelope({ source: '/t', type: 'cut.t', data: 'after' }));
      await waitFor(() => seen.includes('after#1') && seen.includes('held#2'), 10_000, 'both handled');
      assert.ok(
        logs.some((l) => l.includes('lost the connection')),
        logs.join('\n'),
      );
    } finally {
      await broker.destroyAll().catch(() => undefined);
      await broker.close();
      await proxy.close();
    }
  });
});

describe('rabbitmq broker: one write per turn of publishes', { skip }, () => {
  it('a turn of publishes leaves in one socket write, every one confirmed and delivered in order', async () => {
    const open = () =>
      createAmqpBroker({ url: BROKERS.rabbitmq.url, prefix: `ptest${process.pid}cork`, log: () => {} });
    const broker = await open();
    // The consumer on its own connection: the publisher's socket carries only the publishes.
    const receiving = await open();
    try {
      const got: number[] = [];
      const consumer = await receiving.subscribe(
        { topic: 'cork.t', group: 'g', maxInFlight: 500 },
        async (d) => {
          got.push(d.envelope.data as number);
        },
      );
      await broker.publish(createEnvelope({ source: '/t', type: 'cork.t', data: -1 })); // channel open
      const model = broker.link.current;
      assert.ok(model !== undefined, 'connected');
      const socket = (model.connection as unknown as { stream: Record<string, unknown> }).stream;
      const calls = { write: 0, writev: 0, chunks: 0 };
      const write = socket._write as (...a: unknown[]) => unknown;
      const writev = socket._writev as (chunks: unknown[], cb: unknown) => unknown;
      socket._write = function (this: unknown, ...a: unknown[]) {
        calls.write++;
        return write.apply(this, a);
      };
      socket._writev = function (this: unknown, chunks: unknown[], cb: unknown) {
        calls.writev++;
        calls.chunks += chunks.length;
        return writev.call(this, chunks, cb);
      };
      const receipts = await Promise.all(
        Array.from({ length: 300 }, (_, i) =>
          broker.publish(createEnvelope({ source: '/t', type: 'cork.t', data: i })),
        ),
      );
      socket._write = write;
      socket._writev = writev;
      assert.equal(receipts.length, 300);
      // The turn's 300 messages: one writev, nothing else written.
      assert.deepEqual(calls, { write: 0, writev: 1, chunks: 300 });
      await waitFor(() => got.length === 301, 10_000, 'all 301 delivered');
      assert.deepEqual(
        got,
        Array.from({ length: 301 }, (_, i) => i - 1),
      );
      await consumer.close();
    } finally {
      await broker.destroyAll().catch(() => undefined);
      await broker.close();
      await receiving.close();
    }
  });
});

describe('rabbitmq broker: batched acks', { skip }, () => {
  // Acks leave once per turn, several as one `multiple` ack only below the lowest open delivery.
  // Were an ack to cover a delivery still held, its later nack (the lease ending) would name an
  // unknown tag: RabbitMQ closes the channel, and that message is acked without being handled.
  it('out-of-order settling: a held delivery is not covered by the others acks; all settle once', async () => {
    const logs: string[] = [];
    const prefix = `ptest${process.pid}acks`;
    const open = () => createAmqpBroker({ url: BROKERS.rabbitmq.url, prefix, log: (m) => logs.push(m) });
    const broker = await open();
    const again = await open();
    try {
      const runs = new Map<number, number>();
      const spec = { topic: 'acks.t', group: 'g', lease: 400, maxInFlight: 50 };
      const consumer = await broker.subscribe(spec, async (d) => {
        const n = d.envelope.data as number;
        runs.set(n, (runs.get(n) ?? 0) + 1);
        // Message 0 outlives its first lease (given back, then redelivered); the rest settle in a
        // scrambled order over a few turns.
        if (n === 0 && d.attempt === 1) await sleep(700);
        else await sleep((n * 7) % 23);
      });
      for (let i = 0; i < 40; i++)
        await broker.publish(createEnvelope({ source: '/t', type: 'acks.t', data: i }));
      await waitFor(() => runs.size === 40 && runs.get(0) === 2, 10_000, 'every message, and 0 twice');
      await sleep(200);
      await consumer.close();
      // Nothing is left in the queue: every delivery was acked, none twice (a second ack of a
      // tag would close the channel with an error).
      const late: unknown[] = [];
      const after = await again.subscribe(spec, async (d) => {
        late.push(d.envelope.data);
      });
      await sleep(800);
      await after.close();
      assert.deepEqual(late, []);
      assert.deepEqual(
        [...runs].filter(([n, c]) => c !== (n === 0 ? 2 : 1)),
        [],
      );
      assert.ok(!logs.some((l) => /PRECONDITION|unknown delivery tag|could not/i.test(l)), logs.join('\n'));
    } finally {
      await broker.destroyAll().catch(() => undefined);
      await broker.close();
      await again.close();
    }
  });

  it('a close started by the last handler, while its ack waits for the end of the turn, loses no ack', async () => {
    const prefix = `ptest${process.pid}ackclose`;
    const broker = await createAmqpBroker({ url: BROKERS.rabbitmq.url, prefix, log: () => {} });
    try {
      const spec = { topic: 'ackclose.t', group: 'g' };
      let seen = 0;
      let closed: Promise<void> | undefined;
      const consumer: { close(): Promise<void> } = await broker.subscribe(spec, async () => {
        // The close waits for this handler; its ack is queued when the close goes on.
        if (++seen === 20) closed = consumer.close();
      });
      for (let i = 0; i < 20; i++)
        await broker.publish(createEnvelope({ source: '/t', type: 'ackclose.t', data: i }));
      await waitFor(() => closed !== undefined, 5000, 'all handled');
      await closed;
      const late: unknown[] = [];
      const after = await broker.subscribe(spec, async (d) => {
        late.push(d.envelope.data);
      });
      await sleep(800);
      await after.close();
      assert.deepEqual(late, []);
    } finally {
      await broker.destroyAll().catch(() => undefined);
      await broker.close();
    }
  });
});

describe('rabbitmq broker: the server’s max_message_size', { skip }, () => {
  it('a message over it is refused with INVALID_ARGUMENT before it is sent; the publishes around it are confirmed', async () => {
    const broker = await createAmqpBroker({
      url: BROKERS.rabbitmq.url,
      prefix: `ptest${process.pid}size`,
      maxMessageBytes: 10_240,
      log: () => {},
    });
    try {
      const got: unknown[] = [];
      const consumer = await broker.subscribe(
        { topic: 'size.t', group: 'g' },
        async (d) => void got.push(d.envelope.data),
      );
      // Before: sent, RabbitMQ closed the publishing channel (406), and this publish and every
      // other in flight on it failed as UNAVAILABLE, retryable: an outbox sent it again for ever.
      const results = await Promise.allSettled([
        broker.publish(createEnvelope({ source: '/t', type: 'size.t', data: 1 })),
        broker.publish(createEnvelope({ source: '/t', type: 'size.t', data: 'x'.repeat(2048) })),
        broker.publish(createEnvelope({ source: '/t', type: 'size.t', data: 3 })),
      ]);
      assert.deepEqual(
        results.map((r) => r.status),
        ['fulfilled', 'rejected', 'fulfilled'],
      );
      const error = (results[1] as PromiseRejectedResult).reason;
      assert.ok(error instanceof ParleyError);
      assert.equal(error.code, 'INVALID_ARGUMENT');
      assert.equal(error.retryable, false);
      assert.match(
        error.message,
        /a message of \d+ bytes is over the largest this broker takes, 2048 \(max_message_size 10240 less 8192/,
      );
      await waitFor(() => got.length === 2, 10_000, 'the two small ones');
      assert.deepEqual(got.sort(), [1, 3]);
      await consumer.close();

      // One just within the room fails into a dead letter, the failure's text cut.
      const dying = await broker.subscribe({ topic: 'dead.t', group: 'g', maxAttempts: 1 }, async () => {
        throw new ParleyError('FAILED_PRECONDITION', 'e'.repeat(5000), { retryable: false });
      });
      const empty = JSON.stringify(createEnvelope({ source: '/t', type: 'dead.t', data: '' })).length;
      const data = 'x'.repeat(2048 - empty);
      await broker.publish(createEnvelope({ source: '/t', type: 'dead.t', data }));
      await assert.rejects(
        broker.publish(createEnvelope({ source: '/t', type: 'dead.t', data: `${data}x` })),
        {
          code: 'INVALID_ARGUMENT',
        },
      );
      let letters = await broker.deadLetters.list({ topic: 'dead.t' });
      for (let i = 0; i < 100 && letters.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
        letters = await broker.deadLetters.list({ topic: 'dead.t' });
      }
      assert.equal(letters.length, 1);
      assert.equal(letters[0]?.envelope.data, data);
      assert.equal(letters[0]?.message, `${'e'.repeat(MAX_LETTER_MESSAGE)}… (5000 characters)`);
      await dying.close();
    } finally {
      await broker.destroyAll().catch(() => undefined);
      await broker.close();
    }
  });

  it('by default the limit is RabbitMQ’s own default, 128 MiB', async () => {
    const broker = await createAmqpBroker({
      url: BROKERS.rabbitmq.url,
      prefix: `ptest${process.pid}size2`,
      log: () => {},
    });
    try {
      const data = 'x'.repeat(128 * 1024 * 1024);
      await assert.rejects(broker.publish(createEnvelope({ source: '/t', type: 'size.t', data })), {
        code: 'INVALID_ARGUMENT',
        message: /over the largest this broker takes, 134209536 \(max_message_size 134217728 less 8192/,
      });
    } finally {
      await broker.destroyAll().catch(() => undefined);
      await broker.close();
    }
  });
});

describe('rabbitmq broker: a not-before header out of range', { skip }, () => {
  it('a message another client marks as not before a time past any delay is dead-lettered with INVALID_ARGUMENT, once; the next one flows', async () => {
    const logs: string[] = [];
    const broker = await createAmqpBroker({
      url: BROKERS.rabbitmq.url,
      prefix: `ptest${process.pid}nb`,
      log: (m) => logs.push(m),
    });
    made.push(broker);
    try {
      const got: unknown[] = [];
      const consumer = await broker.subscribe(
        { topic: 'nb.t', group: 'g', maxAttempts: 1, lease: 1000 },
        async (d) => void got.push(d.envelope.data),
      );
      const far = createEnvelope({ source: '/other', type: 'nb.t', data: 'far' });
      // Before: put back through a delay queue whose TTL RabbitMQ refuses (406), again every lease.
      await broker.publishConfirmed(broker.topicsExchange, 'nb.t', Buffer.from(JSON.stringify(far)), {
        persistent: true,
        headers: { 'x-parley-not-before': '1e15' },
      });
      await broker.publish(createEnvelope({ source: '/t', type: 'nb.t', data: 'next' }));
      let letters = await broker.deadLetters.list({ topic: 'nb.t' });
      for (let i = 0; i < 200 && letters.length === 0; i++) {
        await sleep(50);
        letters = await broker.deadLetters.list({ topic: 'nb.t' });
      }
      await waitFor(() => got.length === 1, 10_000, 'the next message');
      await sleep(2500); // past a lease: nothing comes back
      letters = await broker.deadLetters.list({ topic: 'nb.t' });
      assertFarNotBeforeLetter(letters, far.id);
      assert.deepEqual(got, ['next']);
      assert.ok(!logs.some((l) => /PRECONDITION_FAILED|could not put back/.test(l)), logs.join('\n'));
      await consumer.close();
    } finally {
      await broker.close();
    }
  });
});
