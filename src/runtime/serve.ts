/**
 * @module runtime/serve
 * The receiving side of a node: the table of local actions and subscriptions, the inbound
 * pipeline, deadline enforcement, the in-flight count that `stop()` drains, and decoding of
 * requests and notifications that arrive from the transport.
 */
import type { Logger } from 'pino';
import type { Delivery } from '../broker/broker.ts';
import { type Codec, codecOfFrame } from '../codec/codec.ts';
import { createJsonCodec } from '../codec/json.ts';
import { createMsgpackCodec } from '../codec/msgpack.ts';
import type { ActionDef, AnyContract } from '../contract/contract.ts';
import { validate, validOutput } from '../contract/validate.ts';
import { assertEnvelope, type Envelope } from '../envelope/envelope.ts';
import { ParleyError } from '../errors.ts';
import type { RequestSignal } from '../transport/transport.ts';
import { onAbort } from './abort.ts';
import type { Clock } from './clock.ts';
import { CallContext, type Context, type ContextRuntime } from './context.ts';
import { type DeadlineWheel, Expiring } from './deadlines.ts';
import { NOTIFICATION_BATCH, unbatch } from './notify-batch.ts';
import {
  composeEvents,
  composeInbound,
  type EventCallHandler,
  type InboundCall,
  type Middleware,
} from './pipeline.ts';
import type { Service, Subscription } from './service.ts';
import { checked, PAGE, StreamHost } from './streams.ts';
import { encodeReply, splitType } from './wire.ts';

export interface LocalAction {
  readonly service: string;
  readonly name: string;
  readonly def: ActionDef;
  /** The inbound pipeline and handler: a value when everything ran synchronously, else a promise. */
  readonly chain: (call: InboundCall) => unknown;
}

export interface ServerDeps {
  readonly runtime: ContextRuntime;
  readonly clock: Clock;
  readonly codec: Codec;
  readonly deadlines: DeadlineWheel;
  readonly logger: Logger;
  readonly middleware: readonly Middleware[];
  readonly validateInput: boolean;
  readonly validateOutput: boolean;
  readonly defaultTimeout: number;
  readonly maxPayload: () => number;
}

/** A subscription's handler behind its payload validation, and inside the event middleware. */
interface EventRun {
  direct(data: unknown, ctx: Context): unknown;
  chain: EventCallHandler | undefined;
}

export class Server {
  private readonly actions = new Map<string, Map<string, LocalAction>>();
  private readonly ephemeral = new Map<string, { sub: Subscription; owner: string }[]>();
  /**
   * Each subscription's handler with its payload validation, and the same inside the event
   * middleware when there is any; made once per subscription.
   */
  private readonly eventRuns = new Map<Subscription, EventRun>();
  private readonly known = { json: createJsonCodec(), msgpack: createMsgpackCodec() };
  readonly streams: StreamHost;
  private inflight = 0;
  private waiters: (() => void)[] = [];
  /** `accepting` false: new calls from outside are refused with UNAVAILABLE. */
  accepting = false;

  constructor(
    private readonly deps: ServerDeps,
    services: readonly Service[],
  ) {
    this.streams = new StreamHost({
      deadlines: deps.deadlines,
      now: () => deps.clock.now(),
      maxPayload: deps.maxPayload,
      opened: () => void this.inflight++,
      closed: () => this.done(),
    });
    for (const service of services) this.add(service);
  }

