/**
 * @module runtime/context
 * What a handler knows about the call it serves: who called, by when it must finish (and a signal
 * that aborts then), the trace it belongs to, its idempotency key, a logger bound to the request,
 * and `call` / `publish` / `notify`, which carry all of that into nested work. Costly parts (the
 * AbortSignal, the logger, ids) are made on first use: most handlers never touch them.
 */
import type { Logger } from 'pino';
import type { Delivery } from '../broker/broker.ts';
import type {
  ActionName,
  AnyContract,
  CallInputOf,
  CallResultOf,
  ErrorReasonOf,
  EventName,
  PayloadInputOf,
} from '../contract/contract.ts';
import { randomHex, uuidv7 } from '../envelope/ids.ts';
import { ParleyError } from '../errors.ts';
import { decodePrincipal, type Principal } from './principal.ts';
import { callerOf } from './wire.ts';

export interface CallOptions {
  /** Time budget in ms from now; the deadline is the earlier of this and the caller's own. */
  timeout?: number;
  /** Absolute deadline, epoch ms. */
  deadline?: number;
  /** Marks the call safe to retry: the callee dedupes by this key. */
  idempotencyKey?: string;
  /** Routes calls with the same key to the same instance (key-hash balancing). */
  key?: string;
  /** Cancels the call; the caller gets CANCELLED. */
  signal?: AbortSignal;
  /**
   * Who this call acts for, set by an edge that authenticated them (the gateway). Inside a
   * handler, calls and events carry the handler's principal unless this replaces it.
   */
  principal?: Principal;
  /** This call's retry policy, over the node's (with the `retry` middleware); `false`: no retries. */
  retry?: { maxAttempts?: number; backoff?: { initial?: number; max?: number; multiplier?: number } } | false;
  /** Hedging for this call (with the `hedge` middleware); `false`: none. */
  hedge?: { delayMs?: number } | false;
  /** What to answer when the call fails (with the `fallback` middleware). */
  fallback?: (error: unknown) => unknown;
}

export interface PublishOptions {
  /** Messages with the same key are handled in order within a consumer group. */
  key?: string;
  /** Deliver no sooner than this many ms from now. */
  delay?: number;
  /** Publisher dedupe: the same key within the broker's window is stored once. */
  idempotencyKey?: string;
}

export interface Caller {
  /** The calling node's id. */
  node: string;
  /** The calling service, when the call was made from inside a handler. */
  service: string | undefined;
  /** Who the call acts for, as authenticated at the edge (the gateway); undefined when nobody. */
  principal?: Principal | undefined;
}

/** The part of a node a context needs. Implemented by the node; not public API. */
export interface ContextRuntime {
  readonly logger: Logger;
  now(): number;
  /** A promise of the output; for an output-stream action, an async iterable of chunks. */
  callFrom(
    parent: Context,
    contract: AnyContract,
    action: string,
    input: unknown,
    options?: CallOptions,
  ): unknown;
  publishFrom(
    parent: Context,
    contract: AnyContract,
    event: string,
    payload: unknown,
    options?: PublishOptions,
  ): Promise<void>;
  notifyFrom(parent: Context, contract: AnyContract, event: string, payload: unknown): Promise<void>;
}

/** Sending events: durable (`publish`, needs a broker) and ephemeral (`notify`). */
export interface Emitter {
  /** A durable event: at least once to each consumer group subscribed to it. */
  publish<C extends AnyContract, K extends EventName<C>>(
    contract: C,
    event: K,
    payload: PayloadInputOf<C, K>,
    options?: PublishOptions,
  ): Promise<void>;
  /** An ephemeral notification: at most once to every live instance listening; never stored. */
  notify<C extends AnyContract, K extends EventName<C>>(
    contract: C,
    event: K,
    payload: PayloadInputOf<C, K>,
  ): Promise<void>;
}

