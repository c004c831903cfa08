/**
 * @module runtime/pipeline
 * Middleware as an onion, `(next) => async (call) => result`, composed once when the node starts.
 * Outbound middleware wraps every call a node makes (tracing, metrics, deadline, retry, budget,
 * breaker, client bulkhead plug in here); inbound middleware wraps every call it serves, local or
 * remote, before validation and the handler (auth, server bulkhead, idempotency).
 */
import type { CallOptions, Context } from './context.ts';

export interface OutboundCall {
  readonly service: string;
  readonly action: string;
  input: unknown;
  /** Absolute deadline, epoch ms. */
  deadline: number;
  /** Declared `idempotent` in the contract: safe to retry. */
  readonly idempotent: boolean;
  /** A streaming action: the input (`input`) or the result (`output`) is a stream of chunks. */
  readonly stream?: 'output' | 'input' | undefined;
  readonly options: CallOptions;
  /** The context this call is made from, when made inside a handler. */
  readonly parent: Context | undefined;
  /**
   * Endpoints already tried by this call (retries prefer another). Recorded only when more than
   * one endpoint could serve the call.
   */
  tried: readonly string[];
}

export type OutboundHandler = (call: OutboundCall) => Promise<unknown>;
export type OutboundMiddleware = (next: OutboundHandler) => OutboundHandler;

export interface InboundCall {
  readonly ctx: Context;
  input: unknown;
  /** True on the in-process fast path (no codec, no transport). */
  readonly local: boolean;
}

export type InboundHandler = (call: InboundCall) => Promise<unknown>;
export type InboundMiddleware = (next: InboundHandler) => InboundHandler;

/** One attempt of a call on the instance the balancer chose (`local`: in this process). */
export type AttemptHandler = (call: OutboundCall, nodeId: string, local: boolean) => Promise<unknown>;
export type AttemptMiddleware = (next: AttemptHandler) => AttemptHandler;

/** Named wrappers; any may be absent. */
export interface Middleware {
  readonly name: string;
  /** Around every call this node makes, before an instance is chosen (retries, hedging, fallback). */
  readonly outbound?: OutboundMiddleware;
  /** Around every call this node serves (bulkheads, rate limits). */
  readonly inbound?: InboundMiddleware;
  /** Around each attempt on a chosen instance (circuit breakers). */
  readonly attempt?: AttemptMiddleware;
  /** May the balancer choose `nodeId` for this call now? (An open breaker says no.) */
  readonly admits?: (call: OutboundCall, nodeId: string, local: boolean) => boolean;
}

/** The first middleware is the outermost layer. */
export function composeOutbound(
  middleware: readonly Middleware[],
  terminal: OutboundHandler,
): OutboundHandler {
  let next = terminal;
  for (let i = middleware.length - 1; i >= 0; i--) {
    const wrap = middleware[i]?.outbound;
    if (wrap !== undefined) next = wrap(next);
  }
  return next;
}

export function composeAttempt(middleware: readonly Middleware[], terminal: AttemptHandler): AttemptHandler {
  let next = terminal;
  for (let i = middleware.length - 1; i >= 0; i--) {
    const wrap = middleware[i]?.attempt;
    if (wrap !== undefined) next = wrap(next);
  }
  return next;
}

export function composeInbound(middleware: readonly Middleware[], terminal: InboundHandler): InboundHandler {
  let next = terminal;
  for (let i = middleware.length - 1; i >= 0; i--) {
    const wrap = middleware[i]?.inbound;
    if (wrap !== undefined) next = wrap(next);
  }
  return next;
}
