/**
 * @module gateway/rate-limit
 * Rate limits for the gateway, free of any HTTP server: a token bucket per (route, key) in memory
 * or in Redis (shared by every gateway instance), the decision as response headers, and the
 * client's address behind trusted proxies.
 */
export type { RateLimitDecision, RateLimitPolicy } from './bucket.ts';
export {
  type ClientAddressOptions,
  clientAddress,
  createTrustedProxies,
  normalizeAddress,
  type TrustedProxies,
} from './client-address.ts';
export { policyHeader, type RateLimitPolicyInfo, rateLimitHeaders } from './headers.ts';
export {
  type ByClientAddressOptions,
  byApiKey,
  byClientAddress,
  byUser,
  firstKey,
  type RateLimitKey,
  type RequestLike,
} from './keys.ts';
export {
  createRateLimiter,
  type RateLimiter,
  type RateLimiterOptions,
  type RateLimitTake,
  refuse,
  type StoreFailureMode,
} from './limiter.ts';
export { createRedisStore, type RedisStoreOptions } from './redis-store.ts';
export {
  createMemoryStore,
  type MemoryStoreOptions,
  type RateLimitStore,
  type StoreTake,
  type StoreTakeResult,
} from './store.ts';
