/**
 * @module runtime/node
 * A node is one process's runtime: it hosts services, makes typed clients, and owns its transport
 * and broker. Calls go through the outbound pipeline to the balancer; a call to a service in this
 * process takes the fast path (no codec, no transport, same validation and pipeline).
 */
import { hostname } from 'node:os';
import { type Logger, pino } from 'pino';
import type { Broker } from '../broker/broker.ts';
import type { Outbox } from '../broker/outbox.ts';
import type { Codec } from '../codec/codec.ts';
import type { ActionDef, AnyContract, EventName, PayloadInputOf } from '../contract/contract.ts';
import { randomHex } from '../envelope/ids.ts';
import { ParleyError } from '../errors.ts';
import { createMemoryNetwork } from '../transport/memory.ts';
import { nodeInfoOf } from '../transport/node-info.ts';
import type { NodeInfo, Transport } from '../transport/transport.ts';
import { type Balancer, createBalancer } from './balancer.ts';
import { type Client, createClient } from './client.ts';
import { type Clock, systemClock } from './clock.ts';
import { subscribeDurable } from './consumers.ts';
import {
  CallContext,
  type CallOptions,
  type Context,
  type ContextRuntime,
  type Emitter,
  type PublishOptions,
} from './context.ts';
import { DeadlineWheel } from './deadlines.ts';
import { EventsOut } from './events-out.ts';
import { type NodeOptions, resolveCodec } from './node-options.ts';
import {
  type AttemptGate,
  type AttemptPermit,
  composeGates,
  composeOutbound,
  type OutboundCall,
  type OutboundHandler,
} from './pipeline.ts';
import { type Endpoint, Registry } from './registry.ts';
import { callRemote, principalOfCall, type RemoteDeps } from './remote.ts';
import { callRemoteInput, openRemoteOutput } from './remote-streams.ts';
import { Server } from './serve.ts';
import type { Service } from './service.ts';
import { lazyStream } from './streams.ts';

export type NodeState = 'created' | 'starting' | 'running' | 'stopping' | 'stopped';

export type { NodeOptions };

export interface ParleyNode extends Emitter {
  readonly id: string;
  readonly state: NodeState;
  readonly registry: Registry;
  readonly logger: Logger;
  /** The node's broker, when it has one: durable events, dead letters, and where it keeps one, its log. */
  readonly broker: Broker | undefined;
  start(): Promise<void>;
  /** Graceful: leaves discovery, stops taking work, drains in-flight work (bounded), closes. */
  stop(): Promise<void>;
  client<C extends AnyContract>(contract: C): Client<C>;
  /** Work in flight on this node (calls and event handlers it serves). */
  inFlight(): number;
}

export function createNode(options: NodeOptions = {}): ParleyNode {
  return new NodeImpl(options);
}

class NodeImpl implements ParleyNode, ContextRuntime {
  readonly id: string;
  readonly logger: Logger;
  readonly registry: Registry;
  state: NodeState = 'created';
  private readonly clock: Clock;
  private readonly codec: Codec;
  private readonly transport: Transport;
  readonly broker: Broker | undefined;
  private readonly services: readonly Service[];
  private readonly server: Server;
  private readonly deadlines: DeadlineWheel;
  private readonly balancer: Balancer;
  private readonly outbound: OutboundHandler;
  private readonly gate: AttemptGate | undefined;
  private readonly admits: ((call: OutboundCall, nodeId: string, local: boolean) => boolean) | undefined;
  private readonly hasOutboundMiddleware: boolean;
  private readonly defaultTimeout: number;
  private readonly stopTimeout: number;
  private readonly labels: Record<string, string> | undefined;
  private readonly consumers: { close(): Promise<void> }[] = [];
  private stopping: Promise<void> | undefined;
  private readonly outboxes: readonly Outbox[];
  private readonly events: EventsOut;
  private relays: { stop(): Promise<void> }[] = [];
  private readonly remoteDeps: RemoteDeps;

