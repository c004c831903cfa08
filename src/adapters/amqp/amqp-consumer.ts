/**
 * @module adapters/amqp/amqp-consumer
 * One subscription of the RabbitMQ broker (`amqp-broker.ts`): a channel of its own on the
 * group's queue, with the shared group consumer on top.
 *
 * - **Delivery**: each consumer has its own channel with `prefetch = maxInFlight` and manual acks.
 *   Attempts: a quorum queue counts returns in `x-delivery-count`; a retried message is
 *   republished (new to RabbitMQ), so the deliveries before it travel in the `x-parley-attempt`
 *   header, and deliveries = `x-parley-attempt` + `x-delivery-count` + 1. With `queueType:
 *   'classic'` there is no count: a redelivered message counts once more per delivery this
 *   process saw, so a crash that moves it to another process may cost no attempt.
 * - **Leases**: RabbitMQ has none: a delivery is held until it is acked or its channel closes
 *   (and the server closes a channel holding one past `consumer_timeout`, 30 min by default). So
 *   the lease is kept here: a delivery not settled nor extended within its lease is given back
 *   (`nack` with requeue) for another consumer; a later ack of it is ignored. A crashed process
 *   loses its connection and RabbitMQ requeues everything it held at once. Leases longer than
 *   `consumer_timeout` cannot be had: raise it on the server.
 * - **Per-key order**: the key travels in `x-parley-key`; order holds per key within one consumer
 *   process (the group consumer holds later messages of a key while an earlier one waits for its
 *   retry). Competing consumers of one group may interleave a key's messages; a single active
 *   consumer (`x-single-active-consumer`) per group would give order across processes.
 * - **Backpressure**: `prefetch = maxInFlight`; a lease given back frees a prefetch slot while
 *   its handler may still run, so a consumer that is full pauses (cancels its consumer) until it
 *   has room, and a message that comes anyway is returned uncounted.
 *
 * Reconnects: a consumer opens a new channel and consumes again (RabbitMQ requeued what the old
 * one held; its late acks are ignored).
 */
import type { ConsumeMessage, Options } from 'amqplib';
import type { ConsumerHandler, ConsumerSpec } from '../../broker/broker.ts';
import { createJsonCodec } from '../../codec/json.ts';
import { GroupConsumer, type RawMessage } from '../group-consumer.ts';
import type { AmqpChannel, AmqpLink, ChannelModel } from './connect.ts';
import type { Letter } from './dead-letters.ts';
import { amqpError } from './errors.ts';
import { ATTEMPT, count, fnv, header, KEY, NOT_BEFORE } from './names.ts';

/** What a consumer needs of its broker (`AmqpBroker` has it; a consumer does not import the broker). */
export interface ConsumerHost {
  readonly link: Pick<AmqpLink, 'current'>;
  /** Quorum queues count deliveries; classic ones do not. */
  readonly quorum: boolean;
  readonly log: (message: string) => void;
  /** Publishes through a delay bucket back to the queue `routingKey` (a retry with delay). */
  publishDelayed(
    via: 'queue' | 'topic',
    routingKey: string,
    delay: number,
    body: Uint8Array,
    options: Options.Publish & { headers: Record<string, unknown> },
  ): Promise<void>;
  /** Stores a dead letter. */
  deadLetter(letter: Letter): Promise<void>;
}

/** One subscription: a channel of its own, the group consumer on top. */
export class AmqpConsumer {
  readonly group: GroupConsumer;
  private channel: AmqpChannel | undefined;
  private model: ChannelModel | undefined;
  private tag: string | undefined;
  private paused = false;
  private closed = false;
  /** Deliveries this consumer handed back without counting (pauses), by message id. */
  private readonly uncounted = new Map<string, number>();
  /** Deliveries seen per message id (classic queues only: they count nothing). */
  private readonly seen = new Map<string, number>();
  /** Unsettled deliveries: they die with their channel. */
  private readonly held = new Set<{ drop(): void }>();
  private readonly settling = new Set<Promise<unknown>>();

