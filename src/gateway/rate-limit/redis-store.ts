/**
 * @module gateway/rate-limit/redis-store
 * Buckets in Redis, so that every gateway instance draws from one limit. Each take is one Lua
 * script (refill, compare, take, write, expire): atomic on the server, one round trip.
 *
 * Time comes from the Redis server (`TIME`) by default, not from the gateway: instances' clocks
 * drift, and a bucket refilled by one clock and then by another that is behind or ahead would
 * lose or mint tokens. One clock for everyone keeps the shared limit exact. Redis 5+ replicates
 * scripts by their effects, so reading TIME inside one is safe. A `clock` option passes time in
 * instead (tests with a fake clock; a deployment that trusts its own time sync).
 *
 * Keys: `<prefix><bucket id>`, a hash {t: micro-tokens, l: last refill ms}, expiring soon after
 * the bucket would be full again (an absent bucket is a full one, so idle buckets vanish losslessly).
 */
import type { Redis } from '../../adapters/redis/connect.ts';
import { redisError } from '../../adapters/redis/errors.ts';
import { Script } from '../../adapters/redis/scripts.ts';
import { ParleyError } from '../../errors.ts';
import type { Clock } from '../../runtime/clock.ts';
import type { RateLimitStore } from './store.ts';

/**
 * KEYS: bucket. ARGV: capacity (µtokens), µtokens a ms, cost (µtokens), now ms ('' : server TIME),
 * ms to keep a bucket past the moment it is full. Returns {1 if taken else 0, µtokens left}. The same steps as `takeTokens` in bucket.ts; numbers
 * stay integers below 2^53, exact in Lua's doubles, and are written with %d (tostring would
 * round past 14 digits).
 */
const TAKE = new Script(`
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[4])
end
-- What another writer left under the key (another type, fields that are no numbers, inf or nan,
-- tokens out of range, a last refill far ahead: MAX_CLOCK_BACK_MS in bucket.ts) is no bucket: it
-- starts again, full.
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
local s = redis.call('HMGET', KEYS[1], 't', 'l')
local tokens = cap
local last = now
local t, l = tonumber(s[1]), tonumber(s[2])
if t and l and t == t and l == l and t >= 0 and t <= cap and l >= 0 and l <= now + 60000 then
  tokens = t
  last = l
  if now > last then
    local elapsed = math.min(now - last, math.ceil((cap - tokens) / rate))
    tokens = math.min(cap, tokens + elapsed * rate)
    last = now
  end
end
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 't', string.format('%d', tokens), 'l', string.format('%d', last))
redis.call('PEXPIRE', KEYS[1], math.max(0, math.ceil((cap - tokens) / rate) + last - now) + ARGV[5])
return {allowed, tokens}
`);

/**
 * A bucket is kept this long after it would be full. Dropping it exactly then would be lossless
 * by Redis's clock, but expiry runs on Redis's clock and refills on the instance's when time is
 * passed in: a little slack keeps a bucket that a clock slightly behind still counts as partly empty.
 */
const EXPIRY_SLACK_MS = 1000;

export interface RedisStoreOptions {
  /** A connected client (see `connectRedis`); the store does not close it. */
  redis: Redis;
  /** Key prefix, default `parley:rl:`. */
  prefix?: string;
  /** Take time from this clock instead of the Redis server's (see the module note). */
  clock?: Clock;
}

export function createRedisStore(options: RedisStoreOptions): RateLimitStore {
  const { redis, clock } = options;
  const prefix = options.prefix ?? 'parley:rl:';
  return {
    async take({ bucket, policy, cost }) {
      const now = clock === undefined ? '' : String(clock.now());
      let reply: unknown;
      try {
        reply = await TAKE.run(
          redis,
          [prefix + bucket],
          [policy.capacityUnits, policy.unitsPerMs, cost, now, EXPIRY_SLACK_MS],
        );
      } catch (error) {
        throw redisError(error, 'rate limit take');
      }
      if (!Array.isArray(reply) || typeof reply[0] !== 'number' || typeof reply[1] !== 'number') {
        throw new ParleyError(
          'INTERNAL',
          `Redis: rate limit take: unexpected reply ${JSON.stringify(reply)}`,
        );
      }
      return { allowed: reply[0] === 1, tokens: reply[1] };
    },
    // The client belongs to the caller, who may share it with other parts of the gateway.
    async close() {},
  };
}
