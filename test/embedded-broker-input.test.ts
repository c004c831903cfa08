/**
 * What the embedded broker refuses with a ParleyError rather than a foreign throw: a publish whose
 * data JSON cannot hold (until 2026-12-03 `publish` threw JSON.stringify's TypeError at its
 * caller instead of returning a rejected promise), and a file it cannot open (better-sqlite3's
 * TypeError for a missing directory, an unexpected INTERNAL error).
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { it } from 'node:test';
import {
  BrokerRegistry,
  createEmbeddedBroker,
  createEnvelope,
  createFakeClock,
  type Envelope,
  ParleyError,
} from '../src/index.ts';
import { tempDir } from './helpers.ts';

const dir = tempDir('embedded-input');

it('a publish whose data has no JSON (a BigInt, a cycle) is refused alone with INVALID_ARGUMENT', async () => {
  const clock = createFakeClock();
  const broker = createEmbeddedBroker({ path: ':memory:', clock });
  const topic = 'input.unserializable';
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  try {
    for (const data of [10n, cyclic, { deep: [1, { n: 2n }] }]) {
      const bad = { ...createEnvelope({ source: '/t', type: topic, data: 0 }), data } as Envelope;
      let sent: Promise<unknown> | undefined;
      assert.doesNotThrow(() => {
        sent = broker.publish(bad);
      }, 'a rejected promise, not a throw');
      // In one turn with a good one: the turn's batch is written, the bad one is not in it.
      const good = broker.publish(createEnvelope({ source: '/t', type: topic, data: 'ok' }));
      const [b, g] = await Promise.allSettled([sent, good]);
      assert.equal(g.status, 'fulfilled');
      assert.equal(b.status, 'rejected');
      const e = (b as PromiseRejectedResult).reason;
      assert.ok(e instanceof ParleyError, `a ParleyError: ${e}`);
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.equal(e.retryable, false);
      assert.match(e.message, /cannot be encoded as JSON/);
    }
    assert.equal(broker.stats().messages, 3, 'only the good ones are stored');
  } finally {
    await broker.close();
  }
});

it("a file in a directory that does not exist: INVALID_ARGUMENT naming the directory, not SQLite's TypeError", async () => {
  const path = dir.file('missing/sub/broker.db');
  const expected = (e: unknown) => {
    assert.ok(e instanceof ParleyError, `a ParleyError: ${e}`);
    assert.equal(e.code, 'INVALID_ARGUMENT');
    assert.equal(e.retryable, false);
    assert.equal(
      e.message,
      `cannot open the embedded broker's file ${path}: directory ${dir.file('missing/sub')} does not exist`,
    );
    return true;
  };
  assert.throws(() => createEmbeddedBroker({ path }), expected);
  // By URL, as PARLEY_BROKER names it.
  await assert.rejects(new BrokerRegistry().open(`embedded:${path}`), expected);
});

it('a file SQLite cannot open as a database: UNAVAILABLE naming the file', () => {
  const path = dir.file('not-a-database.db');
  writeFileSync(path, 'x'.repeat(4096));
  assert.throws(
    () => createEmbeddedBroker({ path }),
    (e: unknown) => {
      assert.ok(e instanceof ParleyError, `a ParleyError: ${e}`);
      assert.equal(e.code, 'UNAVAILABLE');
      assert.equal(e.message, `cannot open the embedded broker's file ${path}: file is not a database`);
      return true;
    },
  );
  // A directory where the file should be.
  assert.throws(
    () => createEmbeddedBroker({ path: dir.path }),
    (e: unknown) => e instanceof ParleyError && e.code === 'UNAVAILABLE' && e.message.includes(dir.path),
  );
});
