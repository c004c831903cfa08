/**
 * @module resilience/fallback
 * Fallbacks, as outbound middleware: when a call fails because the target is unwell (not because
 * the caller erred, and not with a declared domain error), a fallback answers instead: the call's
 * own `fallback` option, else the one configured for its action or service.
 */
import { ParleyError } from '../errors.ts';
import type { Middleware, OutboundCall } from '../runtime/pipeline.ts';
import { countsAsFailure } from './breaker.ts';

export type Fallback = (error: ParleyError, call: OutboundCall) => unknown;

export function fallback(actions: Record<string, Fallback> = {}): Middleware {
  return {
    name: 'fallback',
    outbound: (next) => (call) =>
      next(call).catch((error: unknown) => {
        const e = ParleyError.from(error);
        const f: Fallback | undefined =
          call.options.fallback ?? actions[`${call.service}.${call.action}`] ?? actions[call.service];
        if (f === undefined || !(countsAsFailure(e) || e.code === 'DEADLINE_EXCEEDED')) throw error;
        return f(e, call);
      }),
  };
}
