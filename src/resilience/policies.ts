/**
 * @module resilience/policies
 * The default policy stack: `createNode({ middleware: resilience() })`. Deadlines are always on
 * (every call has one); this adds budgeted retries of safe calls and a circuit breaker per
 * instance. Hedging, bulkheads, fallbacks and rate limits are opt-in: they change what a call
 * costs or answers, so they are asked for by name.
 */
import type { Clock } from '../runtime/clock.ts';
import type { Middleware } from '../runtime/pipeline.ts';
import { type BreakerOptions, circuitBreakers } from './breaker.ts';
import { type RetryOptions, retry } from './retry.ts';

export interface ResilienceOptions {
  retry?: RetryOptions | false;
  breaker?: (BreakerOptions & { services?: Record<string, BreakerOptions> }) | false;
  clock?: Clock;
}

export function resilience(options: ResilienceOptions = {}): Middleware[] {
  const clock = options.clock === undefined ? {} : { clock: options.clock };
  const stack: Middleware[] = [];
  if (options.retry !== false) stack.push(retry({ ...clock, ...options.retry }));
  if (options.breaker !== false) stack.push(circuitBreakers({ ...clock, ...options.breaker }));
  return stack;
}
