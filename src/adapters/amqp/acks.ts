/**
 * @module adapters/amqp/acks
 * Acks and leases of one RabbitMQ consumer (`amqp-consumer.ts`), made cheap per message.
 *
 * - **Acks** (`ChannelAcks`, one per channel): acks wait for the end of the turn of the event
 *   loop and leave together. Delivery tags on a channel count up from 1, so one ack with
 *   `multiple` covers every tag up to it that is not settled yet; it is sent only up to the
 *   lowest tag still open (delivered, neither acked nor nacked), which it therefore never
 *   touches. Acks above that tag leave one by one. Nacks leave at once. An ack queued when its
 *   channel closes is dropped: RabbitMQ has requeued the message with the channel, as it does for
 *   an ack lost in flight (at least once). `flush()` sends what waits now (before a close).
 * - **Leases** (`LeaseClock`, one per consumer): one timer, set for the earliest lease end; when
 *   it fires the consumer gives back what is due and says when the next lease ends.
 */
import type { Message } from 'amqplib';
import { TurnQueue } from '../../runtime/turn-queue.ts';
import type { AmqpChannel } from './connect.ts';

export class ChannelAcks {
  /** Tags delivered and not settled (nor queued to be acked). */
  private readonly open = new Set<number>();
  private readonly queued = new TurnQueue<Message>((turn) => this.send(turn));
  private closed = false;
  /** Every tag below this one is settled or queued; moves up lazily in `flush`. */
  private floor = 1;
  /** The highest tag delivered. */
  private top = 0;

  constructor(readonly channel: AmqpChannel) {}

  get isClosed(): boolean {
    return this.closed;
  }

  /** Registers a delivery: before anything may settle it, so that no `multiple` ack can cover it. */
  add(m: Message): void {
    const tag = m.fields.deliveryTag;
    this.open.add(tag);
    if (tag > this.top) this.top = tag;
  }

  /** Acks at the end of this turn. */
  ack(m: Message): void {
    if (this.closed) return;
    this.open.delete(m.fields.deliveryTag);
    this.queued.add(m);
  }

  /** Nacks now (throws if the channel is closed). */
  nack(m: Message, requeue = true): void {
    this.open.delete(m.fields.deliveryTag);
    this.channel.nack(m, false, requeue);
  }

  /** Sends the queued acks now. */
  flush(): void {
    this.queued.flush();
  }

  private send(queued: Message[]): void {
    if (this.closed) return;
    while (this.floor <= this.top && !this.open.has(this.floor)) this.floor++;
    let last: Message | undefined;
    let below = 0;
    for (const m of queued) {
      const tag = m.fields.deliveryTag;
      if (tag < this.floor) {
        below++;
        if (last === undefined || tag > last.fields.deliveryTag) last = m;
      }
    }
    try {
      if (last !== undefined) this.channel.ack(last, below > 1);
      if (below < queued.length)
        for (const m of queued) if (m.fields.deliveryTag >= this.floor) this.channel.ack(m);
    } catch {
      // The channel closed meanwhile: RabbitMQ requeued these with it.
      this.closed = true;
    }
  }

  /** The channel is gone: nothing more is sent on it. */
  close(): void {
    this.closed = true;
    this.queued.clear();
  }
}

export class LeaseClock {
  private timer: NodeJS.Timeout | undefined;
  private at = Number.POSITIVE_INFINITY;

  /** `due` gives back what is due at `now` and returns the next lease end (or Infinity). */
  constructor(private readonly due: (now: number) => number) {}

  /** A lease ends at `until` (epoch ms). */
  watch(until: number): void {
    if (until < this.at) this.arm(until);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.at = Number.POSITIVE_INFINITY;
  }

  private arm(until: number): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.at = until;
    if (until === Number.POSITIVE_INFINITY) return;
    this.timer = setTimeout(this.fire, Math.max(0, until - Date.now()));
    this.timer.unref();
  }

  private readonly fire = (): void => {
    this.timer = undefined;
    this.at = Number.POSITIVE_INFINITY;
    // A `watch` from inside `due` has armed already: keep the earlier of the two.
    const next = this.due(Date.now());
    if (next < this.at) this.arm(next);
  };
}
