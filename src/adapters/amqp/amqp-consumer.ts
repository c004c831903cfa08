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
 * - **Acks** leave once per turn of the event loop, several as one `multiple` ack when that is
 *   provably only theirs (`acks.ts`).
 * - **Leases**: RabbitMQ has none: a delivery is held until it is acked or its channel closes
 *   (and the server closes a channel holding one past `consumer_timeout`, 30 min by default). So
 *   the lease is kept here: a delivery not settled nor extended within its lease is given back
 *   (`nack` with requeue) for another consumer; a later ack of it is ignored. One timer per
 *   consumer watches every lease (`LeaseClock` in `acks.ts`). A crashed process loses its
 *   connection and RabbitMQ requeues everything it held at once. Leases longer than
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
import { ChannelAcks, LeaseClock } from './acks.ts';
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
    options: Options.Publish,
  ): Promise<void>;
  /** Stores a dead letter. */
  deadLetter(letter: Letter): Promise<void>;
  /** The most bytes of a body that was no envelope its dead letter may hold. */
  letterBodyRoom(): number;
}

const done: Promise<void> = Promise.resolve();

/**
 * One delivery as the group consumer sees it. `state`: held (the handler has it), moving (being
 * republished for a delayed retry), done (settled, or given back). Its operations are the
 * consumer's; one object per message and no closures.
 */
class Held implements RawMessage {
  state: 'held' | 'moving' | 'done' = 'held';
  constructor(
    private readonly consumer: AmqpConsumer,
    readonly acks: ChannelAcks,
    readonly m: ConsumeMessage,
    readonly id: string,
    readonly deliveries: number,
    readonly key: string | undefined,
    readonly notBefore: number | undefined,
    /** When the lease ends (epoch ms), while held. */
    public until: number,
  ) {}

  get body(): Uint8Array {
    return this.m.content;
  }

  ack(): undefined {
    this.consumer.ackHeld(this); // queued for the turn's ack: the room frees now
    return undefined;
  }

  retry(delay: number): Promise<void> {
    return this.consumer.retryHeld(this, delay);
  }

  extend(ms: number): Promise<void> {
    return this.consumer.extendHeld(this, ms);
  }
}

