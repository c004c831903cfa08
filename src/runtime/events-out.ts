/**
 * @module runtime/events-out
 * What a node sends as events: durable publishes (to the outbox whose transaction is open, else to
 * the broker) and ephemeral notifications (broadcast, and to this node's own listeners).
 */
import type { Logger } from 'pino';
import type { Broker, BrokerPublishOptions } from '../broker/broker.ts';
import type { Outbox } from '../broker/outbox.ts';
import type { Codec } from '../codec/codec.ts';
import type { AnyContract } from '../contract/contract.ts';
import type { Envelope } from '../envelope/envelope.ts';
import { ParleyError } from '../errors.ts';
import type { Transport } from '../transport/transport.ts';
import type { Clock } from './clock.ts';
import type { Context, PublishOptions } from './context.ts';
import { eventEnvelope } from './envelopes.ts';
import { NotificationBatcher } from './notify-batch.ts';
import { composePublish, type Middleware, type PublishCall, type PublishHandler } from './pipeline.ts';

export interface EventsOutDeps {
  readonly nodeId: string;
  readonly clock: Clock;
  readonly codec: Codec;
  readonly transport: Transport;
  readonly broker: Broker | undefined;
  readonly outboxes: readonly Outbox[];
  readonly logger: Logger;
  /** Hands a notification to this node's own ephemeral subscribers. */
  deliverLocally(env: Envelope): void;
  /** The node's middleware; its `publish` hooks wrap every event sent. */
  readonly middleware?: readonly Middleware[];
}

const DONE: Promise<void> = Promise.resolve();
const NO_OPTIONS: BrokerPublishOptions = Object.freeze({});

export class EventsOut {
  /** JSON nodes send a turn's notifications as one batch frame (`notify-batch.ts`). */
  private readonly batcher: NotificationBatcher | undefined;

  /** The publish middleware around `send`; undefined when none has a `publish` hook. */
  private readonly chain: PublishHandler | undefined;

  constructor(private readonly deps: EventsOutDeps) {
    this.chain = composePublish(deps.middleware ?? [], (call) => this.send(call));
    this.batcher =
      deps.codec.name === 'json'
        ? new NotificationBatcher(
            (frame) => deps.transport.broadcast(frame),
            () => deps.transport.maxPayload,
            (error) => deps.logger.warn({ err: error }, 'notifications lost: the transport refused a batch'),
          )
        : undefined;
  }

  /** Broadcasts the notifications waiting for the end of this turn (before the node stops). */
  flush(): void {
    this.batcher?.flush();
  }

  /**
   * Inside a transaction of an outbox's database the event is written there synchronously, and
   * any error (an invalid payload) is thrown, not returned: it reaches the caller's transaction,
   * which rolls back, even when the caller does not await. Elsewhere it goes to the broker, and
   * a failure (no broker, an invalid payload) is returned as a rejection.
   */
  publish(
    parent: Context | undefined,
    contract: AnyContract,
    event: string,
    payload: unknown,
    options: PublishOptions = {},
  ): Promise<void> {
    if (this.outboxInTransaction() !== undefined)
      return this.out(this.toPublish(parent, contract, event, payload, options));
    try {
      return this.out(this.toPublish(parent, contract, event, payload, options));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Not `async`: a notification is done when it is handed over, and a sender may make many. */
  notify(parent: Context | undefined, contract: AnyContract, event: string, payload: unknown): Promise<void> {
    try {
      const envelope = this.envelope(parent, contract, event, payload);
      if (this.chain === undefined) {
        this.hand(envelope);
        return DONE;
      }
      return this.chain({
        parent,
        service: contract.name,
        event,
        envelope,
        durable: false,
        options: NO_OPTIONS,
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Through the publish middleware, if any. */
  private out(call: PublishCall): Promise<void> {
    return this.chain === undefined ? this.send(call) : this.chain(call);
  }

  /**
   * The end of the publish pipeline: the outbox whose transaction is open (asked again here, so
   * what middleware hands on needs nothing but a publish call), the broker, or the way out of a
   * notification.
   */
  private send(call: PublishCall): Promise<void> {
    const env = call.envelope;
    if (call.durable) {
      const outbox = this.outboxInTransaction();
      if (outbox !== undefined) {
        outbox.write(env, call.options);
        return DONE;
      }
      const broker = this.deps.broker;
      if (broker === undefined)
        throw new ParleyError('FAILED_PRECONDITION', `cannot publish ${call.event}: the node has no broker`);
      return broker.publish(env, call.options).then(() => undefined);
    }
    this.hand(env);
    return DONE;
  }

  /** A notification out: broadcast (in this turn's batch), and to this node's own subscribers. */
  private hand(env: Envelope): void {
    if (this.batcher !== undefined) {
      this.batcher.add(env);
    } else {
      const frame = this.deps.codec.encode(env);
      if (frame.byteLength > this.deps.transport.maxPayload) {
        throw new ParleyError(
          'RESOURCE_EXHAUSTED',
          `notification of ${frame.byteLength} bytes exceeds the maximum`,
        );
      }
      this.deps.transport.broadcast(frame);
    }
    this.deps.deliverLocally(env);
  }

  private toPublish(
    parent: Context | undefined,
    contract: AnyContract,
    event: string,
    payload: unknown,
    options: PublishOptions,
  ): PublishCall {
    const envelope = this.envelope(parent, contract, event, payload);
    if (options.idempotencyKey !== undefined) envelope.idempotencykey = options.idempotencyKey;
    if (options.key !== undefined) envelope.subject = options.key;
    const publishOptions: BrokerPublishOptions = {};
    if (options.key !== undefined) publishOptions.key = options.key;
    if (options.delay !== undefined) publishOptions.delay = options.delay;
    return {
      parent,
      service: contract.name,
      event,
      envelope,
      durable: true,
      options: publishOptions,
    };
  }

  private outboxInTransaction(): Outbox | undefined {
    for (const o of this.deps.outboxes) if (o.inTransaction()) return o;
    return undefined;
  }

  private envelope(
    parent: Context | undefined,
    contract: AnyContract,
    event: string,
    payload: unknown,
  ): Envelope {
    const { nodeId, codec, clock } = this.deps;
    return eventEnvelope({ nodeId, parent, contract, event, payload, codec, now: clock.now() });
  }
}
