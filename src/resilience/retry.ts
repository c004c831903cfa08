/**
 * @module resilience/retry
 * Retries of calls, as outbound middleware. A call is retried only when all of these hold:
 * - the error is retryable (`error.retryable`, e.g. UNAVAILABLE; never DEADLINE_EXCEEDED or
 *   CANCELLED, never a caller mistake or a declared domain error);
 * - repeating it is safe: the action is `idempotent`, or the call carries an idempotency key;
 * - attempts are left (`maxAttempts`, the first one included);
 * - the delay (exponential backoff with full jitter) ends before the deadline;
 * - the retry budget allows it: retries stay under `ratio` of the calls of the last `windowMs`
 *   plus a floor of `minPerSecond`, so a failing dependency is not hit with a multiple of the load.
 * Another instance is preferred for the retry (the balancer avoids instances already tried).
 *
 * Per node: `retry({...})`; per service or action: `retry({ actions: { 'orders.place': {...} } })`;
 * per call: `client.x(input, { retry: { maxAttempts: 5 } })` or `{ retry: false }`.
 */
import { ParleyError } from '../errors.ts';
import { onAbort } from '../runtime/abort.ts';
import { type Clock, systemClock } from '../runtime/clock.ts';
import { isDispatch, type Middleware, type OutboundCall } from '../runtime/pipeline.ts';
import { type Backoff, backoffDelay } from './backoff.ts';

export interface RetryPolicy {
  /** Attempts in all, the first included. Default 3. */
  maxAttempts?: number;
  /** Default: 50 ms doubling to 1 s, full jitter. */
  backoff?: Partial<Backoff>;
}

export interface RetryOptions extends RetryPolicy {
  /** Per service (`orders`) or action (`orders.place`); the more specific wins. */
  actions?: Record<string, RetryPolicy | false>;
  /** Shared by every call through this middleware; `false` for none. */
  budget?: RetryBudget | false;
  clock?: Clock;
  random?: () => number;
}

export interface RetryBudgetOptions {
  /** Retries allowed as a share of calls in the window. Default 0.2. */
  ratio?: number;
  /** Retries always allowed per second of window, however few the calls. Default 10. */
  minPerSecond?: number;
  /** Window, ms. Default 10 000. */
  windowMs?: number;
  clock?: Clock;
}

/**
 * Counts calls and retries over a sliding window (ten buckets). A retry is allowed while
 * `retries < ratio × calls + minPerSecond × window seconds`.
 */
export class RetryBudget {
  private readonly ratio: number;
  private readonly floor: number;
  private readonly bucketMs: number;
  private readonly calls = new Array<number>(10).fill(0);
  private readonly retries = new Array<number>(10).fill(0);
  private bucket = 0;
  private bucketStart: number;
  private readonly clock: Clock;

  constructor(options: RetryBudgetOptions = {}) {
    const windowMs = options.windowMs ?? 10_000;
    this.ratio = options.ratio ?? 0.2;
    this.floor = (options.minPerSecond ?? 10) * (windowMs / 1000);
    this.bucketMs = windowMs / 10;
    this.clock = options.clock ?? systemClock;
    this.bucketStart = this.clock.now();
  }

  private roll(): void {
    const now = this.clock.now();
    let steps = Math.floor((now - this.bucketStart) / this.bucketMs);
    if (steps <= 0) return;
    this.bucketStart += steps * this.bucketMs;
    for (steps = Math.min(steps, 10); steps > 0; steps--) {
      this.bucket = (this.bucket + 1) % 10;
      this.calls[this.bucket] = 0;
      this.retries[this.bucket] = 0;
    }
  }

  /** A first attempt was made. */
  recordCall(): void {
    this.roll();
    this.calls[this.bucket] = (this.calls[this.bucket] as number) + 1;
  }

  /** Takes one retry from the budget if it allows; false when spent. */
  tryRetry(): boolean {
    this.roll();
    const calls = this.calls.reduce((a, b) => a + b, 0);
    const retries = this.retries.reduce((a, b) => a + b, 0);
    if (retries >= this.ratio * calls + this.floor) return false;
    this.retries[this.bucket] = (this.retries[this.bucket] as number) + 1;
    return true;
  }

