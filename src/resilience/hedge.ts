/**
 * @module resilience/hedge
 * Hedged calls, as outbound middleware: when a safe call (idempotent, or with an idempotency key)
 * has not answered after `delayMs`, a second attempt starts, on another instance where one
 * exists; the first success wins and the other attempt is cancelled. Each hedge is charged to the
 * retry budget, so hedging cannot multiply the load on a slow dependency.
 */
import { ParleyError } from '../errors.ts';
import { onAbort } from '../runtime/abort.ts';
import { type Clock, systemClock } from '../runtime/clock.ts';
import type { Middleware, OutboundCall } from '../runtime/pipeline.ts';
import type { RetryBudget } from './retry.ts';

export interface HedgeOptions {
  /** Wait before the second attempt, ms. Default 50 (pick about the p95 latency). */
  delayMs?: number;
  /** Shared with `retry()` to charge hedges: `retry().budget`. */
  budget?: RetryBudget;
  clock?: Clock;
}

export function hedge(options: HedgeOptions = {}): Middleware {
  const clock = options.clock ?? systemClock;
  return {
    name: 'hedge',
    outbound: (next) => (call) => {
      const perCall = call.options.hedge;
      const safe = call.idempotent || call.options.idempotencyKey !== undefined;
      if (perCall === false || !safe || call.stream !== undefined) return next(call);
      const delay = perCall?.delayMs ?? options.delayMs ?? 50;
      return new Promise((resolve, reject) => {
        const controllers: AbortController[] = [];
        const unwatch =
          call.options.signal === undefined
            ? undefined
            : onAbort(call.options.signal, () => {
                for (const c of controllers) c.abort();
              });
        let settled = false;
        let running = 0;
        let lastError: unknown;
        let timer: { cancel(): void } | undefined;
        const finish = () => {
          settled = true;
          timer?.cancel();
          unwatch?.();
        };
        const start = (tried: readonly string[]): OutboundCall => {
          const controller = new AbortController();
          controllers.push(controller);
          const attempt: OutboundCall = {
            ...call,
            tried,
            options: { ...call.options, signal: controller.signal },
          };
          running++;
          next(attempt).then(
            (value) => {
              if (settled) return;
              finish();
              // The other attempt is no longer wanted.
              for (const c of controllers) if (c !== controller) c.abort();
              resolve(value);
            },
            (error: unknown) => {
              running--;
              lastError = error;
              // A failure is no slowness to hedge: with nothing else running it is the answer now
              // (it was held until the hedge's delay, past the call's deadline if that came first).
              if (settled || running > 0) return;
              finish();
              reject(error);
            },
          );
          return attempt;
        };
        const first = start(call.tried);
        // A second attempt that could only start at or after the deadline is never started.
        if (clock.now() + delay >= call.deadline) return;
        timer = clock.setTimeout(() => {
          timer = undefined;
          if (settled) return;
          if (running === 0) {
            finish();
            reject(lastError ?? new ParleyError('UNKNOWN', 'hedged call failed'));
            return;
          }
          if (options.budget !== undefined && !options.budget.tryRetry()) return;
          start(first.tried);
        }, delay);
      });
    },
  };
}
