/**
 * @module resilience/rate-limit
 * A token bucket: `ratePerSecond` tokens a second, at most `burst` saved. As inbound middleware,
 * per action or service: a call with no token gets RESOURCE_EXHAUSTED with `retryAfterMs`.
 */
import { ParleyError } from '../errors.ts';
import { type Clock, systemClock } from '../runtime/clock.ts';
import type { Middleware } from '../runtime/pipeline.ts';

export interface RateLimit {
  ratePerSecond: number;
  /** Default: one second's worth. */
  burst?: number;
}

export class TokenBucket {
  private tokens: number;
  private last: number;
  private readonly burst: number;

  constructor(
    private readonly limit: RateLimit,
    private readonly clock: Clock = systemClock,
  ) {
    this.burst = limit.burst ?? limit.ratePerSecond;
    this.tokens = this.burst;
    this.last = clock.now();
  }

  private refill(): void {
    const now = this.clock.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.limit.ratePerSecond);
    this.last = now;
  }

  /** Takes `n` tokens if there are; true when taken. */
  tryTake(n = 1): boolean {
    this.refill();
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  /** How long until `n` tokens are there, ms. */
  waitFor(n = 1): number {
    this.refill();
    return this.tokens >= n ? 0 : Math.ceil(((n - this.tokens) / this.limit.ratePerSecond) * 1000);
  }
}

export function rateLimit(actions: Record<string, RateLimit>, clock: Clock = systemClock): Middleware {
  const buckets = new Map<string, TokenBucket>();
  return {
    name: 'rate-limit',
    inbound: (next) => (call) => {
      const action = `${call.ctx.service}.${call.ctx.action}`;
      const key = actions[action] !== undefined ? action : call.ctx.service;
      const limit = actions[key];
      if (limit === undefined) return next(call);
      let bucket = buckets.get(key);
      if (bucket === undefined) {
        bucket = new TokenBucket(limit, clock);
        buckets.set(key, bucket);
      }
      if (!bucket.tryTake()) {
        const retryAfterMs = bucket.waitFor();
        return Promise.reject(
          new ParleyError('RESOURCE_EXHAUSTED', `${key}: rate limit of ${limit.ratePerSecond}/s`, {
            details: { rateLimit: key, retryAfterMs },
          }),
        );
      }
      return next(call);
    },
  };
}
