/**
 * Embedded-broker specifics: retention, durability across reopen, URLs.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  BrokerRegistry,
  createEmbeddedBroker,
  createEnvelope,
  createFakeClock,
  ParleyError,
} from '../src/index.ts';
import { tempDir } from './helpers.ts';

const dir = tempDir('embedded');

const env = (type: string, data: unknown) => createEnvelope({ source: '/t', type, data });

describe('embedded broker', () => {
  it('retention removes consumed entries past their age, never pending ones', async () => {
    const clock = createFakeClock();
    const broker = createEmbeddedBroker({
      path: ':memory:',
      clock,
      retention: { maxAge: 60_000, interval: 3_600_000 },
    });
    let release: () => void = () => undefined;
    const handled: number[] = [];
    const c = await broker.subscribe({ topic: 'r.t', group: 'g', maxInFlight: 1 }, async (d) => {
      if (d.envelope.data === 1) await new Promise<void>((r) => (release = r));
      handled.push(d.envelope.data as number);
    });
    await broker.publish(env('r.t', 0));
    await broker.publish(env('r.t', 1));
    await broker.publish(env('r.t', 2));
    for (let i = 0; i < 20 && handled.length < 1; i++) await clock.tick(10);
    await clock.tick(61_000);
    // 0 is consumed and old; 1 is held by its consumer; 2 waits behind it in the log.
    assert.equal(broker.compact(), 1);
    assert.equal(broker.stats().messages, 2);
    release();
    for (let i = 0; i < 50 && handled.length < 3; i++) await clock.tick(10);
    assert.deepEqual(handled, [0, 1, 2]);
    await clock.tick(61_000);
    assert.equal(broker.compact(), 2);
    assert.equal(broker.stats().messages, 0);
    // A group that starts from the beginning now finds only what is retained (nothing).
    const late: unknown[] = [];
    await broker.subscribe(
      { topic: 'r.t', group: 'late', startFrom: 'beginning' },
      async (d) => void late.push(d.envelope.data),
    );
    await broker.publish(env('r.t', 3));
    for (let i = 0; i < 50 && late.length < 1; i++) await clock.tick(10);
    assert.deepEqual(late, [3]);
    await c.close();
    await broker.close();
  });

  it('a history reader behind what retention removed is told it has a gap; one ahead of it is not', async () => {
    const clock = createFakeClock();
    const broker = createEmbeddedBroker({
      path: ':memory:',
      clock,
      retention: { maxAge: 60_000, interval: 3_600_000 },
    });
    const start = await broker.history.latest('h.t');
    assert.equal(start, '0');
    await broker.publish(env('h.t', 0));
    await broker.publish(env('h.t', 1));
    const read = await broker.history.read('h.t', start);
    const [first, second] = read.entries.map((e) => e.position);
    await clock.tick(61_000);
    await broker.publish(env('h.t', 2));
    // No group reads the topic: the two old entries go by age, the new one stays.
    assert.equal(broker.compact(), 2);
    const behind = await broker.history.read('h.t', start);
    assert.equal(behind.gap, true, 'entries 0 and 1 are gone');
    assert.deepEqual(
      behind.entries.map((e) => e.envelope.data),
      [2],
    );
    assert.equal((await broker.history.read('h.t', first ?? '')).gap, true, 'entry 1 is gone');
    const caughtUp = await broker.history.read('h.t', second ?? '');
    assert.equal(caughtUp.gap, false, 'nothing after entry 1 was removed');
    assert.deepEqual(
      caughtUp.entries.map((e) => e.envelope.data),
      [2],
    );
    assert.equal(await broker.history.latest('h.t'), caughtUp.next);
    await broker.close();
  });

  it('what was confirmed is there after the broker is closed and opened again', async () => {
    const path = dir.file('reopen.db');
    const first = createEmbeddedBroker({ path, durability: 'power' });
    for (let i = 0; i < 100; i++) await first.publish(env('re.open', i));
    await first.close();
    const second = createEmbeddedBroker({ path });
    const got: number[] = [];
    await second.subscribe(
      { topic: 're.open', group: 'g', startFrom: 'beginning' },
      async (d) => void got.push(d.envelope.data as number),
    );
    for (let i = 0; i < 200 && got.length < 100; i++) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(got, [...Array(100).keys()]);
    await second.close();
  });

  it('opens by URL; an unknown scheme is INVALID_ARGUMENT naming the known ones', async () => {
    const registry = new BrokerRegistry();
    const broker = await registry.open(`embedded:${dir.file('url.db')}`);
    assert.equal((await broker.publish(env('u.rl', 1))).duplicate, false);
    await broker.close();
    await assert.rejects(registry.open('carrier-pigeon://coop'), (e: unknown) => {
      return e instanceof ParleyError && e.code === 'INVALID_ARGUMENT' && /embedded:/.test(e.message);
    });
  });
});