  constructor(options: NodeOptions) {
    this.id = options.id ?? `${hostname()}-${process.pid}-${randomHex(3)}`;
    this.clock = options.clock ?? systemClock;
    this.codec = resolveCodec(options.codec);
    this.transport = options.transport ?? createMemoryNetwork({ clock: this.clock }).transport();
    this.broker = options.broker;
    this.outboxes =
      options.outbox === undefined ? [] : Array.isArray(options.outbox) ? options.outbox : [options.outbox];
    this.services = options.services ?? [];
    this.labels = options.labels;
    this.logger =
      options.logger ??
      pino({ level: options.logLevel ?? process.env.PARLEY_LOG_LEVEL ?? 'info', base: { node: this.id } });
    this.defaultTimeout = options.defaultTimeout ?? 10_000;
    this.stopTimeout = options.stopTimeout ?? 10_000;
    this.registry = new Registry(this.id);
    this.deadlines = new DeadlineWheel(this.clock);
    this.balancer =
      typeof options.balancer === 'function' ? options.balancer : createBalancer(options.balancer);
    const middleware = options.middleware ?? [];
    this.server = new Server(
      {
        runtime: this,
        clock: this.clock,
        codec: this.codec,
        deadlines: this.deadlines,
        logger: this.logger,
        middleware,
        validateInput: options.validateInput ?? true,
        validateOutput: options.validateOutput ?? false,
        defaultTimeout: this.defaultTimeout,
        maxPayload: () => this.transport.maxPayload,
      },
      this.services,
    );
    this.outbound = composeOutbound(middleware, (call) => this.dispatch(call));
    this.gate = composeGates(middleware);
    const admitting = middleware.flatMap((m) => (m.admits === undefined ? [] : [m.admits]));
    this.admits =
      admitting.length <= 1
        ? admitting[0]
        : (call, nodeId, local) => {
            for (const admits of admitting) if (!admits(call, nodeId, local)) return false;
            return true;
          };
    this.hasOutboundMiddleware = middleware.some((m) => m.outbound !== undefined);
    this.events = new EventsOut({
      nodeId: this.id,
      clock: this.clock,
      codec: this.codec,
      transport: this.transport,
      broker: this.broker,
      outboxes: this.outboxes,
      logger: this.logger,
      deliverLocally: (env) => this.server.deliverNotification(env),
      middleware,
    });
    this.remoteDeps = {
      nodeId: this.id,
      clock: this.clock,
      codec: this.codec,
      transport: this.transport,
      deadlines: this.deadlines,
    };
    const durable = this.services.some((s) => s.subscriptions.some((sub) => !sub.options.ephemeral));
    if (durable && this.broker === undefined) {
      throw new ParleyError(
        'FAILED_PRECONDITION',
        'services subscribe to durable events but the node has no broker',
      );
    }
  }

  now(): number {
    return this.clock.now();
  }

  private info(status: NodeInfo['status']): NodeInfo {
    const info: NodeInfo = {
      id: this.id,
      status,
      codec: this.codec.name,
      services: this.services.map((s) => ({
        name: s.contract.name,
        version: s.contract.version,
        actions: Object.keys(s.contract.actions),
        notifications: this.server.notificationTypes(s.contract.name),
      })),
    };
    if (this.labels !== undefined) info.labels = this.labels;
    return info;
  }

  async start(): Promise<void> {
    if (this.state !== 'created')
      throw new ParleyError('FAILED_PRECONDITION', `node ${this.id} is ${this.state}`);
    this.state = 'starting';
    const self = this.info('up');
    this.registry.upsert(self);
    this.server.accepting = true;
    try {
      await this.transport.start(self, {
        onRequest: (frame, _from, signal) => this.server.onRequest(frame, signal),
        onBroadcast: (frame, from) => this.server.onBroadcast(frame, from),
        onNodeUp: (info) => {
          // Transports check what they receive; this holds for one written elsewhere too.
          const checked = nodeInfoOf(info);
          if (typeof checked === 'string') this.logger.warn(`ignored a node's info: ${checked}`);
          else this.registry.upsert(checked);
        },
        onNodeDown: (nodeId) => this.registry.remove(nodeId),
      });
      const broker = this.broker;
      if (broker !== undefined) {
        const { server, clock, defaultTimeout } = this;
        for (const service of this.services)
          this.consumers.push(...(await subscribeDurable(broker, server, service, clock, defaultTimeout)));
        this.relays = this.outboxes.map((o) =>
          o.startRelay(broker, { clock: this.clock, log: (m) => this.logger.warn(`outbox: ${m}`) }),
        );
      }
    } catch (error) {
      this.server.accepting = false;
      this.state = 'stopped';
      await Promise.allSettled([this.transport.stop(), ...this.consumers.map((c) => c.close())]);
      throw error;
    }
    this.state = 'running';
    this.logger.debug({ services: self.services.map((s) => s.name) }, 'node started');
  }

