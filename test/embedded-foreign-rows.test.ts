/**
 * The embedded broker's file can be opened by several processes (`embedded:DIR/broker.db`), so
 * its log may hold rows another program or version wrote. A row whose body is no envelope is
 * dead-lettered by a consumer with its bytes, passed over by history readers (the gateway's push
 * feed among them) and by replays; the envelopes around it arrive as usual.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import Database from 'better-sqlite3';
import { UNDECODABLE } from '../src/broker/outcome.ts';
import { createEmbeddedBroker, createEnvelope, createFakeClock } from '../src/index.ts';
import { createRandom } from '../src/transport/faults.ts';
import { waitFor } from './helpers.ts';

it('rows that hold no envelope: dead-lettered with their bytes, passed over by history and replay', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'parley-foreign-'));
  const path = join(dir, 'broker.db');
  const clock = createFakeClock();
  const broker = createEmbeddedBroker({ path, clock, random: createRandom(5) });
  try {
    const topic = 'orders.placed';
    const first = createEnvelope({ source: '/t', type: topic, data: { n: 1 } });
    await broker.publish(first);
    const foreign = ['null', 'not json', '{"specversion":"1.0"}', '[1,2]'];
    const db = new Database(path);
    try {
      const insert = db.prepare(
        'INSERT INTO messages (id, topic, key, body, published_at, available_at) VALUES (?, ?, NULL, ?, ?, ?)',
      );
      for (const [i, body] of foreign.entries())
        insert.run(`foreign-${i}`, topic, body, clock.now(), clock.now());
    } finally {
      db.close();
    }
    const last = createEnvelope({ source: '/t', type: topic, data: { n: 2 } });
    await broker.publish(last);

    const history = broker.history;
    assert.ok(history !== undefined);
    const page = await history.read(topic, '0');
    assert.deepEqual(
      page.entries.map((e) => e.envelope.id),
      [first.id, last.id],
    );
    assert.equal(page.next, String(Number(page.entries[0]?.position) + foreign.length + 1), 'past every row');

    const handled: string[] = [];
    const consumer = await broker.subscribe({ topic, group: 'g', startFrom: 'beginning' }, async (d) => {
      handled.push(d.envelope.id);
    });
    try {
      for (let i = 0; i < 20 && handled.length < 2; i++) await clock.tick(10);
      await waitFor(() => handled.length === 2, 2000, 'the two envelopes');
      assert.deepEqual(handled, [first.id, last.id]);
      const letters = await broker.deadLetters.list({ topic });
      assert.equal(letters.length, foreign.length);
      for (const letter of letters) {
        assert.equal(letter.code, 'INVALID_ARGUMENT');
        assert.equal(letter.envelope.source, UNDECODABLE);
      }
      assert.deepEqual(
        letters.map((l) => Buffer.from(String(l.envelope.data), 'base64').toString('utf8')).sort(),
        [...foreign].sort(),
        'each letter keeps its bytes',
      );
      assert.equal(await broker.deadLetters.replay({ topic }), 0, 'a replay passes over them');
      assert.equal((await broker.deadLetters.list({ topic })).length, foreign.length, 'still listed');
    } finally {
      await consumer.close();
    }
  } finally {
    await broker.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