  constructor(
    private readonly broker: ConsumerHost,
    private readonly queue: string,
    readonly spec: ConsumerSpec,
    handler: ConsumerHandler,
  ) {
    this.group = new GroupConsumer(spec, handler, {
      codec: createJsonCodec(),
      deadLetter: (letter, raw) =>
        broker.deadLetter(raw.key === undefined ? letter : { ...letter, key: raw.key }),
      onRoom: () => void this.resume(),
      log: broker.log,
    });
  }

  /** Opens a channel on `model` and consumes (again, after a reconnect). */
  async attach(model: ChannelModel): Promise<void> {
    if (this.closed) return;
    this.model = model;
    const ch = await model.createChannel();
    ch.on('error', (e: Error) => {
      if (!this.closed)
        this.broker.log(amqpError(e, `consumer ${this.spec.group}/${this.spec.topic}`).message);
    });
    ch.on('close', () => this.lost(ch, model));
    await ch.prefetch(this.group.maxInFlight);
    this.channel = ch;
    this.tag = undefined;
    this.paused = false;
    await this.consume();
  }

  /** The channel closed: what it held is back in the queue; a live connection gets a new channel. */
  private lost(ch: AmqpChannel, model: ChannelModel): void {
    if (this.channel !== ch) return;
    this.channel = undefined;
    this.tag = undefined;
    for (const h of [...this.held]) h.drop();
    if (this.closed) return;
    setTimeout(() => {
      if (
        !this.closed &&
        this.channel === undefined &&
        this.broker.link.current === model &&
        this.model === model
      )
        this.attach(model).catch((e: unknown) =>
          this.broker.log(amqpError(e, 'reopening a consumer').message),
        );
    }, 500).unref();
  }

  private async consume(): Promise<void> {
    const ch = this.channel;
    if (ch === undefined || this.tag !== undefined || this.closed) return;
    const { consumerTag } = await ch.consume(this.queue, (m) => this.onMessage(ch, m), { noAck: false });
    if (this.channel === ch) this.tag = consumerTag;
  }

  /** Stops deliveries (the consumer is full, yet RabbitMQ may send more). */
  private async pause(): Promise<void> {
    if (this.paused) return;
    this.paused = true;
    const { channel: ch, tag } = this;
    this.tag = undefined;
    if (ch !== undefined && tag !== undefined) await ch.cancel(tag).catch(() => undefined);
  }

  private async resume(): Promise<void> {
    if (!this.paused || this.closed || this.group.room <= 0) return;
    this.paused = false;
    await this.consume().catch((e: unknown) => this.broker.log(amqpError(e, 'resuming a consumer').message));
  }

  private onMessage(ch: AmqpChannel, m: ConsumeMessage | null): void {
    if (m === null) {
      // The server cancelled the consumer (the queue was deleted).
      if (this.channel === ch) this.tag = undefined;
      if (!this.closed) this.broker.log(`RabbitMQ: the server cancelled the consumer of ${this.queue}`);
      return;
    }
    if (this.channel !== ch) return;
    const id = m.properties.messageId ?? `${this.queue}#${fnv(m.content.toString('base64'))}`;
    if (!this.group.isClosed && this.group.room <= 0) {
      // Only after a lease was given back (its slot freed while its handler runs): back, uncounted.
      this.uncounted.set(id, (this.uncounted.get(id) ?? 0) + 1);
      ch.nack(m, false, true);
      void this.pause();
      return;
    }
    this.group.deliver(this.rawOf(ch, m, id));
  }

