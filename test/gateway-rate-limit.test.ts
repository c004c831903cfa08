/**
 * Gateway rate limits against a reference model (fake clock), on the memory store and on the
 * machine's Redis; two gateways sharing one limit through Redis (server time); a Redis that is
 * not there. Every Redis key is under this run's prefix and deleted at the end.
 */
import assert from 'node:assert/strict';
import { type AddressInfo, createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Redis as IoRedis } from 'ioredis';
import { connectRedis, type Redis, redisOptions } from '../src/adapters/redis/connect.ts';
import { createRateLimiter } from '../src/gateway/rate-limit/limiter.ts';
import { createRedisStore } from '../src/gateway/rate-limit/redis-store.ts';
import { createMemoryStore } from '../src/gateway/rate-limit/store.ts';
import { createFakeClock } from '../src/runtime/clock.ts';
import { BROKERS, needBroker } from './brokers.ts';
import { randomRun } from './rate-limit-model.ts';

describe('rate limits against the reference model (memory store)', () => {
  it('admits exactly what the model admits, over 400 random sequences', async () => {
    const clock = createFakeClock();
    const { admitted, refused } = await randomRun({
      clock,
      make: (policy) => createRateLimiter({ store: createMemoryStore({ clock }), policy, clock }),
      sequences: 400,
      steps: 150,
      seed: 1,
    });
    assert.ok(admitted > 1000 && refused > 1000, `both paths exercised: ${admitted}/${refused}`);
  });
});

const skip = await needBroker('redis');
const prefix = `ptest${process.pid}rl:`;

