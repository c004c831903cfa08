/**
 * The Redis consumer against the machine's Redis. Entries the broker did not write itself
 * (another writer's XADD on a Parley stream): each one that is not an envelope reaches the
 * dead-letter store with its reason, whatever its bytes; the entries around it are delivered, and
 * an envelope whose text holds U+FFFD (a character the consumer must tell apart from a byte that
 * is not UTF-8) arrives intact. And acks, which free a consumer's room once queued: a consumer
 * that closes sends them before it leaves its group. And retries that came due while the consumer
 * was full: taken as soon as it has room again.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisBroker, type RedisBroker } from '../src/adapters/redis/redis-broker.ts';
import { createEnvelope } from '../src/envelope/envelope.ts';
import { ParleyError } from '../src/errors.ts';
import { BROKERS, needBroker } from './brokers.ts';
import { waitFor } from './helpers.ts';

const skip = await needBroker('redis');
const made: RedisBroker[] = [];

async function broker(name: string, blockMs?: number): Promise<RedisBroker> {
  const b = await createRedisBroker({
    url: BROKERS.redis.url,
    prefix: `ptest${process.pid}${name}`,
    log: () => {},
    ...(blockMs === undefined ? {} : { blockMs }),
  });
  made.push(b);
  return b;
}

describe('redis consumer: entries from other writers, acks', { skip }, () => {
  after(async () => {
    for (const b of made) {
      await b.destroyAll().catch(() => undefined);
      await b.close();
    }
  });

  it('bytes that are not UTF-8, and text that is not JSON, are dead-lettered with the reason; U+FFFD in data arrives', async () => {
    const b = await broker('foreign');
    const got: unknown[] = [];
    const consumer = await b.subscribe({ topic: 'raw.t', group: 'g', maxAttempts: 1 }, async (d) => {
      got.push(d.envelope.data);
    });
    // Closed in `finally`: a consumer left running after a failed assertion would make its group
    // (and the stream) again once `after` has deleted them.
    try {
      const stream = b.streamOf('raw.t');
      const valid = (data: unknown) => JSON.stringify(createEnvelope({ source: '/t', type: 'raw.t', data }));
      // A valid envelope as bytes with one byte changed to 0xff: text that is not UTF-8.
      const broken = Buffer.from(valid('before-and-after'));
      broken[broken.indexOf('and')] = 0xff;
      await b.redis.xadd(stream, '*', 'body', valid(1));
      await b.redis.xadd(stream, '*', 'body', broken);
      await b.redis.xadd(stream, '*', 'body', 'not json at all');
      await b.redis.xadd(stream, '*', 'body', valid('a \ufffd here'));
      await b.redis.xadd(stream, '*', 'body', valid(2));
      await waitFor(() => got.length === 3, 10_000, 'the three envelopes');
      assert.deepEqual(got, [1, 'a \ufffd here', 2]);
      let letters = await b.deadLetters.list();
      for (const until = Date.now() + 10_000; letters.length < 2 && Date.now() < until; ) {
        await sleep(20);
        letters = await b.deadLetters.list();
      }
      const reasons = letters.map((l) => `${l.code}: ${l.message}`).sort();
      assert.equal(reasons.length, 2);
      assert.match(reasons[0] ?? '', /^INVALID_ARGUMENT: .*not valid JSON/);
      assert.match(reasons[1] ?? '', /^INVALID_ARGUMENT: .*not valid UTF-8/);
    } finally {
      await consumer.close();
    }
  });

  it('a close started by the last handler acks everything first, then leaves the group holding nothing', async () => {
    const b = await broker('ackclose');
    let seen = 0;
    let closing: Promise<void> | undefined;
    const consumer = await b.subscribe({ topic: 'close.t', group: 'g', maxInFlight: 100 }, async () => {
      // The 50th handler closes its own consumer while the turn's acks still wait to be sent.
      if (++seen === 50) closing = consumer.close();
    });
    try {
      await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          b.publish(createEnvelope({ source: '/t', type: 'close.t', data: i })),
        ),
      );
      await waitFor(() => closing !== undefined, 10_000, 'the 50th delivery');
      await closing;
      const stream = b.streamOf('close.t');
      const pending = (await b.redis.xpending(stream, 'g')) as [number, ...unknown[]];
      assert.equal(pending[0], 0, 'every entry acked');
      assert.deepEqual(
        await b.redis.xinfo('CONSUMERS', stream, 'g'),
        [],
        'the closed consumer left the group',
      );
    } finally {
      await consumer.close(); // the same close when the handler started it
    }
  });

  it('retries that came due while the consumer was full are all taken once it has room, not at the next poll', async () => {
    // A poll for other processes' retries only every minute: what arrives here in time came from
    // this consumer's own schedule. Two deferred messages come due while a slow one holds the only
    // place; the claim then takes one (it filled the room), and the other must follow at once.
    // (The take-over of idle entries, every 5 s here, would take them too: the second must come
    // well before that.)
    const b = await broker('duefull', 60_000);
    const seen: string[] = [];
    const at = new Map<string, number>();
    const consumer = await b.subscribe({ topic: 'due.t', group: 'g', maxInFlight: 1 }, async (d) => {
      const name = String(d.envelope.data);
      seen.push(`${name}${d.attempt}`);
      at.set(name, Date.now());
      if (name === 'slow') await sleep(600);
      else if (d.attempt === 1 && !seen.includes(`${name}-deferred`)) {
        seen.push(`${name}-deferred`);
        throw new ParleyError('UNAVAILABLE', 'later', { details: { deferMs: 200 } });
      }
    });
    try {
      for (const data of ['a', 'b', 'slow']) {
        await b.publish(createEnvelope({ source: '/t', type: 'due.t', data }));
      }
      await waitFor(
        () => seen.filter((s) => s === 'a1' || s === 'b1').length === 4,
        10_000,
        'a and b again after their deferral',
      );
      assert.deepEqual(
        seen.filter((s) => !s.endsWith('-deferred')),
        ['a1', 'b1', 'slow1', 'a1', 'b1'],
      );
      const gap = (at.get('b') ?? 0) - (at.get('a') ?? 0);
      assert.ok(gap < 2000, `b came ${gap} ms after a: it waited for a poll`);
    } finally {
      await consumer.close();
    }
  });
});

if (skip !== false) it('redis consumer: entries from other writers, acks', { skip }, () => {});