export interface Context<Reason extends string = string> extends Emitter {
  /** This request's id (UUIDv7). */
  readonly id: string;
  /**
   * Who sent the request or event: the envelope's `source` (CloudEvents), undefined for a local
   * call. Unique together with `id` (CloudEvents: a producer makes `source` + `id` unique).
   */
  readonly source: string | undefined;
  readonly service: string;
  /** The action, or for an event handler the event type. */
  readonly action: string;
  readonly caller: Caller | undefined;
  /** Absolute deadline, epoch ms. */
  readonly deadline: number;
  /** Aborts at the deadline (reason: DEADLINE_EXCEEDED) or when the call is cancelled. */
  readonly signal: AbortSignal;
  /** W3C `traceparent` of this request's span. */
  readonly traceparent: string;
  readonly traceId: string;
  readonly idempotencyKey: string | undefined;
  /** The id of the first request in the chain. */
  readonly correlationId: string;
  /** The id of the message that caused this one, if any. */
  readonly causationId: string | undefined;
  /** pino logger bound to this request. */
  readonly log: Logger;
  /** For a durable event: which attempt this is, and a way to keep the lease for a long handler. */
  readonly delivery: Pick<Delivery, 'attempt' | 'extendLease'> | undefined;
  /** Milliseconds left before the deadline (never negative). */
  remaining(): number;
  call<C extends AnyContract, K extends ActionName<C>>(
    contract: C,
    action: K,
    input: CallInputOf<C, K>,
    options?: CallOptions,
  ): CallResultOf<C, K>;
  /** An error for one of the action's declared reasons, with the code the contract gives it. */
  fail(reason: Reason, message?: string, details?: Record<string, unknown>): ParleyError;
}

/** Context of a handler of action K of contract C: `fail` takes only its declared reasons. */
export type ActionContext<C extends AnyContract, K extends ActionName<C>> = Context<ErrorReasonOf<C, K>>;

export interface ContextInit {
  service: string;
  action: string;
  deadline: number;
  /** A local caller; a remote one comes as `source` and is parsed only if the handler asks. */
  caller?: Caller | undefined;
  source?: string | undefined;
  /** Remote requests carry these in the envelope. */
  id?: string | undefined;
  /** The envelope's `principal` attribute (JSON), read only if the handler asks. */
  principal?: string | undefined;
  traceparent?: string | undefined;
  correlationId?: string | undefined;
  causationId?: string | undefined;
  idempotencyKey?: string | undefined;
  /** Local calls inherit trace and correlation from the calling context. */
  parent?: Context | undefined;
  /** Declared errors of the action, for `fail`. */
  errors?: Readonly<Record<string, string>> | undefined;
  /** For a durable event: the broker's delivery. */
  delivery?: Delivery | undefined;
}

/** The principal (wire form) a context carries on to what it sends; undefined outside a handler. */
export function principalWireOf(ctx: Context | undefined): string | undefined {
  return ctx instanceof CallContext ? ctx.principalWire : undefined;
}

/** A W3C `traceparent` of version 00: trace id, parent span id, flags. */
export const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/**
 * An incoming `traceparent` worth continuing, as its TRACEPARENT match: W3C trace context makes a
 * trace or parent id of all zeros invalid (until 2026-12-03 an all-zero trace id was carried on).
 */
function incomingTrace(text: string | undefined): RegExpExecArray | undefined {
  const m = text === undefined ? null : TRACEPARENT.exec(text);
  if (m === null || m[1] === ZERO_TRACE || m[2] === ZERO_SPAN) return undefined;
  return m;
}

export class CallContext implements Context {
  readonly service: string;
  readonly action: string;
  readonly deadline: number;
  readonly idempotencyKey: string | undefined;
  readonly delivery: Delivery | undefined;
  readonly source: string | undefined;
  private _caller: Caller | undefined;
  /** The principal as it travels (JSON), decoded into `caller` only when asked for. */
  private readonly principalText: string | undefined;
  private principalRead = false;
  private readonly runtime: ContextRuntime;
  private readonly parent: Context | undefined;
  private readonly remoteTraceparent: string | undefined;
  private readonly givenCorrelationId: string | undefined;
  private readonly givenCausationId: string | undefined;
  private readonly errors: Readonly<Record<string, string>> | undefined;
  private _id: string | undefined;
  private _traceId: string | undefined;
  private _spanId: string | undefined;
  /** Trace flags: the tracer's (adoptSpan), else inherited from the parent or the incoming trace. */
  private _flags: string | undefined;
  private _log: Logger | undefined;
  private controller: AbortController | undefined;
  private abortReason: ParleyError | undefined;

  constructor(runtime: ContextRuntime, init: ContextInit) {
    this.runtime = runtime;
    // Fields are copied, not the init object kept, so the engine can drop the literal.
    this.parent = init.parent;
    this.remoteTraceparent = init.traceparent;
    this.givenCorrelationId = init.correlationId;
    this.givenCausationId = init.causationId;
    this.errors = init.errors;
    this.service = init.service;
    this.action = init.action;
    this.deadline = init.deadline;
    this._caller = init.caller;
    this.source = init.source;
    this.principalText = init.principal;
    this.idempotencyKey = init.idempotencyKey;
    this._id = init.id;
    this.delivery = init.delivery;
  }

