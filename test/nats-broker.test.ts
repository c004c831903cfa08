/**
 * The JetStream broker passes the broker conformance suite against the machine's NATS server
 * (real time: `advance` waits). Every broker of the run has its own prefix; their streams are
 * deleted at the end.
 */
import assert from 'node:assert/strict';
import { after, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { JetStreamClient } from '@nats-io/jetstream';
import { createNatsBroker, type NatsBroker } from '../src/adapters/nats/nats-broker.ts';
import { createEnvelope, ParleyError, systemClock } from '../src/index.ts';
import { BROKERS, needBroker } from './brokers.ts';
import { brokerConformance } from './conformance/broker.ts';
import { foreignLetterRoomCase, letterRoomCase } from './letter-room.ts';

const skip = await needBroker('nats');
let n = 0;
const made: string[] = [];

if (skip === false) {
  /** A broker with a prefix of its own (its streams are deleted at the end). */
  const fresh = async (options: { maxMessages?: number; historyConsumerFrom?: number } = {}) => {
    const prefix = `ptest${process.pid}n${++n}`;
    made.push(prefix);
    return createNatsBroker({ url: BROKERS.nats.url, prefix, storage: 'memory', log: () => {}, ...options });
  };
  brokerConformance({
    name: 'nats jetstream',
    clock: systemClock,
    create: () => fresh(),
    advance: (ms) => sleep(ms),
    inject: async (broker, topic, body) => {
      const b = broker as NatsBroker;
      await (b as unknown as { js: JetStreamClient }).js.publish(b.subjectOf(topic), body);
    },
    injectLetter: async (broker, body) => {
      const b = broker as NatsBroker;
      await (b as unknown as { js: JetStreamClient }).js.publish(`${b.prefix}.dlq.foreign.writer`, body);
    },
    skip: {
      'extendLease keeps a delivery from going to another consumer while its own works on it':
        'nats-server 2.9 sometimes hands a message whose lease is being extended (`working()` every ' +
        '400 ms, ack_wait 1 s) to another pull request of the same consumer, as a first delivery ' +
        '(delivery count 1), when pull requests expire around it (seen here in 4 of 42 runs of ' +
        'this file; reported upstream against 2.9 for competing pull clients); at least once holds, ' +
        'the lease does not',
    },
  });
  // Every history page read through an ordered consumer, however short (the other harness reads
  // the cases' short pages by message-gets).
  brokerConformance({
    name: 'nats jetstream, history through consumers',
    clock: systemClock,
    create: () => fresh({ historyConsumerFrom: 0 }),
    advance: (ms) => sleep(ms),
    only: (name) => name.startsWith('history:'),
  });
  const event = (data: unknown) => createEnvelope({ source: '/t', type: 'history.t', data });

  for (const [how, historyConsumerFrom] of [
    ['by message-gets', undefined],
    ['through consumers', 0],
  ] as const) {
    it(`a history reader behind what the stream limits removed is told it has a gap; one ahead of it is not (${how})`, async () => {
      const b = await fresh({ maxMessages: 2, historyConsumerFrom });
      try {
        const start = await b.history.latest('history.t');
        for (let i = 0; i < 5; i++) await b.publish(event(i));
        const behind = await b.history.read('history.t', start);
        assert.equal(behind.gap, true);
        assert.deepEqual(
          behind.entries.map((e) => e.envelope.data),
          [3, 4],
        );
        // Far behind, in small pages: the first page starts at the first kept message, not past it.
        const small = await b.history.read('history.t', start, { limit: 1 });
        assert.equal(small.gap, true);
        assert.deepEqual(
          small.entries.map((e) => e.envelope.data),
          [3],
        );
        const ahead = await b.history.read('history.t', String(Number(behind.entries[0]?.position) - 1));
        assert.equal(ahead.gap, false);
        assert.deepEqual(
          ahead.entries.map((e) => e.envelope.data),
          [3, 4],
        );
      } finally {
        await b.close();
      }
    });

    it(`a dead letter replayed to its group is not a new event in the history (${how})`, async () => {
      const b = await fresh({ historyConsumerFrom });
      try {
        const c = await b.subscribe({ topic: 'history.t', group: 'g', maxAttempts: 1 }, async () => {
          throw new ParleyError('INVALID_ARGUMENT', 'no', { retryable: false });
        });
        const start = await b.history.latest('history.t');
        await b.publish(event('once'));
        for (let i = 0; i < 100 && (await b.deadLetters.list()).length === 0; i++) await sleep(20);
        await c.close();
        assert.equal(await b.deadLetters.replay(), 1);
        const read = await b.history.read('history.t', start);
        assert.deepEqual(
          read.entries.map((e) => e.envelope.data),
          ['once'],
        );
        assert.notEqual(read.next, read.entries[0]?.position, 'the read went past the replayed copy');
      } finally {
        await b.close();
      }
    });
  }

  /** The consumers on `topic`'s stream of `b`, as the server lists them to `to` (default `b`). */
  const consumersOn = async (b: NatsBroker, topic: string, to: NatsBroker = b) => {
    const names: string[] = [];
    for await (const c of to.manager().consumers.list(b.streamOf(topic))) names.push(c.name);
    return names;
  };

  /**
   * A fresh broker with `count` events on `history.t` (`start`: the position before them),
   * closed once `body` ends.
   */
  const withEvents = async (count: number, body: (b: NatsBroker, start: string) => Promise<void>) => {
    const b = await fresh();
    try {
      const start = await b.history.latest('history.t');
      for (let i = 0; i < count; i++) await b.publish(event(i));
      await body(b, start);
    } finally {
      await b.close();
    }
  };

  it('a long history read goes through one ordered consumer, kept between its pages and deleted at close', () =>
    withEvents(150, async (b, start) => {
      const seen: number[] = [];
      const positions: string[] = [];
      let at = start;
      for (let pages = 0; pages < 10; pages++) {
        const page = await b.history.read('history.t', at, { limit: 40 });
        if (page.entries.length === 0) break;
        for (const e of page.entries) {
          seen.push(e.envelope.data as number);
          positions.push(e.position);
        }
        assert.equal(page.next, page.entries.at(-1)?.position);
        assert.equal((await consumersOn(b, 'history.t')).length, 1, `one consumer after page ${pages + 1}`);
        at = page.next;
      }
      assert.deepEqual(
        seen,
        Array.from({ length: 150 }, (_, i) => i),
      );
      assert.deepEqual(
        positions.map(Number),
        Array.from({ length: 150 }, (_, i) => Number(start) + 1 + i),
      );
      // Events published after the reader had them all: the kept reader asks the server again.
      for (let i = 150; i < 155; i++) await b.publish(event(i));
      const later = await b.history.read('history.t', at, { limit: 40 });
      assert.deepEqual(
        later.entries.map((e) => e.envelope.data),
        [150, 151, 152, 153, 154],
      );
      assert.equal((await consumersOn(b, 'history.t')).length, 1);
      const other = await fresh();
      try {
        await b.close();
        // The same stream, seen from another connection: the reader's consumer is gone.
        assert.deepEqual(await consumersOn(b, 'history.t', other), []);
      } finally {
        await other.close();
      }
    }));

  it('a history reader left idle is deleted on the server', () =>
    withEvents(40, async (b, start) => {
      const page = await b.history.read('history.t', start);
      assert.equal(page.entries.length, 40);
      assert.equal((await consumersOn(b, 'history.t')).length, 1);
      // Idle for a second, then deleted: polled for at most 5 s of real time.
      for (let i = 0; i < 50 && (await consumersOn(b, 'history.t')).length > 0; i++) await sleep(100);
      assert.deepEqual(await consumersOn(b, 'history.t'), []);
    }));

  it('long history reads beyond the readers at work at once each read every event', () =>
    withEvents(100, async (b, start) => {
      const pages = await Promise.all(
        Array.from({ length: 12 }, () => b.history.read('history.t', start, { limit: 100 })),
      );
      for (const page of pages) {
        assert.deepEqual(
          page.entries.map((e) => e.envelope.data),
          Array.from({ length: 100 }, (_, i) => i),
        );
      }
      assert.ok((await consumersOn(b, 'history.t')).length <= 4, 'at most four readers are kept');
    }));

  after(async () => {
    for (const prefix of made) {
      const b: NatsBroker = await createNatsBroker({ url: BROKERS.nats.url, prefix });
      await b.destroyAll();
      await b.close();
    }
  });

  it('a message too large for its dead letter is refused; one that fits fails into a dead letter, reason cut', async () => {
    const b = await fresh();
    try {
      await letterRoomCase(b, 'big.t', 1024 * 1024, 'max_payload'); // nats-server's default max_payload
    } finally {
      await b.close();
    }
  });

  it("another writer's body too large for a whole dead letter fails into one that keeps its first bytes, once", async () => {
    const b = await fresh();
    try {
      await foreignLetterRoomCase(b, 'bigforeign.t', 1024 * 1024, async (topic, body) => {
        await (b as unknown as { js: JetStreamClient }).js.publish(b.subjectOf(topic), body);
      });
    } finally {
      await b.close();
    }
  });
} else {
  it('broker conformance: nats jetstream', { skip }, () => {});
}
