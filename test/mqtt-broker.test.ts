/**
 * The MQTT broker passes the broker conformance suite against the machine's Mosquitto (real
 * time: `advance` waits), less what MQTT cannot do (skipped with the reason), and the tests
 * below pin what is MQTT's own: sessions that outlive a crash, and what the server does when one
 * expires. Every broker of the run has its own prefix; its sessions and retained dead letters
 * are deleted at the end.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt from 'mqtt';
import { connectMqtt } from '../src/adapters/mqtt/connect.ts';
import { createMqttBroker, MqttBroker, type MqttBrokerOptions } from '../src/adapters/mqtt/mqtt-broker.ts';
import { deadLetterTopic, Publisher, publishPacketSize, topicOf } from '../src/adapters/mqtt/names.ts';
import { LETTER_ROOM } from '../src/broker/check.ts';
import { BrokerRegistry } from '../src/broker/from-url.ts';
import { MAX_LETTER_MESSAGE } from '../src/broker/outcome.ts';
import { createEnvelope, ParleyError, systemClock } from '../src/index.ts';
import { BROKERS, cuttableProxy, needBroker } from './brokers.ts';
import { brokerConformance } from './conformance/broker.ts';
import { waitFor } from './helpers.ts';
import {
  cleanupPrivateServers,
  MOSQUITTO,
  needBinary,
  type PrivateServer,
  privateMosquitto,
} from './private-server.ts';

const skip = await needBroker('mqtt');
let n = 0;
const made: MqttBroker[] = [];

async function broker(options: Partial<MqttBrokerOptions> = {}): Promise<MqttBroker> {
  const b = await createMqttBroker({
    url: BROKERS.mqtt.url,
    prefix: `ptest${process.pid}m${++n}`,
    sessionExpirySeconds: 60,
    log: () => {},
    ...options,
  });
  made.push(b);
  return b;
}

after(async () => {
  for (const b of made) {
    await b.close();
    await b.destroyAll();
  }
});

if (skip === false) {
  brokerConformance({
    name: 'mqtt',
    noHistory: "MQTT keeps messages only in the subscribers' sessions: there is no log to read",
    clock: systemClock,
    create: () => broker(),
    advance: (ms) => sleep(ms),
    inject: async (b, topic, body) => {
      const raw = await mqtt.connectAsync(BROKERS.mqtt.url, { protocolVersion: 5 });
      try {
        await raw.publishAsync(topicOf((b as MqttBroker).prefix, topic), body, { qos: 1 });
      } finally {
        await raw.endAsync();
      }
    },
    injectLetter: async (b, body) => {
      const raw = await mqtt.connectAsync(BROKERS.mqtt.url, { protocolVersion: 5 });
      try {
        const id = 1 + Math.floor(Math.random() * 2 ** 40);
        await raw.publishAsync(deadLetterTopic((b as MqttBroker).prefix, id), body, { qos: 1, retain: true });
      } finally {
        await raw.endAsync();
      }
    },
    skip: {
      'a new group starts from now, or from the beginning when asked':
        'MQTT keeps no history: a shared subscription gets only what is published after it exists (retained messages keep one per topic, not a log)',
    },
  });
} else {
  it('broker conformance: mqtt', { skip }, () => {});
}

const env = (type: string, data: unknown) => createEnvelope({ source: '/t', type, data });

/** How many dead letters of `b` there are, once it reaches `count` (polls; fails after 5 s). */
async function untilLetters(b: MqttBroker, topic: string | undefined, count: number): Promise<void> {
  const until = Date.now() + 5000;
  for (;;) {
    const got = (await b.deadLetters.list(topic === undefined ? {} : { topic })).length;
    if (got === count) return;
    if (Date.now() > until) assert.fail(`${got} dead letters, not ${count}`);
    await sleep(50);
  }
}

