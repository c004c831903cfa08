import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ParleyError } from '../../errors.ts';
import { createFakeClock } from '../../runtime/clock.ts';
import { scalePolicy } from './bucket.ts';
import { policyHeader, rateLimitHeaders } from './headers.ts';
import { createRateLimiter, refuse } from './limiter.ts';
import { bucketId, createMemoryStore, type RateLimitStore } from './store.ts';

const policy = { capacity: 10, refillPerSecond: 5 };

function memoryLimiter(options: { maxBuckets?: number } = {}) {
  const clock = createFakeClock();
  const store = createMemoryStore({ clock, ...options });
  return { clock, store, limiter: createRateLimiter({ store, policy, clock }) };
}

describe('rate limiter (memory store, fake clock)', () => {
  it('burst then steady rate: 10 at once, then 5 a second, never more', async () => {
    const { clock, limiter } = memoryLimiter();
    const burst = [];
    for (let i = 0; i < 11; i++) burst.push((await limiter.take({ route: 'r', key: 'k' })).allowed);
    assert.deepEqual(burst, [...Array(10).fill(true), false]);
    // Knock every 10 ms for 20 s: each second lets exactly 5 through.
    for (let second = 0; second < 20; second++) {
      let admitted = 0;
      for (let tick = 0; tick < 100; tick++) {
        clock.advance(10);
        if ((await limiter.take({ route: 'r', key: 'k' })).allowed) admitted++;
      }
      assert.equal(admitted, 5, `second ${second}`);
    }
  });

  it('keys and routes have their own buckets', async () => {
    const { limiter } = memoryLimiter();
    for (let i = 0; i < 10; i++) await limiter.take({ route: 'r', key: 'a' });
    assert.equal((await limiter.take({ route: 'r', key: 'a' })).allowed, false);
    assert.equal((await limiter.take({ route: 'r', key: 'b' })).allowed, true);
    assert.equal((await limiter.take({ route: 'other', key: 'a' })).allowed, true);
  });

  it('a decision carries what the HTTP layer needs', async () => {
    const { clock, limiter } = memoryLimiter();
    const first = await limiter.take({ route: 'r', key: 'k', cost: 4 });
    assert.deepEqual(first, {
      allowed: true,
      policy: 'default',
      limit: 10,
      remaining: 6,
      resetSeconds: 1, // 4 tokens at 5/s: 800 ms, rounded up
      retryAfterMs: 0,
      retryAfterSeconds: 0,
    });
    const second = await limiter.take({ route: 'r', key: 'k', cost: 10 });
    assert.equal(second.allowed, false);
    assert.equal(second.retryAfterMs, 800);
    assert.equal(second.retryAfterSeconds, 1);
    clock.advance(799);
    assert.equal((await limiter.take({ route: 'r', key: 'k', cost: 10 })).allowed, false);
    clock.advance(1);
    assert.equal((await limiter.take({ route: 'r', key: 'k', cost: 10 })).allowed, true);
  });

  it('refuses a cost it could never pass, and bad policies, as INVALID_ARGUMENT', async () => {
    const { limiter } = memoryLimiter();
    await assert.rejects(limiter.take({ route: 'r', key: 'k', cost: 11 }), { code: 'INVALID_ARGUMENT' });
    await assert.rejects(limiter.take({ route: 'r', key: 'k', cost: 1.5 }), { code: 'INVALID_ARGUMENT' });
    for (const bad of [
      { capacity: 0, refillPerSecond: 1 },
      { capacity: 1.5, refillPerSecond: 1 },
      { capacity: 1, refillPerSecond: 0 },
      { capacity: 1, refillPerSecond: 0.0001 },
      { capacity: 1, refillPerSecond: Number.NaN },
      { capacity: 1, refillPerSecond: 1, name: 'a"b' },
    ]) {
      assert.throws(() => scalePolicy(bad), { code: 'INVALID_ARGUMENT' }, JSON.stringify(bad));
    }
  });

  it('refuse() is the 429: RESOURCE_EXHAUSTED with retryAfterMs', async () => {
    const { limiter } = memoryLimiter();
    for (let i = 0; i < 10; i++) await limiter.take({ route: 'r', key: 'k' });
    const error = refuse(await limiter.take({ route: 'r', key: 'k' }));
    assert.ok(error instanceof ParleyError);
    assert.equal(error.code, 'RESOURCE_EXHAUSTED');
    assert.equal(error.retryable, true);
    assert.deepEqual(error.details, { policy: 'default', limit: 10, remaining: 0, retryAfterMs: 200 });
  });

  it('headers: RateLimit-Policy and RateLimit (IETF draft), Retry-After on a refusal', async () => {
    const { limiter } = memoryLimiter();
    assert.equal(policyHeader(limiter.policy), '"default";q=10;w=2');
    const ok = await limiter.take({ route: 'r', key: 'k', cost: 3 });
    assert.deepEqual(rateLimitHeaders(ok, limiter.policy), {
      'ratelimit-policy': '"default";q=10;w=2',
      ratelimit: '"default";r=7;t=1',
    });
    const no = await limiter.take({ route: 'r', key: 'k', cost: 10 });
    assert.deepEqual(rateLimitHeaders(no, limiter.policy), {
      'ratelimit-policy': '"default";q=10;w=2',
      ratelimit: '"default";r=7;t=1',
      'retry-after': '1',
    });
  });
});