  get caller(): Caller | undefined {
    if (this._caller === undefined && this.source !== undefined) this._caller = callerOf(this.source);
    if (!this.principalRead && this._caller !== undefined) {
      this.principalRead = true;
      if (this.principalText !== undefined) this._caller.principal = decodePrincipal(this.principalText);
    }
    return this._caller;
  }

  /** @internal The principal in its wire form, for the calls and events this handler makes. */
  get principalWire(): string | undefined {
    return this.principalText;
  }

  get id(): string {
    this._id ??= uuidv7(this.runtime.now());
    return this._id;
  }

  get correlationId(): string {
    return this.givenCorrelationId ?? this.parent?.correlationId ?? this.id;
  }

  get causationId(): string | undefined {
    return this.givenCausationId ?? this.parent?.id;
  }

  get traceId(): string {
    if (this._traceId === undefined) {
      const parent = this.parent;
      if (parent !== undefined) this._traceId = parent.traceId;
      else {
        const m = incomingTrace(this.remoteTraceparent);
        this._traceId = m?.[1] ?? randomHex(16);
        // Until 2026-12-03 every trace went on as sampled (01), whatever the caller had decided.
        this._flags ??= m === undefined || (Number.parseInt(m[3] as string, 16) & 1) === 1 ? '01' : '00';
      }
    }
    return this._traceId;
  }

  get traceparent(): string {
    const traceId = this.traceId;
    this._spanId ??= randomHex(8);
    this._flags ??= this.parent === undefined ? '01' : this.parent.traceparent.slice(-2);
    return `00-${traceId}-${this._spanId}-${this._flags}`;
  }

  /**
   * @internal The `traceparent` this request came with: the envelope's, or a local call's (its
   * client span's, else the calling context's). Undefined when it starts a trace.
   */
  get incomingTraceparent(): string | undefined {
    return this.remoteTraceparent ?? this.parent?.traceparent;
  }

  /**
   * @internal Takes a tracer's span as this request's own (tracing middleware, before the handler
   * runs): what the handler sends then carries that span as parent.
   */
  adoptSpan(traceId: string, spanId: string, sampled: boolean): void {
    this._traceId = traceId;
    this._spanId = spanId;
    this._flags = sampled ? '01' : '00';
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.abortReason !== undefined) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  get log(): Logger {
    this._log ??= this.runtime.logger.child({
      reqId: this.id,
      action: `${this.service}.${this.action}`,
      traceId: this.traceId,
    });
    return this._log;
  }

  /** Aborts the signal (once). Called by the node at the deadline or on cancellation. */
  abort(reason: ParleyError): void {
    if (this.abortReason !== undefined) return;
    this.abortReason = reason;
    this.controller?.abort(reason);
  }

  get aborted(): ParleyError | undefined {
    return this.abortReason;
  }

  remaining(): number {
    return Math.max(0, this.deadline - this.runtime.now());
  }

  call<C extends AnyContract, K extends ActionName<C>>(
    contract: C,
    action: K,
    input: CallInputOf<C, K>,
    options?: CallOptions,
  ): CallResultOf<C, K> {
    return this.runtime.callFrom(this, contract, action, input, options) as CallResultOf<C, K>;
  }

  publish<C extends AnyContract, K extends EventName<C>>(
    contract: C,
    event: K,
    payload: PayloadInputOf<C, K>,
    options?: PublishOptions,
  ): Promise<void> {
    return this.runtime.publishFrom(this, contract, event, payload, options);
  }

  notify<C extends AnyContract, K extends EventName<C>>(
    contract: C,
    event: K,
    payload: PayloadInputOf<C, K>,
  ): Promise<void> {
    return this.runtime.notifyFrom(this, contract, event, payload);
  }

  fail(reason: string, message?: string, details?: Record<string, unknown>): ParleyError {
    const code = this.errors?.[reason];
    if (code === undefined) {
      return new ParleyError(
        'INTERNAL',
        `${this.service}.${this.action} failed with undeclared reason ${reason}`,
        {
          reason,
        },
      );
    }
    const options = details === undefined ? { reason } : { reason, details };
    return new ParleyError(code as ParleyError['code'], message ?? reason, options);
  }
}
