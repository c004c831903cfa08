/**
 * The embedded broker under a hot key: while a key's first message is in flight, the key's later
 * messages wait in the log, not in the group's pending list, which every poll reads (until
 * 2026-12-03 they all moved into it, and a poll behind 100,000 of them blocked the event loop for
 * some 13 ms). Other keys flow meanwhile; the key's order, retention, replays and a reopen keep
 * working with the backlog in the log.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import {
  createEmbeddedBroker,
  createEnvelope,
  createFakeClock,
  type EmbeddedBroker,
  ParleyError,
} from '../src/index.ts';
import { createRandom } from '../src/transport/faults.ts';
import { deferred, tempDir, ticksUntil as until } from './helpers.ts';

const dir = tempDir('hot-key');

const env = (topic: string, k: string, n: number) =>
  createEnvelope({ source: '/t', type: topic, data: { k, n } });

async function publishAll(broker: EmbeddedBroker, topic: string, k: string, from: number, to: number) {
  const sent: Promise<unknown>[] = [];
  for (let n = from; n < to; n++) sent.push(broker.publish(env(topic, k, n), { key: k }));
  await Promise.all(sent);
}

/**
 * A consumer of `topic` (8 in flight) whose handler holds the hot key's first message until
 * `head` resolves, and records every other one it handles as `<key><n>`.
 */
async function heldHead(topic: string, seed: number) {
  const clock = createFakeClock();
  const broker = createEmbeddedBroker({ path: ':memory:', clock, random: createRandom(seed) });
  const head = deferred();
  const handled: string[] = [];
  const c = await broker.subscribe({ topic, group: 'g', maxInFlight: 8 }, async (d) => {
    const { k, n } = d.envelope.data as { k: string; n: number };
    if (k === 'hot' && n === 0) await head.promise;
    handled.push(`${k}${n}`);
  });
  return { clock, broker, head, handled, c };
}