  private add(service: Service): void {
    const contract: AnyContract = service.contract;
    if (this.actions.has(contract.name)) {
      throw new ParleyError('ALREADY_EXISTS', `service ${contract.name} is already on this node`);
    }
    const table = new Map<string, LocalAction>();
    for (const [name, def] of Object.entries(contract.actions) as [string, ActionDef][]) {
      const handler = (service.actions as Record<string, (input: unknown, ctx: unknown) => unknown>)[name];
      if (handler === undefined) continue;
      const what = `${contract.name}.${name}`;
      const inputWhat = `input of ${what}`; // built once, not per call
      const { validateInput, validateOutput } = this.deps;
      const checkOutput = (output: unknown): unknown => validOutput(def.output, output, what);
      // Returns the handler's value as is when the handler is synchronous: no promise, no timer.
      const unary: LocalAction['chain'] = (call) => {
        const input = validateInput ? validate(def.input, call.input, inputWhat) : call.input;
        const output = handler(input, call.ctx);
        if (!validateOutput) return output;
        return isThenable(output) ? output.then(checkOutput) : checkOutput(output);
      };
      // An output stream: the handler's iterable, its chunks checked on the way out if asked.
      const outputStream: LocalAction['chain'] = (call) => {
        const input = validateInput ? validate(def.input, call.input, inputWhat) : call.input;
        const output = handler(input, call.ctx);
        return validateOutput ? checked(output as AsyncIterable<unknown>, checkOutput) : output;
      };
      // An input stream: chunks are validated one by one as the handler reads them (a remote
      // stream's chunks were validated when they arrived).
      const inputStream: LocalAction['chain'] = (call) => {
        const chunks = call.input as AsyncIterable<unknown>;
        const check = (chunk: unknown) => validate(def.input, chunk, inputWhat);
        return handler(validateInput && call.local ? checked(chunks, check) : chunks, call.ctx);
      };
      const terminal = def.stream === 'output' ? outputStream : def.stream === 'input' ? inputStream : unary;
      const hasInbound = this.deps.middleware.some((m) => m.inbound !== undefined);
      const chain = hasInbound
        ? composeInbound(this.deps.middleware, async (call) => terminal(call))
        : terminal;
      table.set(name, {
        service: contract.name,
        name,
        def,
        chain,
      });
    }
    this.actions.set(contract.name, table);
    for (const sub of service.subscriptions) {
      this.eventRunOf(sub);
      if (!sub.options.ephemeral) continue;
      const list = this.ephemeral.get(sub.event) ?? [];
      list.push({ sub, owner: contract.name });
      this.ephemeral.set(sub.event, list);
    }
  }

  action(service: string, name: string): LocalAction | undefined {
    return this.actions.get(service)?.get(name);
  }

  /** Event types whose notifications `service` listens to. */
  notificationTypes(service: string): string[] {
    const out: string[] = [];
    for (const [type, subs] of this.ephemeral) if (subs.some((s) => s.owner === service)) out.push(type);
    return out;
  }

  /**
   * Runs one call through the inbound pipeline with its deadline enforced. The returned promise
   * settles at the latest at the deadline; the handler itself may run on (its signal is aborted),
   * and counts as in flight until it really ends.
   */
  serve(
    action: LocalAction,
    ctx: CallContext,
    input: unknown,
    local: boolean,
    signal?: RequestSignal,
  ): Promise<unknown> {
    // A local call's deadline was checked by the caller a moment ago, on the same clock.
    return this.run(ctx, () => action.chain({ ctx, input, local }), signal, !local);
  }

  private run(
    ctx: CallContext,
    work: () => unknown,
    signal?: RequestSignal,
    checkDeadline = true,
  ): Promise<unknown> {
    if (signal?.aborted) return Promise.reject(cancelled(ctx));
    if (checkDeadline && ctx.deadline <= this.deps.clock.now()) return Promise.reject(deadlineExceeded(ctx));
    this.inflight++;
    let result: unknown;
    try {
      result = work();
    } catch (error) {
      this.done();
      return Promise.reject(ParleyError.from(error));
    }
    if (!isThenable(result)) {
      // Finished before it could be late or cancelled.
      this.done();
      return Promise.resolve(result);
    }
    return this.race(ctx, result, signal);
  }

  /** Settles with `work`, or earlier with DEADLINE_EXCEEDED / CANCELLED (the ctx signal aborts). */
  private race(
    ctx: CallContext,
    work: PromiseLike<unknown>,
    signal: RequestSignal | undefined,
  ): Promise<unknown> {
    const race = new Race(ctx, this);
    const promise = new Promise<unknown>(race.capture);
    this.deps.deadlines.add(ctx.deadline, race);
    if (signal !== undefined) race.unwatch = onAbort(signal, race.onCallerAbort);
    work.then(race.ok, race.fail);
    return promise;
  }

  /** One piece of in-flight work ended. */
  done(): void {
    if (--this.inflight === 0) this.wake();
  }

  inFlight(): number {
    return this.inflight;
  }