describe('mqtt broker: sessions', { skip }, () => {
  it('a crashed member holding messages gets them again when its session is taken over', async () => {
    const first = await broker({ member: 'm1' });
    const { prefix } = first;
    const held: string[] = [];
    const holder = await first.subscribe({ topic: 'crash.t', group: 'g' }, async (d) => {
      held.push(String(d.envelope.data));
      await new Promise<void>(() => {}); // never settles: the process dies holding it
    });
    await first.publish(env('crash.t', 'a'));
    await first.publish(env('crash.t', 'b'));
    await waitFor(() => held.length === 2, 5000, 'both held');
    holder.crash();
    // The same member name in another "process": the server resumes the session and sends again.
    const again = await broker({ prefix, member: 'm1' });
    const got: string[] = [];
    await again.subscribe({ topic: 'crash.t', group: 'g' }, async (d) => {
      got.push(`${d.envelope.data}#${d.attempt}`);
    });
    await waitFor(() => got.length === 2, 5000, 'both sent again');
    assert.deepEqual([...got].sort(), ['a#1', 'b#1'], 'attempts start again in the new process');
  });

  it('when a crashed member’s session expires, Mosquitto drops what it held and what queued for it', async () => {
    const other = await broker({ member: 'other', sessionExpirySeconds: 30 });
    const { prefix } = other;
    const gone = await broker({ prefix, member: 'gone', sessionExpirySeconds: 1 });
    const held: string[] = [];
    const crashed = await gone.subscribe({ topic: 'expire.t', group: 'g', maxInFlight: 1 }, async (d) => {
      held.push(String(d.envelope.data));
      await new Promise<void>(() => {});
    });
    const got: string[] = [];
    await other.subscribe(
      { topic: 'expire.t', group: 'g' },
      async (d) => void got.push(String(d.envelope.data)),
    );
    for (let i = 0; i < 6; i++) await other.publish(env('expire.t', i));
    await waitFor(() => held.length === 1 && got.length === 3, 5000, 'round robin: three each');
    crashed.crash();
    await sleep(2500); // past the session's expiry
    await other.publish(env('expire.t', 'after'));
    await waitFor(() => got.includes('after'), 5000, 'the live member');
    await sleep(300);
    // Two were queued and one was held by the member that expired: none reached the live one.
    assert.equal(got.length, 4, `the live member got only its share: ${got}`);
    // And a member coming back under that name finds no session.
    const back = await broker({ prefix, member: 'gone' });
    const late: string[] = [];
    await back.subscribe(
      { topic: 'expire.t', group: 'g' },
      async (d) => void late.push(String(d.envelope.data)),
    );
    await sleep(500);
    assert.deepEqual(late, []);
  });
});

describe('mqtt broker: foreign input and dead letters', { skip }, () => {
  it('a malformed payload from another client goes to dead-letter with INVALID_ARGUMENT; later ones flow', async () => {
    const b = await broker();
    const got: unknown[] = [];
    await b.subscribe({ topic: 'bad.t', group: 'g' }, async (d) => void got.push(d.envelope.data));
    const raw = await mqtt.connectAsync(BROKERS.mqtt.url, { protocolVersion: 5 });
    try {
      await raw.publishAsync(`${b.prefix}/t/bad.t`, 'not json {', { qos: 1 });
      await raw.publishAsync(`${b.prefix}/t/bad.t`, JSON.stringify({ hello: 1 }), { qos: 1 });
    } finally {
      await raw.endAsync();
    }
    await b.publish(env('bad.t', 'ok'));
    await untilLetters(b, 'bad.t', 2);
    await waitFor(() => got.length === 1, 5000, 'the good one');
    assert.deepEqual(got, ['ok']);
    const letters = await b.deadLetters.list({ topic: 'bad.t' });
    assert.deepEqual(
      letters.map((l) => [l.code, l.attempts]),
      [
        ['INVALID_ARGUMENT', 1],
        ['INVALID_ARGUMENT', 1],
      ],
    );
    // Retained: another instance (another process) sees the same letters.
    const reader = await broker({ prefix: b.prefix });
    assert.deepEqual(
      (await reader.deadLetters.list({ topic: 'bad.t' })).map((l) => l.id).sort(),
      letters.map((l) => l.id).sort(),
    );
  });

  it('what another client publishes at QoS 0 is handled or dead-lettered like the rest, not dropped', async () => {
    const b = await broker();
    const got: unknown[] = [];
    let failures = 0;
    await b.subscribe({ topic: 'q0.t', group: 'g', backoff: { initial: 20, max: 50 } }, async (d) => {
      // The first delivery of 'retried' fails: its retry comes back though QoS 0 keeps nothing.
      if (d.envelope.data === 'retried' && failures++ === 0) throw new Error('once');
      got.push(d.envelope.data);
    });
    const raw = await mqtt.connectAsync(BROKERS.mqtt.url, { protocolVersion: 5 });
    try {
      for (const data of ['plain', 'retried'])
        await raw.publishAsync(`${b.prefix}/t/q0.t`, JSON.stringify(env('q0.t', data)), { qos: 0 });
      await raw.publishAsync(`${b.prefix}/t/q0.t`, 'not json at QoS 0', { qos: 0 });
    } finally {
      await raw.endAsync();
    }
    await untilLetters(b, 'q0.t', 1);
    await waitFor(() => got.length === 2, 5000, 'both QoS 0 envelopes');
    assert.deepEqual([...got].sort(), ['plain', 'retried']);
    assert.equal(failures, 2);
    const letters = await b.deadLetters.list({ topic: 'q0.t' });
    assert.deepEqual(
      letters.map((l) => l.code),
      ['INVALID_ARGUMENT'],
    );
  });

  it('a replay to a group no session subscribes to fails and keeps the letter', async () => {
    const b = await broker();
    let fail = true;
    const c = await b.subscribe({ topic: 'orphan.t', group: 'g', maxAttempts: 1 }, async () => {
      if (fail) throw new ParleyError('FAILED_PRECONDITION', 'no', { retryable: false });
    });
    await b.publish(env('orphan.t', 1));
    await untilLetters(b, undefined, 1);
    await c.close();
    await b.destroySessions();
    fail = false;
    await assert.rejects(b.deadLetters.replay(), { code: 'FAILED_PRECONDITION' });
    assert.equal((await b.deadLetters.list()).length, 1);
    assert.equal(await b.deadLetters.purge(), 1);
  });
});