describe('embedded broker: a hot key', () => {
  it("a hot key's backlog waits in the log: the pending list holds what is in flight, other keys flow, order holds", async () => {
    const topic = 'hot.key';
    const N = 1_000;
    const { clock, broker, head, handled, c } = await heldHead(topic, 1);
    await publishAll(broker, topic, 'hot', 0, N);
    for (let n = 0; n < 5; n++) await broker.publish(env(topic, `other${n}`, n), { key: `other${n}` });
    // The other keys come after the whole backlog in the log: once they are handled, the group's
    // cursor has passed every message of the hot key.
    await until(clock, () => handled.length === 5, 'the other keys, past the backlog');
    assert.deepEqual(handled, ['other00', 'other11', 'other22', 'other33', 'other44']);
    // Their acks commit in a later tick.
    await until(clock, () => broker.stats().pending <= 1, "the other keys' acks");
    // Every poll reads the group's pending rows (due ones, the next due time): they are the head
    // in flight, not the 999 behind it (before the change: 1,000).
    assert.equal(broker.stats().pending, 1, 'only the head is pending');
    assert.equal(broker.stats().messages, N + 5, 'the backlog is in the log');
    head.resolve();
    await until(clock, () => handled.length === N + 5, 'the backlog');
    assert.deepEqual(
      handled.slice(5),
      [...Array(N).keys()].map((n) => `hot${n}`),
      'the hot key in order',
    );
    // The last one's ack commits in a tick after its handler ran.
    await until(clock, () => broker.stats().pending === 0, 'the last ack');
    await c.close();
    await broker.close();
  });

  it('other keys behind a long backlog of a hot key come within a few polls, not one poll per batch of room', async () => {
    const topic = 'hot.catch-up';
    const { clock, broker, head, handled, c } = await heldHead(topic, 3);
    await broker.publish(env(topic, 'hot', 0), { key: 'hot' });
    await until(clock, () => broker.stats().pending === 1, 'the head in flight');
    await publishAll(broker, topic, 'hot', 1, 5_000);
    await broker.publish(env(topic, 'other', 0), { key: 'other' });
    // A poll reads up to 1,024 entries past the cursor: 5 polls of 50 ms. Until 2026-12-03 it read
    // `room` (7) a poll, and the other key came after some 714 polls, 36 s.
    await until(clock, () => handled.length === 1, 'the other key', 50);
    assert.deepEqual(handled, ['other0']);
    head.resolve();
    await until(clock, () => handled.length === 5_001, 'the backlog');
    assert.deepEqual(
      handled.slice(1),
      [...Array(5_000).keys()].map((n) => `hot${n}`),
      'the hot key in order',
    );
    await c.close();
    await broker.close();
  });

  it('a backlog partly read and partly not: the key goes on in order across the cursor', async () => {
    const clock = createFakeClock();
    const broker = createEmbeddedBroker({ path: ':memory:', clock, random: createRandom(2) });
    const topic = 'hot.partly';
    const gate = deferred();
    const handled: number[] = [];
    // Room for one more while the head is in flight: each poll reads one message past it.
    const c = await broker.subscribe({ topic, group: 'g', maxInFlight: 2 }, async (d) => {
      const { n } = d.envelope.data as { n: number };
      if (n === 0) await gate.promise;
      handled.push(n);
    });
    await publishAll(broker, topic, 'k', 0, 20);
    for (let i = 0; i < 5; i++) await clock.tick(50); // a few wait behind the head, the rest unread
    assert.deepEqual(handled, []);
    gate.resolve();
    await publishAll(broker, topic, 'k', 20, 30);
    await until(clock, () => handled.length === 30, 'all thirty');
    assert.deepEqual(handled, [...Array(30).keys()]);
    assert.equal(broker.stats().pending, 0);
    await c.close();
    await broker.close();
  });

  it('retention keeps what waits behind a hot key in the log, and removes it once handled', async () => {
    const clock = createFakeClock();
    const broker = createEmbeddedBroker({
      path: ':memory:',
      clock,
      retention: { maxAge: 60_000, interval: 3_600_000 },
    });
    const topic = 'hot.retained';
    const gate = deferred();
    const handled: string[] = [];
    // A lease longer than the wait below: the head is not delivered again meanwhile.
    const c = await broker.subscribe({ topic, group: 'g', maxInFlight: 4, lease: 120_000 }, async (d) => {
      const { k, n } = d.envelope.data as { k: string; n: number };
      if (k === 'hot' && n === 0) await gate.promise;
      handled.push(`${k}${n}`);
    });
    await broker.publish(env(topic, 'first', 0), { key: 'first' });
    await until(clock, () => handled.length === 1, 'the first message');
    await publishAll(broker, topic, 'hot', 0, 50);
    await broker.publish(env(topic, 'last', 0), { key: 'last' });
    await until(clock, () => handled.length === 2, 'the last message, past the backlog');
    await clock.tick(61_000);
    // The first and last are handled and old, but the last is above the head: only the first goes.
    assert.equal(broker.compact(), 1);
    assert.equal(broker.stats().messages, 51);
    gate.resolve();
    await until(clock, () => handled.length === 52, 'the backlog');
    assert.deepEqual(
      handled.slice(2),
      [...Array(50).keys()].map((n) => `hot${n}`),
    );
    await clock.tick(61_000);
    assert.equal(broker.compact(), 51);
    await c.close();
    await broker.close();
  });

  it('a dead letter replayed into a key with a backlog in the log takes its turn before it', async () => {
    const clock = createFakeClock();
    const broker = createEmbeddedBroker({ path: ':memory:', clock, random: createRandom(3) });
    const topic = 'hot.replay';
    const gate = deferred();
    let poisoned = true;
    const handled: number[] = [];
    const c = await broker.subscribe({ topic, group: 'g', maxInFlight: 4 }, async (d) => {
      const { n } = d.envelope.data as { n: number };
      if (n === 0 && poisoned) throw new ParleyError('INVALID_ARGUMENT', 'poison');
      if (n === 1) await gate.promise;
      handled.push(n);
    });
    await broker.publish(env(topic, 'k', 0), { key: 'k' });
    await until(clock, () => broker.stats().dead === 1, 'the dead letter');
    await publishAll(broker, topic, 'k', 1, 10);
    for (let i = 0; i < 20; i++) await clock.tick(50); // 1 in flight, 2..9 behind it
    poisoned = false;
    assert.equal(await broker.deadLetters.replay({ topic }), 1);
    gate.resolve();
    await until(clock, () => handled.length === 10, 'all ten');
    // The replayed 0 is the key's lowest waiting message: it goes right after 1, then the log's.
    assert.deepEqual(handled, [1, 0, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(broker.stats(), { messages: 10, pending: 0, dead: 0 });
    await c.close();
    await broker.close();
  });

  it('a file written before the change, its waiting messages in the pending list, drains in order', async () => {
    const path = dir.file('legacy.db');
    const clock = createFakeClock();
    const topic = 'hot.legacy';
    const broker = createEmbeddedBroker({ path, clock, random: createRandom(6) });
    await publishAll(broker, topic, 'k', 0, 10);
    // As the broker wrote it until 2026-12-03: the head leased (to a consumer gone since), the
    // other nine waiting in the pending list, the cursor past them all.
    const db = new Database(path);
    try {
      const seqs = db
        .prepare('SELECT seq FROM messages WHERE topic = ? ORDER BY seq')
        .pluck()
        .all(topic) as number[];
      db.prepare('INSERT INTO groups (grp, topic, cursor, created_at) VALUES (?, ?, ?, ?)').run(
        'g',
        topic,
        seqs.at(-1),
        clock.now(),
      );
      const insert = db.prepare(
        `INSERT INTO pending (grp, topic, seq, key, state, visible_at, attempts, lease_owner, lease_until)
         VALUES ('g', ?, ?, 'k', ?, ?, ?, ?, ?)`,
      );
      for (const [i, seq] of seqs.entries()) {
        if (i === 0) insert.run(topic, seq, 1, clock.now(), 1, 'gone', clock.now() + 1_000);
        else insert.run(topic, seq, 2, clock.now(), 0, null, null);
      }
    } finally {
      db.close();
    }
    const handled: number[] = [];
    const c = await broker.subscribe({ topic, group: 'g', maxInFlight: 4 }, async (d) => {
      handled.push((d.envelope.data as { n: number }).n);
    });
    await publishAll(broker, topic, 'k', 10, 15); // these wait in the log, behind the old ones
    await until(clock, () => handled.length === 15, 'all fifteen');
    assert.deepEqual(handled, [...Array(15).keys()]);
    assert.equal(broker.stats().pending, 0);
    await c.close();
    await broker.close();
  });

  it('a backlog waiting in the log is there after the broker is closed and opened again', async () => {
    const path = dir.file('backlog.db');
    const clock = createFakeClock();
    const topic = 'hot.reopen';
    const first = createEmbeddedBroker({ path, clock, random: createRandom(4) });
    const gate = deferred();
    const seen: number[] = [];
    await first.subscribe(
      { topic, group: 'g', maxInFlight: 4, backoff: { initial: 100, max: 100 } },
      async (d) => {
        const { n } = d.envelope.data as { n: number };
        seen.push(n);
        if (n === 0) await gate.promise;
        throw new ParleyError('UNAVAILABLE', 'not this process');
      },
    );
    await publishAll(first, topic, 'k', 0, 40);
    await until(clock, () => seen.length === 1, 'the head in flight');
    for (let i = 0; i < 30; i++) await clock.tick(50); // the cursor passes the backlog
    assert.deepEqual(seen, [0]);
    const closing = first.close();
    gate.resolve(); // the head fails: a retry, written as the broker closes
    await closing;

    const second = createEmbeddedBroker({ path, clock, random: createRandom(5) });
    const handled: number[] = [];
    const c = await second.subscribe({ topic, group: 'g', maxInFlight: 4 }, async (d) => {
      handled.push((d.envelope.data as { n: number }).n);
    });
    await until(clock, () => handled.length === 40, 'all forty');
    assert.deepEqual(handled, [...Array(40).keys()]);
    assert.equal(second.stats().pending, 0);
    await c.close();
    await second.close();
  });
});
