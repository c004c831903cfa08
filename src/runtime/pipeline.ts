/**
 * @module runtime/pipeline
 * Middleware as an onion, `(next) => async (call) => result`, composed once when the node starts.
 * Outbound middleware wraps every call a node makes (tracing, metrics, deadline, retry, budget,
 * client bulkhead plug in here); inbound middleware wraps every call it serves, local or remote,
 * before validation and the handler (auth, server bulkhead, idempotency). Circuit breakers are not
 * wrappers: they admit instances to the balancer and hand out a permit per attempt, which the node
 * settles where the attempt's outcome is known, so they add no promise to a call. Event middleware
 * wraps every event handler the node runs (notifications and durable deliveries), before the
 * payload is validated (metrics and tracing plug in there); publish middleware wraps every event
 * the node sends, once its envelope is made.
 */
import type { BrokerPublishOptions } from '../broker/broker.ts';
import type { Envelope } from '../envelope/envelope.ts';
import { ParleyError } from '../errors.ts';
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
   * The W3C `traceparent` the call carries, when middleware made a span for it (tracing's client
   * span); else it carries its parent's, or none outside a handler.
   */
  traceparent?: string | undefined;
  /**
   * Endpoints already tried by this call (retries prefer another). Recorded only when more than
   * one endpoint could serve the call.
   */
  tried: readonly string[];
  /**
   * Set by a retry that sits right before the dispatch (nothing between them): the dispatch hands
   * a failure of this attempt to it, and the call's promise follows what it returns. The first
   * attempt then costs no promise of its own. The dispatch takes it (clears it) when it starts.
   * It is made once per middleware and told the call, not made per call. With a new closure per
   * call stored here, V8's allocation-site pretenuring moved the calls' objects to the old
   * generation, where they died (the heap grew 2 MB a scavenge, and full collections followed;
   * with `--no-allocation-site-pretenuring` the same code ran at full speed), and a call over TCP
   * in one process with `resilience()` cost 8.8 µs of CPU at c = 64 instead of 6.7 (6.5 without
   * policies).
   */
  recover?: ((error: unknown, call: OutboundCall) => Promise<unknown>) | undefined;
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

/**
 * One event handled by a subscription: `ctx.service` is the subscribing service, `ctx.action` the
 * event type, `ctx.delivery` the broker's delivery when `durable`.
 */
export interface EventCall {
  readonly ctx: Context;
  /** The payload, not validated yet. */
  readonly input: unknown;
  /** A durable subscription's delivery (the broker redelivers on failure), not a notification. */
  readonly durable: boolean;
}

export type EventCallHandler = (call: EventCall) => Promise<unknown>;
export type EventMiddleware = (next: EventCallHandler) => EventCallHandler;

/**
 * One event this node sends: a durable publish (to the broker, or to the outbox whose transaction
 * is open) or a notification. The envelope is made and its payload validated; middleware may set
 * its `traceparent` (tracing's producer span) and nothing else.
 */
export interface PublishCall {
  /** The handler's context it is sent from, when sent inside a handler. */
  readonly parent: Context | undefined;
  /** The service whose contract declares the event. */
  readonly service: string;
  readonly event: string;
  readonly envelope: Envelope;
  /** A publish (stored by the broker or an outbox), not a notification. */
  readonly durable: boolean;
  /** A publish's ordering key and delay (empty for a notification). */
  readonly options: BrokerPublishOptions;
}

/**
 * Settles when the event is handed over: a broker publish when the broker confirms it, an outbox
 * write or a notification at once. Inside an outbox's transaction a failure is thrown, not
 * returned (it must reach the transaction): publish middleware calls `next` synchronously and
 * lets what it throws through.
 */
export type PublishHandler = (call: PublishCall) => Promise<void>;
export type PublishMiddleware = (next: PublishHandler) => PublishHandler;

/** Leave for one attempt on the chosen instance: told the attempt's outcome exactly once. */
export interface AttemptPermit {
  success(): void;
  error(error: unknown): void;
}

