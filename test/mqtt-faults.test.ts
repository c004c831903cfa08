/**
 * The MQTT broker under faults from the wire and the network, against the machine's Mosquitto
 * (through a proxy the test cuts or holds): user properties another client set, a reconnect while
 * a handler outlives its lease, the dead-letter store and `close()` on a connection that is down or
 * not answering. Each broker has its own prefix; sessions and letters are deleted at the end.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt from 'mqtt';
import {
  createMqttBroker,
  type MqttBroker,
  type MqttBrokerOptions,
} from '../src/adapters/mqtt/mqtt-broker.ts';
import { topicOf } from '../src/adapters/mqtt/names.ts';
import { createEnvelope, ParleyError } from '../src/index.ts';
import { BROKERS, cuttableProxy, needBroker } from './brokers.ts';
import { waitFor } from './helpers.ts';

const skip = await needBroker('mqtt');
let n = 0;
const made: MqttBroker[] = [];
const proxies: { close(): Promise<void> }[] = [];

async function broker(options: Partial<MqttBrokerOptions> = {}): Promise<MqttBroker> {
  const b = await createMqttBroker({
    url: BROKERS.mqtt.url,
    prefix: `ptest${process.pid}f${++n}`,
    sessionExpirySeconds: 60,
    log: () => {},
    ...options,
  });
  made.push(b);
  return b;
}

async function proxy() {
  const p = await cuttableProxy(BROKERS.mqtt.port);
  proxies.push(p);
  return p;
}

after(async () => {
  for (const b of made) {
    await b.close();
    await b.destroyAll().catch(() => undefined);
  }
  for (const p of proxies) await p.close();
});

const env = (type: string, data: unknown) => createEnvelope({ source: '/t', type, data });

/** The promise's outcome as it is now, updated when it settles. */
function outcome(p: Promise<unknown>): { settled: boolean; error?: unknown } {
  const o: { settled: boolean; error?: unknown } = { settled: false };
  p.then(
    () => Object.assign(o, { settled: true }),
    (error: unknown) => Object.assign(o, { settled: true, error }),
  );
  return o;
}

/** Real turns of the event loop (setImmediate is not faked) for writes and callbacks to run. */
const turns = async (k = 3) => {
  for (let i = 0; i < k; i++) await new Promise((resolve) => setImmediate(resolve));
};

describe('mqtt broker: user properties from other clients', { skip }, () => {
  it('a parley-attempt that is not a count reads as 0: the attempt is 1 and the dead letter readable', async () => {
    const b = await broker();
    const attempts: unknown[] = [];
    await b.subscribe({ topic: 'att.t', group: 'g', maxAttempts: 3 }, async (d) => {
      attempts.push(d.attempt);
      throw new ParleyError('FAILED_PRECONDITION', 'no', { retryable: false });
    });
    const odd = ['Infinity', '1e400', '2.5', '-3', 'x', '99999999999999999999'];
    const raw = await mqtt.connectAsync(BROKERS.mqtt.url, { protocolVersion: 5 });
    try {
      for (const value of odd)
        await raw.publishAsync(topicOf(b.prefix, 'att.t'), JSON.stringify(env('att.t', value)), {
          qos: 1,
          properties: { userProperties: { 'parley-attempt': value } },
        });
    } finally {
      await raw.endAsync();
    }
    await waitFor(() => attempts.length === odd.length, 5000, 'every message handled');
    // Before: Infinity, Infinity, 3.5, 1, 1, 100000000000000000001.
    assert.deepEqual(attempts, [1, 1, 1, 1, 1, 1]);
    let letters = await b.deadLetters.list();
    for (let i = 0; i < 50 && letters.length < odd.length; i++) {
      await sleep(50);
      letters = await b.deadLetters.list();
    }
    // Before, the first two letters held `attempts: null` and read back as DATA_LOSS, topic and group lost.
    assert.deepEqual(
      letters.map((l) => [l.topic, l.group, l.code, l.attempts]).sort(),
      odd.map(() => ['att.t', 'g', 'FAILED_PRECONDITION', 1]),
    );
    assert.deepEqual(letters.map((l) => l.envelope.data).sort(), [...odd].sort());
  });
});