  /** Resolves when nothing is in flight. */
  idle(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** A request frame from the transport → a reply frame. Never rejects. */
  async onRequest(frame: Uint8Array, signal?: RequestSignal): Promise<Uint8Array> {
    // Answer in the codec the request came in, so nodes with different codecs can talk.
    const codec = codecOfFrame(frame, this.known, this.deps.codec);
    const max = this.deps.maxPayload();
    let env: Envelope;
    try {
      env = assertEnvelope(codec.decode(frame));
    } catch (error) {
      return encodeReply(
        codec,
        { ok: false, error: ParleyError.from(error, 'INVALID_ARGUMENT').toWire() },
        max,
      );
    }
    try {
      const output = await this.serveEnvelope(env, signal);
      return encodeReply(codec, { ok: true, data: output }, max);
    } catch (error) {
      const e = ParleyError.from(error);
      // The caller gets INTERNAL without the stack; the stack stays here, in the log. (By now the
      // pipeline has wrapped the thrown value, so `unexpected` is what tells a bug from a decision.)
      if (e.unexpected) {
        this.deps.logger.error(
          { err: e.cause ?? e, type: env.type, reqId: env.id },
          'handler failed unexpectedly',
        );
      }
      return encodeReply(codec, { ok: false, error: e.toWire() }, max);
    }
  }

  private serveEnvelope(env: Envelope, signal?: RequestSignal): Promise<unknown> {
    const parts = splitType(env.type);
    // Pages of a stream already open here are served while draining, too.
    if (parts?.[0] === '$stream') return this.streams.operate(parts[1], env.data);
    const action = parts === undefined ? undefined : this.action(parts[0], parts[1]);
    if (action === undefined) {
      return Promise.reject(
        new ParleyError('UNIMPLEMENTED', `no action ${env.type} on this node`, {
          details: { type: env.type },
        }),
      );
    }
    if (!this.accepting) {
      return Promise.reject(new ParleyError('UNAVAILABLE', `node is not taking calls for ${env.type}`));
    }
    const deadline = env.deadline ?? this.deps.clock.now() + (action.def.timeout ?? this.deps.defaultTimeout);
    const ctx = this.contextOf(env, {
      service: action.service,
      action: action.name,
      deadline,
      errors: action.def.errors,
    });
    if (action.def.stream === 'output') {
      return this.serve(action, ctx, env.data, false, signal).then((iterable) =>
        this.streams.openOutput(ctx, iterable, PAGE),
      );
    }
    if (action.def.stream === 'input') {
      const what = `input of ${env.type}`;
      const check = this.deps.validateInput
        ? (chunk: unknown) => validate(action.def.input, chunk, what)
        : undefined;
      return Promise.resolve(
        this.streams.openInput(ctx, (queue) => this.serve(action, ctx, queue, false), check),
      );
    }
    return this.serve(action, ctx, env.data, false, signal);
  }

  /** The context of a request or event that arrived as an envelope: ids and trace come with it. */
  private contextOf(
    env: Envelope,
    at: {
      service: string;
      action: string;
      deadline: number;
      errors: Readonly<Record<string, string>> | undefined;
    },
    delivery?: Delivery,
  ): CallContext {
    return new CallContext(this.deps.runtime, {
      service: at.service,
      action: at.action,
      deadline: at.deadline,
      errors: at.errors,
      delivery,
      source: env.source,
      principal: env.principal,
      id: env.id,
      traceparent: env.traceparent,
      correlationId: env.correlationid,
      causationId: env.causationid,
      idempotencyKey: env.idempotencykey,
    });
  }

  /** A notification frame: delivered to this node's ephemeral subscribers; failures are logged. */
  onBroadcast(frame: Uint8Array, from: string): void {
    let env: Envelope;
    let batch: Envelope[] | undefined;
    try {
      env = assertEnvelope(codecOfFrame(frame, this.known, this.deps.codec).decode(frame));
      if (env.type === NOTIFICATION_BATCH) {
        // One line per batch however many of its items are malformed: the first reason, and a count.
        let dropped = 0;
        let first: { index: number; reason: string } | undefined;
        batch = unbatch(
          env,
          (type) => this.ephemeral.has(type),
          (reason, index) => {
            dropped++;
            first ??= { index, reason };
          },
        );
        if (first !== undefined) {
          this.deps.logger.warn(
            { from, batch: env.id, dropped, first },
            'notifications dropped: malformed items in a batch',
          );
        }
      }
    } catch (error) {
      this.deps.logger.warn({ err: error, from }, 'notification dropped: malformed frame');
      return;
    }
    if (batch === undefined) this.deliverNotification(env);
    else for (const one of batch) this.deliverNotification(one);
  }

  deliverNotification(env: Envelope): void {
    const subs = this.ephemeral.get(env.type);
    if (subs === undefined || !this.accepting) return;
    for (const { sub, owner } of subs) void this.runEventHandler(sub, env, owner);
  }

  private eventRunOf(sub: Subscription): EventRun {
    let found = this.eventRuns.get(sub);
    if (found === undefined) {
      const def = sub.contract.events[sub.event] as { schema: ActionDef['input'] };
      const what = `payload of ${sub.event}`;
      const direct = (data: unknown, ctx: Context) => sub.handler(validate(def.schema, data, what), ctx);
      const chain = composeEvents(this.deps.middleware, async (call) => direct(call.input, call.ctx));
      found = { direct, chain };
      this.eventRuns.set(sub, found);
    }
    return found;
  }

  /**
   * Validates an event's payload and runs one subscription's handler with a context and deadline.
   * The promise resolves with whatever the handler returned, which means nothing (no `then` to
   * drop it: one promise a delivery less); an ephemeral handler's failure is logged here.
   */
  runEventHandler(sub: Subscription, env: Envelope, service: string, delivery?: Delivery): Promise<unknown> {
    const deadline = this.deps.clock.now() + (sub.options.timeout ?? this.deps.defaultTimeout);
    const ctx = this.contextOf(env, { service, action: env.type, deadline, errors: undefined }, delivery);
    const { direct, chain } = this.eventRunOf(sub);
    const work = this.run(
      ctx,
      chain === undefined
        ? () => direct(env.data, ctx)
        : () => chain({ ctx, input: env.data, durable: !sub.options.ephemeral }),
    );
    if (!sub.options.ephemeral) return work;
    return work.catch((error: unknown) => {
      this.deps.logger.warn({ err: error, type: env.type, id: env.id }, 'notification handler failed');
    });
  }
}

/**
 * One call racing its deadline and its caller's cancellation. It is its own deadline entry and its
 * own abort listener, so a call in flight costs this object and its callbacks.
 */
class Race extends Expiring {
  private resolve: (value: unknown) => void = noop;
  private reject: (error: unknown) => void = noop;
  private settled = false;