describe('mqtt broker: by URL', { skip }, () => {
  it('PARLEY_BROKER=mqtt://… opens it, with ?prefix= and ?member=', async () => {
    const prefix = `ptest${process.pid}url`;
    const b = await new BrokerRegistry().open(`${BROKERS.mqtt.url}?prefix=${prefix}&member=u1`);
    assert.ok(b instanceof MqttBroker);
    made.push(b);
    assert.equal(b.prefix, prefix);
    assert.equal(b.member, 'u1');
  });
});

describe('mqtt broker: publish timeout', { skip }, () => {
  it('a publish whose PUBACK never comes fails with UNAVAILABLE at its own deadline (fake clock)', async (t) => {
    // The broker's answers stop at the proxy; what it publishes still reaches the server.
    const proxy = await cuttableProxy(BROKERS.mqtt.port);
    const b = await createMqttBroker({
      url: `mqtt://127.0.0.1:${proxy.port}`,
      prefix: `ptest${process.pid}timeout`,
      publishTimeoutMs: 5_000,
      log: () => {},
    });
    try {
      await b.publish(env('t.a', 1)); // answered: the path works before the hold
      t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() });
      proxy.hold();
      const outcome = (p: Promise<unknown>) => {
        const o: { error?: unknown; settled: boolean } = { settled: false };
        p.then(
          () => Object.assign(o, { settled: true }),
          (error: unknown) => Object.assign(o, { settled: true, error }),
        );
        return o;
      };
      // Real turns of the event loop (setImmediate is not faked) for writes and callbacks to run.
      const turns = () => new Promise((resolve) => setImmediate(resolve));
      const first = outcome(b.publish(env('t.a', 2)));
      await turns();
      t.mock.timers.tick(3_000);
      const second = outcome(b.publish(env('t.a', 3)));
      await turns();
      t.mock.timers.tick(1_999);
      await turns();
      assert.equal(first.settled, false, 'not before its deadline');
      t.mock.timers.tick(1);
      await turns();
      assert.equal(first.settled, true);
      assert.ok(first.error instanceof ParleyError);
      assert.equal(first.error.code, 'UNAVAILABLE');
      assert.equal(first.error.retryable, true);
      assert.match(first.error.message, /no PUBACK for .*t\.a within 5000 ms/);
      assert.equal(second.settled, false, 'the second waits for its own deadline, 3 s later');
      t.mock.timers.tick(2_999);
      await turns();
      assert.equal(second.settled, false);
      t.mock.timers.tick(1);
      await turns();
      assert.equal((second.error as ParleyError | undefined)?.code, 'UNAVAILABLE');
    } finally {
      t.mock.timers.reset();
      proxy.cut();
      await b.close();
      await proxy.close();
    }
  });
});