describe('mqtt broker: a reconnect while a handler outlives its lease', { skip }, () => {
  it('the slot the late handler held is free again after the reconnect: later messages are handled', async () => {
    const p = await proxy();
    const publisher = await broker();
    const { prefix } = publisher;
    const b = await broker({ url: `mqtt://127.0.0.1:${p.port}`, prefix });
    const got: string[] = [];
    let release = () => {};
    const slow = new Promise<void>((resolve) => (release = resolve));
    await b.subscribe({ topic: 'orph.t', group: 'g', maxInFlight: 1, lease: 300 }, async (d) => {
      got.push(`${d.envelope.data}#${d.attempt}`);
      if (d.envelope.data === 'slow' && d.attempt === 1) await slow;
    });
    await publisher.publish(env('orph.t', 'slow'));
    await waitFor(() => got.length === 1, 5000, 'the slow one');
    await sleep(600); // its lease ended: handed to the group again, its handler still running
    p.cut();
    await sleep(800); // reconnected: the old connection's deliveries are the server's again
    release(); // the late handler ends on a connection that is gone
    await publisher.publish(env('orph.t', 'after'));
    // Before, the late handler's slot was never given back: with maxInFlight 1 every later
    // message was passed on to the group's topic every 100 ms, for ever, and none was handled.
    await waitFor(() => got.includes('after#1'), 5000, `'after' handled (got ${got})`);
    await waitFor(() => got.includes('slow#2'), 5000, `the handed-over copy handled (got ${got})`);
  });
});

describe('mqtt broker: dead letters and close on a connection that is down or not answering', {
  skip,
}, () => {
  it('reading the letters fails with UNAVAILABLE at its deadline when the server does not answer (fake clock)', async (t) => {
    const p = await proxy();
    const b = await broker({ url: `mqtt://127.0.0.1:${p.port}` });
    assert.deepEqual(await b.deadLetters.list(), []); // answered before the hold
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() });
    try {
      p.hold();
      const listed = outcome(b.deadLetters.list());
      await turns();
      t.mock.timers.tick(9_999);
      await turns();
      assert.equal(listed.settled, false, 'not before its deadline');
      t.mock.timers.tick(1);
      await turns();
      // Before: the SUBACK never came, and the snapshot waited for ever.
      assert.equal(listed.settled, true, 'settled at its deadline');
      assert.equal((listed.error as ParleyError | undefined)?.code, 'UNAVAILABLE');
      assert.match(String((listed.error as Error).message), /reading the dead letters timed out/);
    } finally {
      t.mock.timers.reset();
      p.cut();
    }
  });

  it('a read that fails early leaves no timer to fire later with nobody waiting (fake clock)', async (t) => {
    const p = await proxy();
    const b = await broker({ url: `mqtt://127.0.0.1:${p.port}` });
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() });
    try {
      await p.close(); // the connection drops, and reconnecting fails
      const listed = outcome(b.deadLetters.list());
      for (let i = 0; i < 100 && !listed.settled; i++) await turns(1);
      assert.equal(listed.settled, true);
      assert.equal((listed.error as ParleyError | undefined)?.code, 'UNAVAILABLE');
      t.mock.timers.tick(10_000);
      await turns();
      await sleep(0);
      // Before: the snapshot's timer fired here and rejected a promise nobody awaited any more,
      // an unhandled rejection (which ends a Node process).
      assert.deepEqual(unhandled, []);
    } finally {
      t.mock.timers.reset();
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('close() ends at once on a lost connection and fails the publishes still waiting', async () => {
    const p = await proxy();
    const logs: string[] = [];
    const b = await broker({
      url: `mqtt://127.0.0.1:${p.port}`,
      publishTimeoutMs: 30_000,
      log: (m) => void logs.push(m),
    });
    await b.subscribe({ topic: 'close.t', group: 'g' }, async () => {});
    await b.publish(env('close.t', 1));
    await p.close();
    await waitFor(
      () => logs.filter((l) => l.includes('lost the connection')).length === 2,
      5000,
      'both down',
    );
    const waiting = outcome(b.publish(env('close.t', 2)));
    const started = Date.now();
    await b.close();
    // Before: close() waited 2 s on an unref'd timer (in a process with nothing else to wait
    // for, it never resolved), and the publish waited for its 30 s deadline.
    assert.ok(Date.now() - started < 1000, `close took ${Date.now() - started} ms`);
    await turns();
    assert.equal(waiting.settled, true, 'the waiting publish is settled by close()');
    assert.equal((waiting.error as ParleyError | undefined)?.code, 'UNAVAILABLE');
    assert.equal((waiting.error as ParleyError).retryable, true);
  });

  it('close() on a connection that does not answer drops it within its bound and fails the waiting publishes', async () => {
    const p = await proxy();
    const b = await broker({ url: `mqtt://127.0.0.1:${p.port}`, publishTimeoutMs: 30_000 });
    await b.publish(env('hold.t', 1));
    p.hold();
    const waiting = outcome(b.publish(env('hold.t', 2)));
    await turns();
    const started = Date.now();
    await b.close();
    const took = Date.now() - started;
    assert.ok(took >= 1900 && took < 3000, `close took ${took} ms`);
    await turns();
    assert.equal(waiting.settled, true, 'the waiting publish is settled by close()');
    assert.equal((waiting.error as ParleyError | undefined)?.code, 'UNAVAILABLE');
  });
});