  private deliveries(m: ConsumeMessage, id: string): number {
    const before = count(m, ATTEMPT) - (this.uncounted.get(id) ?? 0);
    if (this.broker.quorum) return before + count(m, 'x-delivery-count') + 1;
    const seen = (this.seen.get(id) ?? 0) + 1;
    this.seen.set(id, seen);
    if (this.seen.size > 10_000) this.seen.delete(this.seen.keys().next().value as string);
    return before + (m.fields.redelivered ? Math.max(2, seen) : 1);
  }

  private rawOf(ch: AmqpChannel, m: ConsumeMessage, id: string): RawMessage {
    const deliveries = this.deliveries(m, id);
    const key = header(m, KEY);
    const notBefore = header(m, NOT_BEFORE);
    // held: the handler has it; moving: being republished; done: settled, or given back.
    let state: 'held' | 'moving' | 'done' = 'held';
    let timer: NodeJS.Timeout | undefined;
    const entry = {
      drop: () => {
        state = 'done';
        clearTimeout(timer);
        this.held.delete(entry);
      },
    };
    this.held.add(entry);
    const forget = () => {
      this.uncounted.delete(id);
      this.seen.delete(id);
    };
    const lease = (ms: number) => {
      clearTimeout(timer);
      timer = setTimeout(() => void expire(), ms);
      timer.unref();
    };
    const expire = async () => {
      if (state !== 'held') return;
      entry.drop();
      this.broker.log(`the lease on a message of ${this.queue} ended: given back for redelivery`);
      // Full: stop deliveries first, so the message goes to another consumer, not back here.
      if (this.group.room <= 0) await this.pause();
      if (this.channel === ch) ch.nack(m, false, true);
    };
    const settle = (what: string): boolean => {
      if (state !== 'held') {
        if (state === 'done')
          this.broker.log(`ignored ${what} of a message of ${this.queue}: its lease had ended`);
        return false;
      }
      entry.drop();
      return true;
    };
    const track = <T>(p: Promise<T>): Promise<T> => {
      this.settling.add(p);
      void p.catch(() => undefined).finally(() => this.settling.delete(p));
      return p;
    };
    lease(this.group.lease);
    return {
      id,
      body: m.content,
      key: key === '' ? undefined : key,
      notBefore: notBefore === undefined || notBefore === '' ? undefined : Number(notBefore),
      deliveries,
      ack: async () => {
        if (!settle('an ack')) return;
        forget();
        try {
          ch.ack(m);
        } catch (error) {
          throw amqpError(error, 'ack');
        }
      },
      retry: (delay) =>
        track(
          (async () => {
            if (state !== 'held') return;
            if (delay < 1) {
              settle('a requeue');
              try {
                ch.nack(m, false, true);
              } catch (error) {
                throw amqpError(error, 'requeue');
              }
              return;
            }
            state = 'moving';
            clearTimeout(timer);
            try {
              await this.broker.publishDelayed('queue', this.queue, delay, m.content, {
                messageId: id,
                contentType: m.properties.contentType as string | undefined,
                headers: {
                  [ATTEMPT]: deliveries,
                  ...(key === undefined ? {} : { [KEY]: key }),
                  ...(notBefore === undefined ? {} : { [NOT_BEFORE]: notBefore }),
                },
              });
            } catch (error) {
              // Not stored elsewhere: keep holding it; its lease gives it back.
              if (state === 'moving') {
                state = 'held';
                lease(this.group.lease);
              }
              throw error;
            }
            if (state !== 'moving') return; // the channel died meanwhile: RabbitMQ has it back too
            entry.drop();
            forget();
            ch.ack(m);
          })(),
        ),
      extend: async (ms) => {
        if (state === 'held') lease(ms > 0 ? ms : this.group.lease);
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    const closing = this.group.close();
    await this.pause();
    await closing;
    await Promise.allSettled([...this.settling]);
    this.closed = true;
    const ch = this.channel;
    this.channel = undefined;
    for (const h of [...this.held]) h.drop();
    // Closing the channel gives back what it still holds.
    await ch?.close().catch(() => undefined);
  }
}