  constructor(
    private readonly ctx: CallContext,
    private readonly server: { done(): void },
  ) {
    super();
  }

  readonly capture = (resolve: (value: unknown) => void, reject: (error: unknown) => void): void => {
    this.resolve = resolve;
    this.reject = reject;
  };

  /** The work finished. The in-flight count drops only now, even if the deadline won the race. */
  readonly ok = (output: unknown): void => {
    this.finish();
    this.resolve(output);
  };

  readonly fail = (error: unknown): void => {
    this.finish();
    this.reject(ParleyError.from(error));
  };

  /** The deadline passed, or the node is stopping (`reason`). The handler may run on. */
  expire(reason?: unknown): void {
    const e = reason instanceof ParleyError ? reason : deadlineExceeded(this.ctx);
    this.ctx.abort(e);
    this.reject(e);
  }

  /** Stops watching the caller's signal. */
  unwatch: (() => void) | undefined;

  /** The caller's signal aborted. */
  readonly onCallerAbort = (): void => {
    const e = cancelled(this.ctx);
    this.ctx.abort(e);
    this.reject(e);
  };

  private finish(): void {
    if (this.settled) return;
    this.settled = true;
    this.cancel();
    this.unwatch?.();
    this.server.done();
  }
}

function noop(): void {}

export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}

function cancelled(ctx: CallContext): ParleyError {
  return new ParleyError('CANCELLED', `${ctx.service}.${ctx.action} was cancelled by the caller`);
}

function deadlineExceeded(ctx: CallContext): ParleyError {
  return new ParleyError('DEADLINE_EXCEEDED', `${ctx.service}.${ctx.action} exceeded its deadline`);
}