describe('memory store', () => {
  it('forgets idle buckets once they are full again, which changes nothing', async () => {
    const { clock, store, limiter } = memoryLimiter();
    for (let k = 0; k < 100; k++) await limiter.take({ route: 'r', key: `k${k}`, cost: 10 });
    assert.equal(store.size(), 100);
    clock.advance(1999);
    await limiter.take({ route: 'r', key: 'fresh', cost: 0 });
    assert.equal(store.size(), 101, 'not full yet: kept');
    clock.advance(1);
    await limiter.take({ route: 'r', key: 'fresh', cost: 0 });
    assert.equal(store.size(), 0, 'all full, the fresh one too');
    assert.equal((await limiter.take({ route: 'r', key: 'k1' })).remaining, 9);
  });

  it('a clock stepped back more than a minute starts the bucket again; less than that refills nothing', async () => {
    const { clock, limiter } = memoryLimiter();
    await limiter.take({ route: 'r', key: 'k', cost: 10 });
    clock.advance(-60_000);
    const within = await limiter.take({ route: 'r', key: 'k' });
    assert.equal(within.allowed, false, 'a minute back: the same bucket, still empty');
    clock.advance(-3_600_000);
    const refused = await limiter.take({ route: 'r', key: 'k' });
    assert.equal(refused.remaining, 9, 'an hour back: a new, full bucket (the Redis script does the same)');
    await limiter.take({ route: 'r', key: 'k', cost: 9 });
    const drained = await limiter.take({ route: 'r', key: 'k' });
    assert.equal(drained.retryAfterSeconds, 1);
    clock.advance(drained.retryAfterMs);
    assert.equal((await limiter.take({ route: 'r', key: 'k' })).allowed, true, 'Retry-After holds');
  });

  it('holds at most maxBuckets, dropping the least recently used', async () => {
    const { store, limiter } = memoryLimiter({ maxBuckets: 50 });
    for (let k = 0; k < 1000; k++) await limiter.take({ route: 'r', key: `k${k}` });
    assert.equal(store.size(), 50);
  });

  it('bucket ids cannot collide across route/policy/key boundaries, and long keys are hashed', () => {
    assert.notEqual(
      bucketId({ route: 'a', policy: 'p', key: 'b:c' }),
      bucketId({ route: 'a:b', policy: 'p', key: 'c' }),
    );
    assert.notEqual(
      bucketId({ route: 'a', policy: 'p:x', key: 'c' }),
      bucketId({ route: 'a', policy: 'p', key: 'x:c' }),
    );
    const long = bucketId({ route: 'r', policy: 'p', key: 'x'.repeat(100_000) });
    assert.ok(long.length < 100);
  });
});

describe('store failures', () => {
  const broken: RateLimitStore = {
    take: () => Promise.reject(new Error('connection refused')),
    close: async () => {},
  };
  const hanging: RateLimitStore = { take: () => new Promise(() => {}), close: async () => {} };

  it('fail open (default): the request passes, degraded, logged once per outage', async () => {
    const logs: string[] = [];
    const limiter = createRateLimiter({ store: broken, policy, log: (m) => logs.push(m) });
    for (let i = 0; i < 20; i++) {
      const d = await limiter.take({ route: 'r', key: 'k' });
      assert.equal(d.allowed, true);
      assert.equal(d.degraded, true);
      assert.deepEqual(rateLimitHeaders(d, limiter.policy), {}, 'no made-up numbers in headers');
    }
    assert.equal(logs.length, 1);
    assert.match(logs[0] ?? '', /failing open/);
  });

  it('fail closed: UNAVAILABLE (a 503), with the cause', async () => {
    const limiter = createRateLimiter({ store: broken, policy, onStoreError: 'closed' });
    await assert.rejects(limiter.take({ route: 'r', key: 'k' }), (e: unknown) => {
      assert.ok(e instanceof ParleyError);
      assert.equal(e.code, 'UNAVAILABLE');
      assert.ok(e.cause instanceof ParleyError);
      return true;
    });
  });

  it('a store that does not answer is a failure after timeoutMs', async () => {
    const clock = createFakeClock();
    const open = createRateLimiter({ store: hanging, policy, clock, timeoutMs: 100 });
    const closed = createRateLimiter({
      store: hanging,
      policy,
      clock,
      timeoutMs: 100,
      onStoreError: 'closed',
    });
    const a = open.take({ route: 'r', key: 'k' });
    const b = closed.take({ route: 'r', key: 'k' });
    const rejected = assert.rejects(b, { code: 'UNAVAILABLE' });
    await clock.tick(100);
    assert.equal((await a).degraded, true);
    await rejected;
  });
});