describe('mqtt broker: the server’s maximum packet size', {
  skip: skip || needBinary(MOSQUITTO, '-h'),
}, () => {
  const LIMIT = 16_384;
  let server: PrivateServer | undefined;
  after(async () => {
    await server?.dispose();
    cleanupPrivateServers();
  });

  it('a publish with no room for its dead letter under it is refused; one with room fails into a letter; the connection stays', async () => {
    server = await privateMosquitto('mqtt-small', () => ['persistence false', `max_packet_size ${LIMIT}`]);
    await server.start();
    const url = `mqtt://127.0.0.1:${server.port}`;
    const b = await createMqttBroker({ url, prefix: `ptest${process.pid}size`, log: () => {} });
    const conn = await connectMqtt(url, () => {});
    try {
      const got: unknown[] = [];
      await b.subscribe({ topic: 'big.t', group: 'g' }, async (d) => void got.push(d.envelope.data));
      // Before: sent, it made the server end the connection (reason 149); mqtt.js sent it again on
      // each reconnect, and no publish got through at all.
      const big = b.publish(env('big.t', 'x'.repeat(LIMIT)));
      await assert.rejects(big, (e: unknown) => {
        assert.ok(e instanceof ParleyError);
        assert.equal(e.code, 'INVALID_ARGUMENT');
        assert.equal(e.retryable, false);
        assert.match(
          e.message,
          /of \d+ bytes is over the largest this broker takes, 8192 \(the server's maximum packet size 16384 less 8192/,
        );
        return true;
      });
      await b.publish(env('big.t', 'small'));
      await waitFor(() => got.length === 1, 5000, 'the small one');
      assert.deepEqual(got, ['small']);

      // A message just within the room: its dead letter fits, with the failure's text cut.
      const runs: number[] = [];
      await b.subscribe({ topic: 'dead.t', group: 'g', maxAttempts: 1 }, async (d) => {
        runs.push(String(d.envelope.data).length);
        throw new ParleyError('FAILED_PRECONDITION', 'e'.repeat(5000), { retryable: false });
      });
      const props = {
        userProperties: { 'parley-id': randomUUID() },
        contentType: 'application/json',
      };
      const empty = publishPacketSize(`${b.prefix}/t/dead.t`, JSON.stringify(env('dead.t', '')), props);
      // Both Remaining Lengths take two bytes: the packet grows by the data's length.
      const data = 'x'.repeat(LIMIT - LETTER_ROOM - empty);
      await b.publish(env('dead.t', data));
      await assert.rejects(b.publish(env('dead.t', `${data}x`)), { code: 'INVALID_ARGUMENT' });
      await untilLetters(b, 'dead.t', 1);
      const [letter] = await b.deadLetters.list({ topic: 'dead.t' });
      assert.deepEqual(runs, [data.length]);
      assert.equal(letter?.message, `${'e'.repeat(MAX_LETTER_MESSAGE)}… (5000 characters)`);
      assert.equal(letter?.envelope.data, data);

      // The Publisher counts a packet exactly: one of LIMIT bytes is taken, one byte more refused.
      const publisher = new Publisher(conn, 5_000);
      const topic = `ptest${process.pid}size/exact`;
      const options = { userProperties: { 'parley-id': 'x' }, contentType: 'application/json' };
      const overhead = publishPacketSize(topic, '', options);
      // The Remaining Length takes one byte more than in the empty packet.
      const at = 'y'.repeat(LIMIT - overhead - 1);
      assert.equal(publishPacketSize(topic, at, options), LIMIT);
      assert.equal(await publisher.send(topic, at, options), 16, 'taken (no subscriber: reason 16)');
      await assert.rejects(publisher.send(topic, `${at}y`, options), /over the server's maximum packet size/);
      assert.equal(await publisher.send(topic, 'z', options), 16, 'the connection is still up');
    } finally {
      await conn.client.endAsync(true);
      await b.close();
      await b.destroyAll();
    }
  });
});
