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
}

const DONE: Promise<void> = Promise.resolve();

export class EventsOut {
  /** JSON nodes send a turn's notifications as one batch frame (`notify-batch.ts`). */
  private readonly batcher: NotificationBatcher | undefined;

  constructor(private readonly deps: EventsOutDeps) {
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
   * which rolls back, even when the caller does not await. Elsewhere it goes to the broker.
   */
  publish(
    parent: Context | undefined,
    contract: AnyContract,
    event: string,
    payload: unknown,
    options: PublishOptions = {},
  ): Promise<void> {
    const outbox = this.outboxInTransaction();
    if (outbox !== undefined) {
      const { env, publishOptions } = this.toPublish(parent, contract, event, payload, options);
      outbox.write(env, publishOptions);
      return Promise.resolve();
    }
    const broker = this.deps.broker;
    if (broker === undefined) {
      return Promise.reject(
        new ParleyError('FAILED_PRECONDITION', `cannot publish ${event}: the node has no broker`),
      );
    }
    try {
      const { env, publishOptions } = this.toPublish(parent, contract, event, payload, options);
      return broker.publish(env, publishOptions).then(() => undefined);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Not `async`: a notification is done when it is handed over, and a sender may make many. */
  notify(parent: Context | undefined, contract: AnyContract, event: string, payload: unknown): Promise<void> {
    try {
      const env = this.envelope(parent, contract, event, payload);
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
      return DONE;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  private toPublish(
    parent: Context | undefined,
    contract: AnyContract,
    event: string,
    payload: unknown,
    options: PublishOptions,
  ): { env: Envelope; publishOptions: BrokerPublishOptions } {
    const env = this.envelope(parent, contract, event, payload);
    if (options.idempotencyKey !== undefined) env.idempotencykey = options.idempotencyKey;
    if (options.key !== undefined) env.subject = options.key;
    const publishOptions: BrokerPublishOptions = {};
    if (options.key !== undefined) publishOptions.key = options.key;
    if (options.delay !== undefined) publishOptions.delay = options.delay;
    return { env, publishOptions };
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
