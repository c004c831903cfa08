/**
 * @module gateway/rate-limit/limiter
 * What the gateway calls per request: `take({ route, key, cost })` against one policy, giving a
 * decision; `refuse(decision)` makes the 429 error.
 *
 * A store that fails or does not answer within `timeoutMs` is a decision in itself:
 * - `onStoreError: 'open'` (default): the request passes, marked `degraded`, and the failure is
 *   logged (once per outage, not once per request). A Redis outage then costs the API its rate
 *   limits for a while, not its availability.
 * - `'closed'`: the take throws UNAVAILABLE (a 503, not a 429: the client did nothing wrong), for
 *   routes where an unlimited burst is worse than an outage (login, costly writes).
 */
import { ParleyError } from '../../errors.ts';
import { type Clock, systemClock } from '../../runtime/clock.ts';
import { costUnits, decision, type RateLimitDecision, type RateLimitPolicy, scalePolicy } from './bucket.ts';
import { bucketId, type RateLimitStore } from './store.ts';

export type StoreFailureMode = 'open' | 'closed';

export interface RateLimiterOptions {
  store: RateLimitStore;
  policy: RateLimitPolicy;
  /** Default `open`: see the module note. */
  onStoreError?: StoreFailureMode;
  /** A store answer slower than this counts as a failure; default 250 ms. */
  timeoutMs?: number;
  /** For the timeout; default the system clock. */
  clock?: Clock;
  log?: (message: string) => void;
}

export interface RateLimitTake {
  /** The route (or any scope) the bucket belongs to: `POST /api/orders`. */
  route: string;
  /** Who is limited: a user id, an API key's hash, a client address (see keys.ts). */
  key: string;
  /** Tokens this request takes; default 1. */
  cost?: number;
}

export interface RateLimiter {
  readonly policy: Required<RateLimitPolicy>;
  take(request: RateLimitTake): Promise<RateLimitDecision>;
}

export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const policy = scalePolicy(options.policy);
  const { store } = options;
  const mode = options.onStoreError ?? 'open';
  const timeoutMs = options.timeoutMs ?? 250;
  const clock = options.clock ?? systemClock;
  const log = options.log ?? (() => {});
  let failing = false;

  const ask = (request: Parameters<RateLimitStore['take']>[0]) =>
    new Promise<Awaited<ReturnType<RateLimitStore['take']>>>((resolve, reject) => {
      const timer = clock.setTimeout(
        () => reject(new ParleyError('DEADLINE_EXCEEDED', `rate limit store: no answer in ${timeoutMs} ms`)),
        timeoutMs,
      );
      timer.unref();
      store.take(request).then(
        (result) => {
          timer.cancel();
          resolve(result);
        },
        (error: unknown) => {
          timer.cancel();
          reject(error);
        },
      );
    });

  return {
    policy: { name: policy.name, capacity: policy.capacity, refillPerSecond: policy.refillPerSecond },
    async take({ route, key, cost = 1 }) {
      const units = costUnits(policy, cost);
      const bucket = bucketId({ route, policy: policy.name, key });
      try {
        const result = await ask({ bucket, policy, cost: units });
        if (failing) log(`rate limit store answers again (policy ${policy.name})`);
        failing = false;
        return decision(policy, { allowed: result.allowed, tokens: result.tokens, cost: units });
      } catch (error) {
        const e = ParleyError.from(error, 'UNAVAILABLE');
        if (!failing) {
          log(`rate limit store failed (policy ${policy.name}), failing ${mode}: ${e.code} ${e.message}`);
        }
        failing = true;
        if (mode === 'closed') {
          throw new ParleyError('UNAVAILABLE', 'rate limit store unavailable', { cause: e });
        }
        return {
          ...decision(policy, { allowed: true, tokens: policy.capacityUnits, cost: 0 }),
          degraded: true,
        };
      }
    },
  };
}

/** The RESOURCE_EXHAUSTED error for a refused decision (the HTTP layer makes it a 429). */
export function refuse(decision: RateLimitDecision): ParleyError {
  return new ParleyError('RESOURCE_EXHAUSTED', `rate limit ${decision.policy} exceeded`, {
    reason: 'RATE_LIMITED',
    details: {
      policy: decision.policy,
      limit: decision.limit,
      remaining: decision.remaining,
      retryAfterMs: decision.retryAfterMs,
    },
  });
}