  /** Calls and retries in the window (for tests and metrics). */
  counts(): { calls: number; retries: number } {
    this.roll();
    return { calls: this.calls.reduce((a, b) => a + b, 0), retries: this.retries.reduce((a, b) => a + b, 0) };
  }
}

const DEFAULT_BACKOFF: Backoff = { initial: 50, max: 1000, multiplier: 2 };

/** Whether a failed call may be tried again, by its error alone. */
export function retryableError(error: unknown): boolean {
  if (!(error instanceof ParleyError)) return false;
  if (error.code === 'DEADLINE_EXCEEDED' || error.code === 'CANCELLED') return false;
  if (error.reason !== undefined) return false; // a declared domain error is an answer
  return error.retryable;
}

export function retry(options: RetryOptions = {}): Middleware & { readonly budget: RetryBudget | undefined } {
  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  const budget = options.budget === false ? undefined : (options.budget ?? new RetryBudget({ clock }));
  const merge = (call: OutboundCall, perCall: RetryPolicy | undefined): Required<RetryPolicy> | undefined => {
    const perAction = options.actions?.[`${call.service}.${call.action}`] ?? options.actions?.[call.service];
    if (perAction === false) return undefined;
    const merged = { ...options, ...perAction, ...perCall };
    return {
      maxAttempts: Math.max(1, merged.maxAttempts ?? 3),
      backoff: { ...DEFAULT_BACKOFF, ...options.backoff, ...perAction?.backoff, ...perCall?.backoff },
    };
  };
  // Without a per-call policy, an action's policy is the same every time: made once.
  const byAction = new Map<string, Map<string, Required<RetryPolicy> | false>>();
  const policyOf = (call: OutboundCall): Required<RetryPolicy> | undefined => {
    const perCall = call.options.retry;
    if (perCall === false) return undefined;
    if (perCall !== undefined) return merge(call, perCall);
    let actions = byAction.get(call.service);
    if (actions === undefined) {
      actions = new Map();
      byAction.set(call.service, actions);
    }
    let policy = actions.get(call.action);
    if (policy === undefined) {
      policy = merge(call, undefined) ?? false;
      actions.set(call.action, policy);
    }
    return policy === false ? undefined : policy;
  };
  return {
    name: 'retry',
    budget,
    outbound: (next) => {
      // Right before the dispatch, a failure is handed over through `call.recover` (no promise).
      const fused = isDispatch(next);
      const again = async (call: OutboundCall, policy: Required<RetryPolicy>, first: unknown) => {
        let error = first;
        for (let attempt = 1; ; attempt++) {
          if (attempt >= policy.maxAttempts || !retryableError(error)) throw error;
          const delay = backoffDelay(policy.backoff as Backoff, attempt, random);
          // Never past the deadline: a retry that cannot finish in time is not started.
          if (clock.now() + delay >= call.deadline) throw error;
          if (call.options.signal?.aborted) throw error;
          if (budget !== undefined && !budget.tryRetry()) throw error;
          if (delay > 0) await sleep(clock, delay, call.options.signal);
          try {
            return await next(call);
          } catch (e) {
            error = e;
          }
        }
      };
      // One function for every call (see OutboundCall.recover): the policy is found again, from
      // the caches, on a failure.
      const recover = (error: unknown, call: OutboundCall): Promise<unknown> => {
        const policy = policyOf(call);
        return policy === undefined ? Promise.reject(error) : again(call, policy, error);
      };
      return (call) => {
        budget?.recordCall();
        const safe = call.idempotent || call.options.idempotencyKey !== undefined;
        if (!safe || call.stream !== undefined) return next(call);
        const policy = policyOf(call);
        if (policy === undefined || policy.maxAttempts === 1) return next(call);
        // The loop is entered only on a failure; the first attempt costs a `catch` at most.
        if (fused) {
          call.recover = recover;
          return next(call);
        }
        return next(call).catch((error: unknown) => again(call, policy, error));
      };
    },
  };
}

/** Waits `ms` on the clock; a caller's abort ends the wait with CANCELLED. */
export function sleep(clock: Clock, ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let unwatch: (() => void) | undefined;
    const timer = clock.setTimeout(() => {
      unwatch?.();
      resolve();
    }, ms);
    if (signal !== undefined) {
      unwatch = onAbort(signal, () => {
        timer.cancel();
        reject(new ParleyError('CANCELLED', 'the call was cancelled while waiting'));
      });
    }
  });
}