/**
 * Asked before each attempt on the instance the balancer chose (`local`: in this process): a
 * permit to be settled with the outcome, nothing (no opinion), or an error that refuses the
 * attempt (it fails with that error, as if the instance had answered it).
 */
export type AttemptGate = (
  call: OutboundCall,
  nodeId: string,
  local: boolean,
) => AttemptPermit | Error | undefined;

/** Named wrappers; any may be absent. */
export interface Middleware {
  readonly name: string;
  /** Around every call this node makes, before an instance is chosen (retries, hedging, fallback). */
  readonly outbound?: OutboundMiddleware;
  /** Around every call this node serves (bulkheads, rate limits). */
  readonly inbound?: InboundMiddleware;
  /** Around every event handler this node runs (metrics). */
  readonly event?: EventMiddleware;
  /** Around every event this node publishes or notifies (producer spans, publish metrics). */
  readonly publish?: PublishMiddleware;
  /** Before each attempt on a chosen instance (circuit breakers). */
  readonly permit?: AttemptGate;
  /** May the balancer choose `nodeId` for this call now? (An open breaker says no.) */
  readonly admits?: (call: OutboundCall, nodeId: string, local: boolean) => boolean;
}

/**
 * `terminal` inside each middleware's layer of one kind (`pick`), the first middleware outermost;
 * `undefined` when no middleware has a layer of that kind.
 */
function layered<H>(
  middleware: readonly Middleware[],
  pick: (m: Middleware) => ((next: H) => H) | undefined,
  terminal: H,
): H | undefined {
  let next: H | undefined;
  for (let i = middleware.length - 1; i >= 0; i--) {
    const wrap = pick(middleware[i] as Middleware);
    if (wrap !== undefined) next = wrap(next ?? terminal);
  }
  return next;
}

/** The first middleware is the outermost layer. */
export function composeOutbound(
  middleware: readonly Middleware[],
  terminal: OutboundHandler,
): OutboundHandler {
  DISPATCH.add(terminal);
  return layered(middleware, (m) => m.outbound, terminal) ?? terminal;
}

const DISPATCH = new WeakSet<OutboundHandler>();

/** Whether `next` is the node's dispatch itself (no other middleware between): see `recover`. */
export function isDispatch(next: OutboundHandler): boolean {
  return DISPATCH.has(next);
}

const RELEASED = new ParleyError('CANCELLED', 'the attempt was refused by another gate');

/**
 * The gates of all middleware as one (undefined when none). When one refuses, the permits taken
 * before it are given back with CANCELLED, which a breaker ignores.
 */
export function composeGates(middleware: readonly Middleware[]): AttemptGate | undefined {
  const gates = middleware.flatMap((m) => (m.permit === undefined ? [] : [m.permit]));
  if (gates.length <= 1) return gates[0];
  return (call, nodeId, local) => {
    const taken: AttemptPermit[] = [];
    for (const gate of gates) {
      const p = gate(call, nodeId, local);
      if (p instanceof Error) {
        for (const t of taken) t.error(RELEASED);
        return p;
      }
      if (p !== undefined) taken.push(p);
    }
    if (taken.length <= 1) return taken[0];
    return {
      success: () => {
        for (const t of taken) t.success();
      },
      error: (error) => {
        for (const t of taken) t.error(error);
      },
    };
  };
}

export function composeInbound(middleware: readonly Middleware[], terminal: InboundHandler): InboundHandler {
  return layered(middleware, (m) => m.inbound, terminal) ?? terminal;
}

/** The event middleware around `terminal`, outermost first; `undefined` when there is none. */
export function composeEvents(
  middleware: readonly Middleware[],
  terminal: EventCallHandler,
): EventCallHandler | undefined {
  return layered(middleware, (m) => m.event, terminal);
}

/** The publish middleware around `terminal`, outermost first; `undefined` when there is none. */
export function composePublish(
  middleware: readonly Middleware[],
  terminal: PublishHandler,
): PublishHandler | undefined {
  return layered(middleware, (m) => m.publish, terminal);
}
