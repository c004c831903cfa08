/**
 * @module gateway/rate-limit/bucket
 * The token bucket's arithmetic, shared by every store (the Redis script does the same steps in
 * Lua). Tokens are counted in micro-tokens and time in whole milliseconds, so every step is
 * integer arithmetic: two stores, or a store and a test's reference model, never disagree by a
 * rounding error at the edge of a refill. (resilience/rate-limit.ts's TokenBucket counts float
 * tokens from its own clock: right for one process's outbound calls, not exact enough to be
 * repeated by a Lua script and checked against a model, so its math is not shared.)
 */
import { ParleyError } from '../../errors.ts';

/** One micro-token: the unit the stores count in. */
export const UNITS_PER_TOKEN = 1_000_000;

/** A limit as configured: a burst of `capacity` tokens, refilled at `refillPerSecond`. */
export interface RateLimitPolicy {
  /** Shown in the `RateLimit-Policy` and `RateLimit` headers; default `default`. */
  name?: string;
  /** Burst: tokens a full bucket holds. A positive integer. */
  capacity: number;
  /** Tokens added a second; positive, with at most three decimals (0.001/s steps). */
  refillPerSecond: number;
}

/** A policy in store units. */
export interface ScaledPolicy {
  name: string;
  capacity: number;
  /** Capacity in micro-tokens. */
  capacityUnits: number;
  /** Micro-tokens added each millisecond: `refillPerSecond × 1000`, an integer. */
  unitsPerMs: number;
  refillPerSecond: number;
}

/** A bucket as a store keeps it. */
export interface BucketState {
  /** Micro-tokens in the bucket at `last`. */
  tokens: number;
  /** Epoch ms of the last refill. */
  last: number;
}

/** Checks a policy once, at configuration time, and converts it to units. */
export function scalePolicy(policy: RateLimitPolicy): ScaledPolicy {
  const { capacity, refillPerSecond } = policy;
  const name = policy.name ?? 'default';
  if (!Number.isSafeInteger(capacity) || capacity < 1 || capacity > 1_000_000_000) {
    throw new ParleyError('INVALID_ARGUMENT', `rate limit ${name}: capacity must be an integer 1..1e9`);
  }
  const unitsPerMs = Math.round(refillPerSecond * 1000);
  // A rate finer than 0.001/s would be silently rounded; refuse it instead.
  if (
    !Number.isFinite(refillPerSecond) ||
    unitsPerMs < 1 ||
    Math.abs(unitsPerMs - refillPerSecond * 1000) > 1e-6
  ) {
    throw new ParleyError(
      'INVALID_ARGUMENT',
      `rate limit ${name}: refillPerSecond must be positive with at most three decimals`,
    );
  }
  // Header values are Structured Field tokens/strings: keep the name to printable ASCII without quotes.
  if (!/^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}$/.test(name)) {
    throw new ParleyError(
      'INVALID_ARGUMENT',
      'rate limit name: 1..64 printable ASCII characters, no " or \\',
    );
  }
  return { name, capacity, capacityUnits: capacity * UNITS_PER_TOKEN, unitsPerMs, refillPerSecond };
}

/** Checks a request's cost: a non-negative integer no larger than the bucket (else it could never pass). */
export function costUnits(policy: ScaledPolicy, cost: number): number {
  if (!Number.isSafeInteger(cost) || cost < 0 || cost > policy.capacity) {
    throw new ParleyError(
      'INVALID_ARGUMENT',
      `rate limit ${policy.name}: cost must be an integer 0..${policy.capacity}, got ${cost}`,
    );
  }
  return cost * UNITS_PER_TOKEN;
}

/**
 * A last refill further ahead of `now` than this is no bucket: it starts again, full. The Redis
 * script has the same bound (`now + 60000`).
 */
export const MAX_CLOCK_BACK_MS = 60_000;

/**
 * The bucket refilled up to `now`. A clock that went back a little (another instance's) refills
 * nothing. Until 2026-12-03 a clock stepped back further (an NTP step on Date.now) froze a drained
 * bucket until the clock caught up, an hour after an hour's step, while Retry-After said 1 s.
 */
export function refill(policy: ScaledPolicy, state: BucketState | undefined, now: number): BucketState {
  if (state === undefined || state.last > now + MAX_CLOCK_BACK_MS) {
    return { tokens: policy.capacityUnits, last: now };
  }
  if (now <= state.last) return state;
  const missing = policy.capacityUnits - state.tokens;
  // Bound the elapsed time before multiplying, so a long idle bucket cannot overflow 2^53.
  const elapsed = Math.min(now - state.last, Math.ceil(missing / policy.unitsPerMs));
  return { tokens: Math.min(policy.capacityUnits, state.tokens + elapsed * policy.unitsPerMs), last: now };
}

/** Refills, then takes `cost` micro-tokens if they are there. */
export function takeTokens(
  policy: ScaledPolicy,
  state: BucketState | undefined,
  options: { now: number; cost: number },
): { allowed: boolean; state: BucketState } {
  const filled = refill(policy, state, options.now);
  if (filled.tokens < options.cost) return { allowed: false, state: filled };
  return { allowed: true, state: { tokens: filled.tokens - options.cost, last: filled.last } };
}

/** Ms until a bucket holding `tokens` micro-tokens holds `needed`. */
export function msUntil(policy: ScaledPolicy, tokens: number, needed: number): number {
  return needed <= tokens ? 0 : Math.ceil((needed - tokens) / policy.unitsPerMs);
}

/** What a take decided, with what the HTTP layer needs to say so. */
export interface RateLimitDecision {
  allowed: boolean;
  /** The policy's name, for the headers. */
  policy: string;
  /** The bucket's capacity (the burst). */
  limit: number;
  /** Whole tokens left after this request. */
  remaining: number;
  /** Seconds until the bucket is full again (rounded up). */
  resetSeconds: number;
  /** Ms until a request of the same cost could pass: 0 when allowed. */
  retryAfterMs: number;
  /** `retryAfterMs` in whole seconds, rounded up (what `Retry-After` carries). */
  retryAfterSeconds: number;
  /**
   * True when the store could not be asked and the limiter let the request through (fail open):
   * the numbers are then the policy's, not a bucket's.
   */
  degraded?: boolean;
}

/** The decision for a bucket holding `tokens` micro-tokens after a take of `cost`. */
export function decision(
  policy: ScaledPolicy,
  result: { allowed: boolean; tokens: number; cost: number },
): RateLimitDecision {
  const retryAfterMs = result.allowed ? 0 : msUntil(policy, result.tokens, result.cost);
  return {
    allowed: result.allowed,
    policy: policy.name,
    limit: policy.capacity,
    remaining: Math.floor(result.tokens / UNITS_PER_TOKEN),
    resetSeconds: Math.ceil(msUntil(policy, result.tokens, policy.capacityUnits) / 1000),
    retryAfterMs,
    retryAfterSeconds: Math.ceil(retryAfterMs / 1000),
  };
}
