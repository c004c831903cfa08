/**
 * The embedded broker's polls under many rows that are not due yet (delayed messages, retries
 * waiting out their backoff): a poll finds the due rows and the next due time through the
 * `pending_ready` index, so what it reads does not grow with the rows that are not due (until
 * 2026-12-03 it read every pending row of the group: 26 ms a poll behind 100,000 delayed messages).
 * Leases that ended are looked for at most once a second, and when one this broker gave ends.
 * Due rows are leased earliest due first; a file written before the index gets it when opened.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { prepare } from '../src/broker/embedded/statements.ts';
import { createEmbeddedBroker, createEnvelope, createFakeClock, type EmbeddedBroker } from '../src/index.ts';
import { createRandom } from '../src/transport/faults.ts';
import { deferred, tempDir, ticksUntil as until } from './helpers.ts';

const dir = tempDir('due-index');

const env = (topic: string, n: number) => createEnvelope({ source: '/t', type: topic, data: { n } });

async function publishDelayed(broker: EmbeddedBroker, topic: string, count: number, delay: number) {
  const sent: Promise<unknown>[] = [];
  for (let n = 0; n < count; n++) sent.push(broker.publish(env(topic, n), { delay }));
  await Promise.all(sent);
}

/**
 * The plan of a poll's two reads of the pending list (lease, next due time), on the file at `path`
 * as the broker's own statements would run them, after ANALYZE (the planner knows the table).
 */
function pollPlans(path: string): { lease: string[]; nextDue: string[] } {
  const db = new Database(path);
  try {
    db.exec('ANALYZE');
    const s = prepare(db);
    const plan = (sql: string, params: object) =>
      (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(params) as { detail: string }[]).map((r) => r.detail);
    return {
      lease: plan(s.lease.source, { owner: 'o', until: 1, grp: 'g', topic: 't', now: 0, limit: 8 }),
      nextDue: plan(s.nextDue.source, { grp: 'g', topic: 't' }),
    };
  } finally {
    db.close();
  }
}

