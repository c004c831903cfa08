/**
 * The Redis broker's per-turn publish batches (`src/adapters/redis/publisher.ts`) against the
 * machine's Redis: each publish of a batch keeps its own dedupe and receipt, an entry Redis
 * refuses fails alone and leaves nothing behind, a batch that fails as a whole rejects every one
 * of its publishes, and trimming still runs, in both scripts: PUBLISH (a batch with an entry to
 * dedupe) and APPEND (a batch of plain entries).
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  createRedisBroker,
  type RedisBroker,
  type RedisBrokerOptions,
} from '../src/adapters/redis/redis-broker.ts';
import type { PublishReceipt } from '../src/broker/broker.ts';
import { createEnvelope } from '../src/envelope/envelope.ts';
import { ParleyError } from '../src/errors.ts';
import { BROKERS, cuttableProxy, needBroker } from './brokers.ts';

const skip = await needBroker('redis');
let n = 0;
const made: RedisBroker[] = [];

async function broker(options: Partial<RedisBrokerOptions> = {}): Promise<RedisBroker> {
  const b = await createRedisBroker({
    url: BROKERS.redis.url,
    prefix: `ptest${process.pid}p${++n}`,
    log: () => {},
    ...options,
  });
  made.push(b);
  return b;
}

function event(type: string, data: unknown, idempotencykey?: string) {
  const env = createEnvelope({ source: '/test', type, data });
  if (idempotencykey !== undefined) env.idempotencykey = idempotencykey;
  return env;
}

describe('redis broker: publish batches', { skip }, () => {
  after(async () => {
    for (const b of made) {
      await b.destroyAll().catch(() => undefined);
      await b.close();
    }
  });

  it('one turn: a new entry, a duplicate of an earlier publish and a duplicate within the batch', async () => {
    const b = await broker();
    const first = await b.publish(event('t', 1, 'k-old'));
    assert.equal(first.duplicate, false);
    // Made in one turn: one script call.
    const again = event('t', 2, 'k-old');
    const fresh = event('t', 3, 'k-new');
    const twin = event('t', 4, 'k-new');
    const plain = event('t', 5);
    const receipts = await Promise.all([again, fresh, twin, plain].map((e) => b.publish(e)));
    assert.deepEqual(receipts, [
      { id: first.id, duplicate: true },
      { id: fresh.id, duplicate: false },
      { id: fresh.id, duplicate: true },
      { id: plain.id, duplicate: false },
    ]);
    const entries = await b.redis.xrange(b.streamOf('t'), '-', '+');
    const ids = entries.map(([, fields]) => JSON.parse(String(fields[1])).id);
    assert.deepEqual(ids, [first.id, fresh.id, plain.id]);
  });

  it('an entry Redis refuses fails alone, with its mapped error, and leaves no dedupe key behind', async () => {
    const b = await broker();
    await b.redis.set(b.streamOf('broken'), 'not a stream');
    const bad = event('broken', 1, 'k-bad');
    const results = await Promise.allSettled([
      b.publish(event('ok', 1)),
      b.publish(bad),
      b.publish(event('ok', 2)),
    ]);
    assert.equal(results[0]?.status, 'fulfilled');
    assert.equal(results[2]?.status, 'fulfilled');
    assert.equal(results[1]?.status, 'rejected');
    const error = (results[1] as PromiseRejectedResult).reason;
    assert.ok(error instanceof ParleyError);
    assert.equal(error.code, 'FAILED_PRECONDITION');
    assert.match(error.message, /WRONGTYPE/);
    assert.equal(await b.redis.xlen(b.streamOf('ok')), 2);
    // Nothing was stored for it: once the topic is usable, publishing it again stores it.
    await b.redis.del(b.streamOf('broken'));
    assert.deepEqual(await b.publish(bad), { id: bad.id, duplicate: false });
    assert.equal(await b.redis.xlen(b.streamOf('broken')), 1);
  });

  it('a turn of publishes without idempotency keys: APPEND, no dedupe key, a refused entry fails alone', async () => {
    const b = await broker();
    await b.redis.set(b.streamOf('broken'), 'not a stream');
    const envs = [event('ok', 1), event('broken', 2), event('ok', 3)];
    const results = await Promise.allSettled(envs.map((e) => b.publish(e)));
    assert.deepEqual(results[0], { status: 'fulfilled', value: { id: envs[0]?.id, duplicate: false } });
    assert.deepEqual(results[2], { status: 'fulfilled', value: { id: envs[2]?.id, duplicate: false } });
    const error = (results[1] as PromiseRejectedResult).reason;
    assert.ok(error instanceof ParleyError);
    assert.equal(error.code, 'FAILED_PRECONDITION');
    const entries = await b.redis.xrange(b.streamOf('ok'), '-', '+');
    assert.deepEqual(
      entries.map(([, fields]) => JSON.parse(String(fields[1])).data),
      [1, 3],
    );
    // Nothing held per message: only a publish with a key claims a dedupe key.
    assert.deepEqual(await b.redis.keys(b.key('dedupe:*')), []);
    await b.publish(event('ok', 4, 'k-4'));
    assert.equal((await b.redis.keys(b.key('dedupe:*'))).length, 1);
  });

  it('a plain batch over several topics keeps each entry in its stream with its own fields', async () => {
    const b = await broker();
    const envs = [event('a', 1), event('b', 2), event('a', 3), event('b', 4)];
    const options = [{}, { key: 'k2' }, { key: 'k3', delay: 60_000 }, {}];
    const receipts = await Promise.all(envs.map((e, i) => b.publish(e, options[i])));
    assert.deepEqual(
      receipts,
      envs.map((e) => ({ id: e.id, duplicate: false })),
    );
    const fieldsOf = async (topic: string) =>
      (await b.redis.xrange(b.streamOf(topic), '-', '+')).map(([, list]) => {
        const fields: Record<string, unknown> = {};
        for (let i = 0; i + 1 < list.length; i += 2) fields[String(list[i])] = list[i + 1];
        const { body, ...rest } = fields;
        return { data: JSON.parse(String(body)).data, ...rest } as Record<string, unknown>;
      });
    const a = await fieldsOf('a');
    assert.equal(a.length, 2);
    assert.deepEqual(a[0], { data: 1 });
    assert.equal(a[1]?.data, 3);
    assert.equal(a[1]?.key, 'k3');
    assert.ok(Number(a[1]?.notBefore) > Date.now() + 50_000, 'the delay travels as notBefore');
    assert.deepEqual(await fieldsOf('b'), [{ data: 2, key: 'k2' }, { data: 4 }]);
  });

  it('a batch that fails as a whole rejects every publish of it with UNAVAILABLE', async () => {
    const proxy = await cuttableProxy(BROKERS.redis.port);
    const b = await broker({ url: `redis://127.0.0.1:${proxy.port}` });
    await b.publish(event('t', 0)); // connected and the script loaded
    await proxy.close(); // no connection, and none to be had: each call fails after its retries
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => b.publish(event('t', i))));
    assert.equal(results.length, 20);
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      const error = (r as PromiseRejectedResult).reason;
      assert.ok(error instanceof ParleyError);
      assert.equal(error.code, 'UNAVAILABLE');
    }
    made.splice(made.indexOf(b), 1);
    b.redis.disconnect();
    // Its one stored entry, deleted over a connection that works.
    const cleaner = await broker();
    await cleaner.redis.del(b.streamOf('t'));
  });

  it('a batch larger than one script call: every publish gets its receipt, in order, trimmed by maxLength', async () => {
    const b = await broker({ maxLength: 10 });
    const envs = Array.from({ length: 1200 }, (_, i) => event('many', i));
    const receipts: PublishReceipt[] = await Promise.all(envs.map((e) => b.publish(e)));
    assert.deepEqual(
      receipts.map((r) => r.id),
      envs.map((e) => e.id),
    );
    const length = await b.redis.xlen(b.streamOf('many'));
    assert.ok(length < 1200, `MAXLEN ~ 10 trimmed the stream (${length} left)`);
  });

  it('entries older than retentionMs are trimmed by a later batch', async () => {
    const b = await broker({ retentionMs: 50 });
    await Promise.all(Array.from({ length: 300 }, (_, i) => b.publish(event('old', i))));
    assert.equal(await b.redis.xlen(b.streamOf('old')), 300);
    await sleep(1100); // trimming by age runs at most once a second per topic
    await b.publish(event('old', 'new'));
    const length = await b.redis.xlen(b.streamOf('old'));
    assert.ok(length < 301, `XTRIM MINID ~ dropped old entries (${length} left)`);
  });
});

if (skip !== false) it('redis broker: publish batches', { skip }, () => {});