  stop(): Promise<void> {
    if (this.stopping !== undefined) return this.stopping;
    this.stopping = this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    if (this.state === 'created') {
      this.state = 'stopped';
      return;
    }
    this.state = 'stopping';
    // Leave discovery first so peers stop routing here, then stop taking new work.
    const draining = this.info('draining');
    this.registry.upsert(draining);
    await this.transport.announce(draining).catch(() => undefined);
    this.server.accepting = false;
    // Consumers stop taking messages now; their close waits for their handlers, so it is bounded
    // by the same stop timeout as calls.
    const consumersClosed = Promise.allSettled(this.consumers.map((c) => c.close()));
    const drained = Promise.all([consumersClosed, this.server.idle()]).then(() => 'idle' as const);
    let timer: { cancel(): void } | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = this.clock.setTimeout(() => resolve('timeout'), this.stopTimeout);
    });
    const outcome = await Promise.race([drained, timedOut]);
    timer?.cancel();
    if (outcome === 'timeout') {
      this.logger.warn({ inFlight: this.server.inFlight() }, 'stop timeout: cancelling in-flight work');
      // Calls fail with UNAVAILABLE; durable deliveries go back, attempt unspent (`stopping`).
      const stopped = `node ${this.id} stopped before the work finished`;
      this.deadlines.expireAll(new ParleyError('UNAVAILABLE', stopped, { details: { stopping: true } }));
      await consumersClosed;
    }
    // Notifications made in this turn leave before the transport closes.
    this.events.flush();
    await this.transport.stop();
    await Promise.all(this.relays.map((r) => r.stop()));
    await this.broker?.close();
    this.deadlines.close();
    this.state = 'stopped';
  }

  inFlight(): number {
    return this.server.inFlight();
  }

  client<C extends AnyContract>(contract: C): Client<C> {
    return createClient(contract, (action, input, options) =>
      this.callFrom(undefined, contract, action, input, options),
    );
  }

  callFrom(
    parent: Context | undefined,
    contract: AnyContract,
    action: string,
    input: unknown,
    options?: CallOptions,
  ): unknown {
    const def = contract.actions[action] as ActionDef | undefined;
    const result = this.startCall(def, parent, contract, action, input, options);
    // An output stream is handed back at once and opens when first read; so are its errors.
    return def?.stream === 'output' ? lazyStream(result) : result;
  }

  private startCall(
    def: ActionDef | undefined,
    parent: Context | undefined,
    contract: AnyContract,
    action: string,
    input: unknown,
    options?: CallOptions,
  ): Promise<unknown> {
    if (def === undefined) {
      return Promise.reject(
        new ParleyError('UNIMPLEMENTED', `contract ${contract.name} has no action ${action}`),
      );
    }
    const opts = options ?? NO_OPTIONS;
    const now = this.clock.now();
    let deadline = opts.deadline ?? now + (opts.timeout ?? def.timeout ?? this.defaultTimeout);
    if (opts.deadline !== undefined && opts.timeout !== undefined)
      deadline = Math.min(deadline, now + opts.timeout);
    if (parent !== undefined && parent.deadline < deadline) deadline = parent.deadline;
    if (deadline <= now) {
      return Promise.reject(
        new ParleyError('DEADLINE_EXCEEDED', `${contract.name}.${action}: no time left, not sent`),
      );
    }
    const call: OutboundCall = {
      service: contract.name,
      action,
      input,
      deadline,
      idempotent: def.idempotent === true,
      stream: def.stream,
      options: opts,
      parent,
      traceparent: undefined,
      tried: NONE_TRIED,
      recover: undefined,
    };
    return this.outbound(call);
  }

  /**
   * The end of the outbound pipeline: deadline check (again only if middleware may have spent
   * time since `callFrom` checked), balancer, then local or remote; a safe call whose instance
   * is lost goes to another. Every failure goes to the call's `recover` when a retry left one.
   */
  private dispatch(call: OutboundCall): Promise<unknown> {
    const recover = call.recover;
    if (recover !== undefined) call.recover = undefined; // taken: a re-dispatch does not see it
    const fail = (error: Error) => (recover === undefined ? Promise.reject(error) : recover(error, call));
    if (this.hasOutboundMiddleware && call.deadline <= this.clock.now()) {
      return fail(
        new ParleyError('DEADLINE_EXCEEDED', `${call.service}.${call.action}: no time left, not sent`),
      );
    }
    // A handler may call out while its node starts (it already serves) or drains.
    const serving = this.state === 'starting' || this.state === 'stopping';
    if (this.state !== 'running' && !(serving && call.parent !== undefined)) {
      return fail(new ParleyError('UNAVAILABLE', `node ${this.id} is ${this.state}`));
    }
    const known = this.registry.endpoints(call.service);
    const admits = this.admits;
    // A new list only when some instance is refused (an open breaker): the common case allocates nothing.
    let endpoints = known;
    if (admits !== undefined) {
      for (let i = 0; i < known.length; i++) {
        const e = known[i] as Endpoint;
        if (!admits(call, e.nodeId, e.local)) {
          endpoints = known.filter((x) => admits(call, x.nodeId, x.local));
          break;
        }
      }
    }
    const endpoint = this.balancer(endpoints, call);
    if (endpoint === undefined) {
      const why =
        known.length > 0
          ? `every instance of ${call.service} refuses calls now (circuit open)`
          : `no instance of ${call.service} is available`;
      return fail(
        new ParleyError('UNAVAILABLE', why, {
          details:
            known.length > 0
              ? { service: call.service, instances: known.length, circuit: 'open' }
              : { service: call.service, instances: 0 },
        }),
      );
    }
    if (endpoints.length > 1) call.tried = [...call.tried, endpoint.nodeId];
    let permit: AttemptPermit | undefined;
    if (this.gate !== undefined) {
      const p = this.gate(call, endpoint.nodeId, endpoint.local);
      if (p instanceof Error) return fail(p);
      permit = p;
    }
    // Failover: when the instance is lost mid-call and running the call twice is safe
    // (idempotent, or an idempotency key), another instance gets it, while time is left. Not an
    // input stream (its source cannot be read again; until 2026-12-03 the next instance got the
    // rest of it and answered for 72 chunks of 200 as if for all).
    const safe = call.idempotent || call.options.idempotencyKey !== undefined;
    const failover = endpoints.length > 1 && call.stream !== 'input' && safe;
    // The common remote call settles its permit and hands its failure over where its reply is
    // decoded: no promise is added for either.
    if (!failover && !endpoint.local && call.stream === undefined) {
      return callRemote(this.remoteDeps, endpoint.nodeId, call, permit, recover);
    }
    let sent = this.attemptOn(call, endpoint.nodeId, endpoint.local);
    if (permit !== undefined) {
      const held = permit;
      sent = sent.then(
        (value) => {
          held.success();
          return value;
        },
        (error: unknown) => {
          held.error(error);
          throw error;
        },
      );
    }
    if (failover) sent = this.failover(call, endpoint.nodeId, sent);
    return recover === undefined ? sent : sent.catch((error: unknown) => recover(error, call));
  }

  private failover(call: OutboundCall, from: string, sent: Promise<unknown>): Promise<unknown> {
    return sent.catch((error: unknown) => {
      const lost = error instanceof ParleyError && error.code === 'UNAVAILABLE';
      const untried = this.registry
        .endpoints(call.service)
        .some((e) => !call.tried.includes(e.nodeId) && e.nodeId !== from);
      if (!lost || !untried || call.deadline <= this.clock.now() || call.options.signal?.aborted) throw error;
      this.logger.debug({ service: call.service, action: call.action, from }, 'failover');
      return this.dispatch(call);
    });
  }

  /** One attempt on the chosen instance: local, or over the transport. */
  private attemptOn(call: OutboundCall, nodeId: string, local: boolean): Promise<unknown> {
    if (local) return this.callLocal(call);
    if (call.stream === 'output') return openRemoteOutput(this.remoteDeps, nodeId, call);
    if (call.stream === 'input') return callRemoteInput(this.remoteDeps, nodeId, call);
    return callRemote(this.remoteDeps, nodeId, call);
  }

  private callLocal(call: OutboundCall): Promise<unknown> {
    const action = this.server.action(call.service, call.action);
    if (action === undefined) {
      return Promise.reject(
        new ParleyError('UNIMPLEMENTED', `no action ${call.service}.${call.action} on this node`),
      );
    }
    const ctx = new CallContext(this, {
      service: call.service,
      action: call.action,
      deadline: call.deadline,
      caller: { node: this.id, service: call.parent?.service },
      principal: principalOfCall(call),
      parent: call.parent,
      traceparent: call.traceparent,
      idempotencyKey: call.options.idempotencyKey,
      errors: action.def.errors,
    });
    // The deadline was checked a moment ago in callFrom/dispatch: the local path skips a third look.
    return this.server.serve(action, ctx, call.input, true, call.options.signal);
  }

  publish<C extends AnyContract, K extends EventName<C>>(
    contract: C,
    event: K,
    payload: PayloadInputOf<C, K>,
    options?: PublishOptions,
  ): Promise<void> {
    return this.publishFrom(undefined, contract, event, payload, options);
  }

  publishFrom(
    parent: Context | undefined,
    contract: AnyContract,
    event: string,
    payload: unknown,
    options?: PublishOptions,
  ): Promise<void> {
    return this.events.publish(parent, contract, event, payload, options);
  }

  notify<C extends AnyContract, K extends EventName<C>>(
    contract: C,
    event: K,
    payload: PayloadInputOf<C, K>,
  ): Promise<void> {
    return this.notifyFrom(undefined, contract, event, payload);
  }

  notifyFrom(
    parent: Context | undefined,
    contract: AnyContract,
    event: string,
    payload: unknown,
  ): Promise<void> {
    return this.events.notify(parent, contract, event, payload);
  }
}

const NO_OPTIONS: CallOptions = Object.freeze({});

const NONE_TRIED: readonly string[] = Object.freeze([]);