/** A plan reads pending through pending_ready, and nothing reads all of a group's pending rows. */
function assertDueIndexed(plan: string[], what: string): void {
  assert.ok(
    plan.some((d) => /^SEARCH pending USING (COVERING )?INDEX pending_ready \(grp=\? AND topic=\?/.test(d)),
    `${what} reads pending_ready: ${plan.join('; ')}`,
  );
  for (const d of plan) {
    assert.doesNotMatch(d, /^SCAN pending/, `${what} scans pending`);
    // The primary key with only the group and topic bound: every pending row of the group.
    assert.doesNotMatch(d, /USING PRIMARY KEY \(grp=\? AND topic=\?\)$/, `${what} walks the group's rows`);
  }
}

describe('embedded broker: rows that are not due', () => {
  it("a poll reads the due rows and the next due time from pending_ready, not the group's rows", async () => {
    const path = dir.file('delayed.db');
    const clock = createFakeClock();
    const broker = createEmbeddedBroker({ path, clock, random: createRandom(1) });
    const topic = 'due.delayed';
    const handled: number[] = [];
    const c = await broker.subscribe({ topic, group: 'g', maxInFlight: 16 }, async (d) => {
      handled.push((d.envelope.data as { n: number }).n);
    });
    const N = 500;
    await publishDelayed(broker, topic, N, 60_000);
    await until(clock, () => broker.stats().pending === N, 'the cursor past the delayed messages');
    // The look for leases that ended reads the group's rows: at most once a second, not every poll
    // (a poll every 50 ms here).
    // biome-ignore lint/suspicious/noExplicitAny: the test counts a private statement's runs
    const ended = (broker as any).store.s.leaseEnded;
    const all = ended.all.bind(ended);
    let looks = 0;
    ended.all = (...args: unknown[]) => {
      looks++;
      return all(...args);
    };
    await clock.tick(5_000);
    assert.ok(looks >= 4 && looks <= 6, `looked for ended leases ${looks} times in 5 s`);
    ended.all = all;
    const plans = pollPlans(path);
    assertDueIndexed(plans.lease, 'lease');
    assertDueIndexed(plans.nextDue, 'nextDue');
    // The consumer sleeps until the first of them is due, and then they all come.
    assert.deepEqual(handled, []);
    await clock.tick(60_000);
    await until(clock, () => handled.length === N, 'the delayed messages');
    assert.deepEqual(
      handled.sort((a, b) => a - b),
      [...Array(N).keys()],
    );
    assert.equal(broker.stats().pending, 0);
    await c.close();
    await broker.close();
  });

  it('due rows are leased earliest due first, not by their place in the log', async () => {
    const clock = createFakeClock();
    const broker = createEmbeddedBroker({ path: ':memory:', clock, random: createRandom(2) });
    const topic = 'due.order';
    const gate = deferred();
    const handled: string[] = [];
    const c = await broker.subscribe({ topic, group: 'g', maxInFlight: 2 }, async (d) => {
      const { n } = d.envelope.data as { n: string };
      handled.push(n);
      if (n === 'x' || n === 'y') await gate.promise;
    });
    const pub = (n: string, delay: number) =>
      broker.publish(createEnvelope({ source: '/t', type: topic, data: { n } }), { delay });
    await pub('x', 0);
    await until(clock, () => handled.length === 1, 'x in flight');
    // Room for one: the poll moves each into the pending list, not due yet.
    await pub('a', 1_000);
    await pub('b', 500);
    await pub('c', 800);
    await until(clock, () => broker.stats().pending === 4, 'a, b and c pending');
    await pub('y', 0); // no room left
    await until(clock, () => handled.length === 2, 'y in flight');
    await clock.tick(2_000); // a, b and c are all due now, with no room for them
    assert.deepEqual(handled, ['x', 'y']);
    gate.resolve();
    await until(clock, () => handled.length === 5, 'a, b and c');
    // Room for two: b and c came due first (by seq, until 2026-12-03, it was a and b).
    assert.deepEqual(handled, ['x', 'y', 'b', 'c', 'a']);
    await c.close();
    await broker.close();
  });

  it('a file written before the index gets it when opened, and its delayed messages come when due', async () => {
    const path = dir.file('legacy.db');
    const clock = createFakeClock();
    const topic = 'due.legacy';
    const first = createEmbeddedBroker({ path, clock, random: createRandom(3) });
    const c1 = await first.subscribe({ topic, group: 'g', maxInFlight: 8 }, async () => {
      assert.fail('nothing is due while the first broker runs');
    });
    await publishDelayed(first, topic, 50, 60_000);
    await until(clock, () => first.stats().pending === 50, 'the cursor past the delayed messages');
    await c1.close();
    await first.close();
    // As the broker left the file until 2026-12-03: no pending_ready; and as a build of that day
    // left it, with pending_due (ready and leased rows), which is dropped.
    const db = new Database(path);
    db.exec('DROP INDEX IF EXISTS pending_ready');
    db.exec('CREATE INDEX pending_due ON pending (grp, topic, visible_at)');
    db.close();

    const second = createEmbeddedBroker({ path, clock, random: createRandom(4) });
    const handled: number[] = [];
    const c2 = await second.subscribe({ topic, group: 'g', maxInFlight: 8 }, async (d) => {
      handled.push((d.envelope.data as { n: number }).n);
    });
    const check = new Database(path, { readonly: true });
    const index = (name: string) =>
      check.prepare("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?").get(name);
    assert.ok(index('pending_ready'), 'the index is there once the file is opened');
    assert.equal(index('pending_due'), undefined, 'the interim index is gone');
    check.close();
    await clock.tick(30_000);
    assert.deepEqual(handled, []);
    await clock.tick(30_000);
    await until(clock, () => handled.length === 50, 'the delayed messages');
    assert.deepEqual(
      handled.sort((a, b) => a - b),
      [...Array(50).keys()],
    );
    await c2.close();
    await second.close();
  });

  it('a lease another broker on the file gave is found within a second of its end', async () => {
    const path = dir.file('two.db');
    const clock = createFakeClock();
    const topic = 'due.two';
    const a = createEmbeddedBroker({ path, clock, random: createRandom(5) });
    const b = createEmbeddedBroker({ path, clock, random: createRandom(6) });
    const stuck = deferred();
    const gotA: number[] = [];
    const gotB: number[] = [];
    // A leases for 2 s and never finishes (as a process that hangs); B is idle in the same group.
    const ca = await a.subscribe({ topic, group: 'g', maxInFlight: 1, lease: 2_000 }, async () => {
      gotA.push(clock.now());
      await stuck.promise;
    });
    await a.publish(env(topic, 1));
    await until(clock, () => gotA.length === 1, 'A has it');
    const leasedAt = gotA[0] as number;
    const cb = await b.subscribe({ topic, group: 'g', maxInFlight: 1 }, async () => {
      gotB.push(clock.now());
    });
    await until(clock, () => gotB.length === 1, 'B has it after the lease of A');
    const late = (gotB[0] as number) - (leasedAt + 2_000);
    assert.ok(late >= 0 && late <= 1_100, `B found the ended lease ${late} ms after its end`);
    stuck.resolve();
    await cb.close();
    await b.close();
    await ca.close();
    await a.close();
  });
});
