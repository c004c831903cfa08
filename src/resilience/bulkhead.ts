/**
 * @module resilience/bulkhead
 * Bulkheads: at most `maxConcurrent` calls run at once, `maxQueue` more wait (each no longer than
 * its deadline); beyond that, RESOURCE_EXHAUSTED at once. As middleware, per action on the serving
 * side (`actions`) and per dependency on the calling side (`dependencies`).
 */
import { ParleyError } from '../errors.ts';
import { type Clock, systemClock, type TimerHandle } from '../runtime/clock.ts';
import type { Middleware } from '../runtime/pipeline.ts';

export interface BulkheadLimits {
  maxConcurrent: number;
  /** Default 0: no waiting. */
  maxQueue?: number;
}

interface Waiter {
  start(): void;
  timer: TimerHandle | undefined;
}

export class Bulkhead {
  private running = 0;
  private readonly queue: Waiter[] = [];

  constructor(
    readonly name: string,
    private readonly limits: BulkheadLimits,
    private readonly clock: Clock = systemClock,
  ) {}

  get active(): number {
    return this.running;
  }

  get waiting(): number {
    return this.queue.length;
  }

  /**
   * Runs `work` when a slot is free. While it waits, its deadline or `signal` (the caller giving
   * up) takes it out of the queue: until 2026-12-03 a cancelled call kept its place, held others
   * out with RESOURCE_EXHAUSTED, and its handler ran later all the same.
   */
  run<T>(work: () => Promise<T>, deadline = Number.POSITIVE_INFINITY, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) return Promise.reject(cancelled(this.name, signal));
    const go = (): Promise<T> => {
      this.running++;
      let result: Promise<T>;
      try {
        result = work();
      } catch (error) {
        result = Promise.reject(error);
      }
      return result.finally(() => this.release());
    };
    if (this.running < this.limits.maxConcurrent) return go();
    if (this.queue.length >= (this.limits.maxQueue ?? 0)) {
      return Promise.reject(
        new ParleyError(
          'RESOURCE_EXHAUSTED',
          `${this.name}: ${this.running} running and ${this.queue.length} waiting`,
          {
            details: { bulkhead: this.name, running: this.running, waiting: this.queue.length },
          },
        ),
      );
    }
    return new Promise<T>((resolve, reject) => {
      const leave = (error: unknown) => {
        const i = this.queue.indexOf(waiter);
        if (i >= 0) this.queue.splice(i, 1);
        waiter.timer?.cancel();
        signal?.removeEventListener('abort', onAbort);
        reject(error);
      };
      const onAbort = () => leave(cancelled(this.name, signal as AbortSignal));
      const waiter: Waiter = {
        timer: undefined,
        start: () => {
          waiter.timer?.cancel();
          signal?.removeEventListener('abort', onAbort);
          go().then(resolve, reject);
        },
      };
      if (Number.isFinite(deadline)) {
        waiter.timer = this.clock.setTimeout(
          () =>
            leave(
              new ParleyError(
                'DEADLINE_EXCEEDED',
                `${this.name}: the deadline passed while waiting for a slot`,
              ),
            ),
          Math.max(0, deadline - this.clock.now()),
        );
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(waiter);
    });
  }

  private release(): void {
    this.running--;
    const next = this.queue.shift();
    next?.start();
  }
}

/** The caller's reason when it is a ParleyError (CANCELLED, DEADLINE_EXCEEDED), else CANCELLED. */
function cancelled(name: string, signal: AbortSignal): ParleyError {
  return signal.reason instanceof ParleyError
    ? signal.reason
    : new ParleyError('CANCELLED', `${name}: the caller gave up while waiting for a slot`);
}

export interface BulkheadOptions {
  /** Serving side, per action (`orders.place`) or service (`orders`). */
  actions?: Record<string, BulkheadLimits>;
  /** Calling side, per service called. */
  dependencies?: Record<string, BulkheadLimits>;
  clock?: Clock;
}

export function bulkheads(options: BulkheadOptions): Middleware {
  const clock = options.clock ?? systemClock;
  const served = new Map<string, Bulkhead>();
  const called = new Map<string, Bulkhead>();
  const get = (map: Map<string, Bulkhead>, key: string, limits: BulkheadLimits | undefined) => {
    if (limits === undefined) return undefined;
    let b = map.get(key);
    if (b === undefined) {
      b = new Bulkhead(key, limits, clock);
      map.set(key, b);
    }
    return b;
  };
  return {
    name: 'bulkhead',
    inbound: (next) => (call) => {
      const action = `${call.ctx.service}.${call.ctx.action}`;
      const key = options.actions?.[action] !== undefined ? action : call.ctx.service;
      const b = get(served, key, options.actions?.[key]);
      return b === undefined ? next(call) : b.run(() => next(call), call.ctx.deadline, call.ctx.signal);
    },
    outbound: (next) => (call) => {
      const b = get(called, call.service, options.dependencies?.[call.service]);
      return b === undefined ? next(call) : b.run(() => next(call), call.deadline, call.options.signal);
    },
  };
}