describe('rate limits in Redis', { skip, timeout: 60_000 }, () => {
  let a: Redis;
  let b: Redis;
  before(async () => {
    a = (await connectRedis(BROKERS.redis.url, 'rl-a')).redis;
    b = (await connectRedis(BROKERS.redis.url, 'rl-b')).redis;
  });
  after(async () => {
    const keys = await a.keys(`${prefix}*`);
    if (keys.length > 0) await a.del(...keys);
    await a.quit();
    await b.quit();
  });

  it('the Lua script admits exactly what the model admits (time passed in)', async () => {
    const clock = createFakeClock();
    const { admitted, refused } = await randomRun({
      clock,
      make: (policy, run) =>
        createRateLimiter({
          store: createRedisStore({ redis: run % 2 === 0 ? a : b, prefix: `${prefix}m${run}:`, clock }),
          policy,
          clock,
          timeoutMs: 5000,
        }),
      sequences: 40,
      steps: 100,
      seed: 1000,
    });
    assert.ok(admitted > 100 && refused > 100, `both paths exercised: ${admitted}/${refused}`);
  });

  it('two gateways on one Redis share one limit (server time)', async () => {
    const policy = { capacity: 25, refillPerSecond: 0.001 };
    const gateways = [a, b].map((redis) =>
      createRateLimiter({ store: createRedisStore({ redis, prefix: `${prefix}shared:` }), policy }),
    );
    // 200 requests at once, half through each gateway: exactly the burst passes.
    const decisions = await Promise.all(
      Array.from({ length: 200 }, (_, i) => gateways[i % 2]?.take({ route: 'POST /orders', key: 'user:1' })),
    );
    assert.equal(decisions.filter((d) => d?.allowed).length, 25);
    assert.equal(decisions.filter((d) => d?.degraded).length, 0);
  });

  it('two gateways under steady load never pass more than burst + rate × time', async () => {
    const policy = { capacity: 10, refillPerSecond: 20 };
    const gateways = [a, b].map((redis) =>
      createRateLimiter({ store: createRedisStore({ redis, prefix: `${prefix}steady:` }), policy }),
    );
    const started = Date.now();
    let admitted = 0;
    const hammer = async (i: number) => {
      while (Date.now() - started < 1000) {
        if ((await gateways[i % 2]?.take({ route: 'r', key: 'k' }))?.allowed) admitted++;
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, i) => hammer(i)));
    const seconds = (Date.now() - started) / 1000;
    assert.ok(admitted <= 10 + Math.ceil(20 * seconds) + 1, `admitted ${admitted} in ${seconds}s`);
    assert.ok(admitted >= 10 + Math.floor(20 * 0.8), `admitted ${admitted}: the rate is delivered`);
  });

  it('a bucket key holding what another writer left is a new, full bucket: never open for good, never shut for good', async () => {
    const p = `${prefix}poison:`;
    const limiter = createRateLimiter({
      store: createRedisStore({ redis: a, prefix: p }),
      policy: { capacity: 10, refillPerSecond: 5 },
    });
    await limiter.take({ route: 'r', key: 'k' });
    const [key] = await a.keys(`${p}*`);
    assert.ok(key !== undefined);
    const now = Date.now();
    const poisons: [string, () => Promise<unknown>][] = [
      ['a string', () => a.set(key, 'x')],
      ['tokens that are no number', () => a.hset(key, 't', 'abc', 'l', String(now))],
      ['infinite tokens', () => a.hset(key, 't', 'inf', 'l', String(now))],
      ['nan', () => a.hset(key, 't', 'nan', 'l', String(now))],
      ['tokens far below zero', () => a.hset(key, 't', '-1000000000000000000', 'l', String(now))],
      ['a last refill a year ahead', () => a.hset(key, 't', '0', 'l', String(now + 365 * 24 * 3600 * 1000))],
    ];
    for (const [what, poison] of poisons) {
      await a.del(key);
      await poison();
      const d = await limiter.take({ route: 'r', key: 'k' });
      assert.equal(d.allowed, true, what);
      assert.equal(d.degraded, undefined, `${what}: counted, not let through for a store error`);
      assert.equal(d.remaining, 9, what);
      const ttl = await a.pttl(key);
      assert.ok(ttl > 0 && ttl <= 1200, `${what}: pttl ${ttl}`);
    }
  });

  it('the Lua script and the memory store agree when the clock steps back, by less and by more than a minute', async () => {
    const clock = createFakeClock();
    const policy = { capacity: 2, refillPerSecond: 1 };
    const memory = createRateLimiter({ store: createMemoryStore({ clock }), policy, clock });
    const redis = createRateLimiter({
      store: createRedisStore({ redis: a, prefix: `${prefix}back:`, clock }),
      policy,
      clock,
      timeoutMs: 5000,
    });
    const steps = [0, 0, 0, -30_000, 10_000, -60_000, 0, -60_001, 0, 0, -3_600_000, 0, 0, 1000, 0];
    for (const [i, step] of steps.entries()) {
      clock.advance(step);
      const got = await redis.take({ route: 'r', key: 'k' });
      assert.deepEqual(await memory.take({ route: 'r', key: 'k' }), got, `step ${i} (${step} ms)`);
    }
  });

  it('buckets expire once they would be full again', async () => {
    const store = createRedisStore({ redis: a, prefix: `${prefix}ttl:` });
    const limiter = createRateLimiter({ store, policy: { capacity: 10, refillPerSecond: 5 } });
    await limiter.take({ route: 'r', key: 'k', cost: 4 });
    const [key] = await a.keys(`${prefix}ttl:*`);
    assert.ok(key !== undefined);
    const ttl = await a.pttl(key);
    assert.ok(ttl > 1700 && ttl <= 1800, `pttl ${ttl}: 4 tokens at 5/s, and a second`);
  });
});

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('Redis down', { timeout: 20_000 }, () => {
  // The adapter's options, to a port nobody listens on. With its offline queue, commands wait
  // while it reconnects (seconds, growing): the limiter's timeout bounds the wait. Without the
  // queue, a command fails at once: the store's own error path.
  const clients: IoRedis[] = [];
  const client = async (queue: boolean) => {
    const url = `redis://127.0.0.1:${await closedPort()}`;
    const redis = new IoRedis({
      ...redisOptions(url, 'rl-down'),
      enableOfflineQueue: queue,
      lazyConnect: false,
    });
    redis.on('error', () => {});
    clients.push(redis);
    return redis;
  };
  after(() => {
    for (const c of clients) c.disconnect();
  });
  const policy = { capacity: 10, refillPerSecond: 5 };

  for (const [queue, timeoutMs] of [
    [true, 100],
    [false, 5000],
  ] as const) {
    const why = queue ? 'our timeout' : "the client's own failure";
    it(`fail open: requests pass, degraded, in bounded time (${why})`, async () => {
      const logs: string[] = [];
      const limiter = createRateLimiter({
        store: createRedisStore({ redis: await client(queue), prefix }),
        policy,
        timeoutMs,
        log: (m) => logs.push(m),
      });
      const started = Date.now();
      const decisions = await Promise.all(
        Array.from({ length: 5 }, () => limiter.take({ route: 'r', key: 'k' })),
      );
      assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
      assert.ok(decisions.every((d) => d.allowed && d.degraded === true));
      assert.equal(logs.length, 1);
    });

    it(`fail closed: UNAVAILABLE in bounded time (${why})`, async () => {
      const limiter = createRateLimiter({
        store: createRedisStore({ redis: await client(queue), prefix }),
        policy,
        timeoutMs,
        onStoreError: 'closed',
      });
      const started = Date.now();
      await assert.rejects(limiter.take({ route: 'r', key: 'k' }), { code: 'UNAVAILABLE' });
      assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
    });
  }
});