/** One subscription: a channel of its own, the group consumer on top. */
export class AmqpConsumer {
  readonly group: GroupConsumer;
  private channel: AmqpChannel | undefined;
  /** The acks of `channel`. */
  private acks: ChannelAcks | undefined;
  private model: ChannelModel | undefined;
  private tag: string | undefined;
  private paused = false;
  private closed = false;
  /** Deliveries this consumer handed back without counting (pauses), by message id. */
  private readonly uncounted = new Map<string, number>();
  /** Deliveries seen per message id (classic queues only: they count nothing). */
  private readonly seen = new Map<string, number>();
  /** Unsettled deliveries: they die with their channel. */
  private readonly held = new Set<Held>();
  private readonly leases = new LeaseClock((now) => this.expireDue(now));
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
      onRoom: () => {
        if (this.paused) void this.resume();
      },
      letterBodyRoom: () => broker.letterBodyRoom(),
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
    this.acks = new ChannelAcks(ch);
    this.tag = undefined;
    this.paused = false;
    await this.consume();
  }

  /** The channel closed: what it held is back in the queue; a live connection gets a new channel. */
  private lost(ch: AmqpChannel, model: ChannelModel): void {
    if (this.channel !== ch) return;
    this.channel = undefined;
    this.acks?.close();
    this.acks = undefined;
    this.tag = undefined;
    this.dropAll();
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
    const acks = this.acks;
    if (this.channel !== ch || acks === undefined) return;
    acks.add(m);
    const id = m.properties.messageId ?? `${this.queue}#${fnv(m.content.toString('base64'))}`;
    if (!this.group.isClosed && this.group.room <= 0) {
      // Only after a lease was given back (its slot freed while its handler runs): back, uncounted.
      this.uncounted.set(id, (this.uncounted.get(id) ?? 0) + 1);
      acks.nack(m);
      void this.pause();
      return;
    }
    const key = header(m, KEY);
    const notBefore = header(m, NOT_BEFORE);
    const until = Date.now() + this.group.lease;
    const held = new Held(
      this,
      acks,
      m,
      id,
      this.deliveries(m, id),
      key === '' ? undefined : key,
      notBefore === undefined || notBefore === '' ? undefined : Number(notBefore),
      until,
    );
    this.held.add(held);
    this.leases.watch(until);
    this.group.deliver(held);
  }

  private deliveries(m: ConsumeMessage, id: string): number {
    const before = count(m, ATTEMPT) - (this.uncounted.get(id) ?? 0);
    if (this.broker.quorum) return before + count(m, 'x-delivery-count') + 1;
    const seen = (this.seen.get(id) ?? 0) + 1;
    this.seen.set(id, seen);
    if (this.seen.size > 10_000) this.seen.delete(this.seen.keys().next().value as string);
    return before + (m.fields.redelivered ? Math.max(2, seen) : 1);
  }

  private drop(h: Held): void {
    h.state = 'done';
    this.held.delete(h);
  }

  private dropAll(): void {
    for (const h of this.held) h.state = 'done';
    this.held.clear();
  }

  /** This consumer's counts of a settled message are no longer needed. */
  private forget(id: string): void {
    if (this.uncounted.size > 0) this.uncounted.delete(id);
    if (this.seen.size > 0) this.seen.delete(id);
  }

  /** True when `h` was held and is now settled by `what`. */
  private settle(h: Held, what: string): boolean {
    if (h.state !== 'held') {
      if (h.state === 'done')
        this.broker.log(`ignored ${what} of a message of ${this.queue}: its lease had ended`);
      return false;
    }
    this.drop(h);
    return true;
  }

  /** The lease clock's turn: gives back what is due, returns the next lease end. */
  private expireDue(now: number): number {
    let next = Number.POSITIVE_INFINITY;
    for (const h of this.held) {
      if (h.state !== 'held') continue;
      if (h.until <= now) void this.expire(h);
      else if (h.until < next) next = h.until;
    }
    return next;
  }

  private async expire(h: Held): Promise<void> {
    this.drop(h);
    this.broker.log(`the lease on a message of ${this.queue} ended: given back for redelivery`);
    // Full: stop deliveries first, so the message goes to another consumer, not back here.
    if (this.group.room <= 0) await this.pause();
    if (h.acks.isClosed) return;
    try {
      h.acks.nack(h.m);
    } catch (error) {
      this.broker.log(amqpError(error, 'giving back a message').message);
    }
  }

  /** @internal `Held.ack`. */
  ackHeld(h: Held): void {
    if (this.settle(h, 'an ack')) {
      this.forget(h.id);
      h.acks.ack(h.m);
    }
  }

  /** @internal `Held.extend`. */
  extendHeld(h: Held, ms: number): Promise<void> {
    if (h.state === 'held') {
      h.until = Date.now() + (ms > 0 ? ms : this.group.lease);
      this.leases.watch(h.until);
    }
    return done;
  }

  /** @internal `Held.retry`. */
  retryHeld(h: Held, delay: number): Promise<void> {
    const p = this.retry(h, delay);
    this.settling.add(p);
    void p.catch(() => undefined).finally(() => this.settling.delete(p));
    return p;
  }

  private async retry(h: Held, delay: number): Promise<void> {
    if (h.state !== 'held') return;
    if (delay < 1) {
      this.settle(h, 'a requeue');
      try {
        h.acks.nack(h.m);
      } catch (error) {
        throw amqpError(error, 'requeue');
      }
      return;
    }
    h.state = 'moving';
    const { m } = h;
    try {
      await this.broker.publishDelayed('queue', this.queue, delay, m.content, {
        messageId: h.id,
        contentType: m.properties.contentType as string | undefined,
        headers: {
          [ATTEMPT]: h.deliveries,
          ...(h.key === undefined ? {} : { [KEY]: h.key }),
          ...(h.notBefore === undefined ? {} : { [NOT_BEFORE]: h.notBefore }),
        },
      });
    } catch (error) {
      // Not stored elsewhere: keep holding it; its lease gives it back.
      if (h.state === 'moving') {
        h.state = 'held';
        h.until = Date.now() + this.group.lease;
        this.leases.watch(h.until);
      }
      throw error;
    }
    if (h.state !== 'moving') return; // the channel died meanwhile: RabbitMQ has it back too
    this.drop(h);
    this.forget(h.id);
    h.acks.ack(h.m);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    const closing = this.group.close();
    await this.pause();
    await closing;
    await Promise.allSettled([...this.settling]);
    this.closed = true;
    this.leases.stop();
    const ch = this.channel;
    this.channel = undefined;
    // Acks still waiting for the end of the turn leave before the channel closes.
    this.acks?.flush();
    this.acks?.close();
    this.acks = undefined;
    this.dropAll();
    // Closing the channel gives back what it still holds.
    await ch?.close().catch(() => undefined);
  }
}
