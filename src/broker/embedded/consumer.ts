/**
 * @module broker/embedded/consumer
 * One consumer of the embedded broker: asks the broker's tick for leases while it has room, runs
 * the handler on each delivery, and queues the outcome (ack, retry with backoff, dead-letter).
 */
import type { Envelope } from '../../envelope/envelope.ts';
import { assertEnvelope } from '../../envelope/envelope.ts';
import { uuidv7 } from '../../envelope/ids.ts';
import { ParleyError } from '../../errors.ts';
import { type Backoff, backoffDelay, DEFAULT_BACKOFF } from '../../resilience/backoff.ts';
import type { Clock, TimerHandle } from '../../runtime/clock.ts';
import type { ConsumerHandler, ConsumerSpec } from '../broker.ts';
import { checkLease, DEFAULT_LEASE_MS } from '../check.ts';
import { badBody, deferOf, failure, permanent, runHandler } from '../outcome.ts';
import type { Leased, SettleOp, Store } from './store.ts';

/** What a consumer needs from its broker. */
export interface ConsumerHost {
  readonly store: Store;
  readonly clock: Clock;
  readonly pollInterval: number;
  readonly random: () => number;
  settle(op: SettleOp, consumer: EmbeddedConsumer): void;
  requestTake(consumer: EmbeddedConsumer): void;
}

/** One consumer of a group: leases due messages, runs the handler, queues the outcome. */
export class EmbeddedConsumer {
  readonly topic: string;
  private readonly group: string;
  private readonly owner = uuidv7();
  private readonly maxAttempts: number;
  private readonly backoff: Backoff;
  private readonly lease: number;
  private readonly maxInFlight: number;
  private inflight = 0;
  private closed = false;
  private due: number | undefined;
  private timer: TimerHandle | undefined;
  private drained: (() => void) | undefined;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly broker: ConsumerHost,
    spec: ConsumerSpec,
    private readonly handler: ConsumerHandler,
  ) {
    this.topic = spec.topic;
    this.group = spec.group;
    this.maxAttempts = Math.max(1, spec.maxAttempts ?? 5);
    this.backoff = { ...DEFAULT_BACKOFF, ...spec.backoff };
    this.lease = spec.lease ?? DEFAULT_LEASE_MS;
    this.maxInFlight = Math.max(1, spec.maxInFlight ?? 64);
  }

  /** Looks for work in the next tick's transaction (coalesced). */
  wake(): void {
    if (this.closed || this.inflight >= this.maxInFlight) return;
    this.broker.requestTake(this);
  }

  /** Inside the tick's transaction: leases what there is room for. */
  take(now: number): Leased[] {
    const room = this.maxInFlight - this.inflight;
    if (this.closed || room <= 0) return [];
    const leased = this.broker.store.take({
      grp: this.group,
      topic: this.topic,
      owner: this.owner,
      now,
      lease: this.lease,
      room,
    });
    // Not full: find out when to look again (a retry or delay coming due, or a lease ending).
    this.due = leased.length < room ? this.broker.store.nextDue(this.group, this.topic) : undefined;
    return leased;
  }

  /** After the tick's commit: runs the handler on what was leased, and plans the next look. */
  leased(rows: Leased[], now: number, failed: boolean): void {
    for (const l of rows) this.deliver(l.seq, l.attempts, l.body);
    if (this.closed || failed) {
      if (!this.closed) this.poll(this.broker.pollInterval);
      return;
    }
    if (this.inflight >= this.maxInFlight) return; // full: settled deliveries wake us
    const wait = this.due === undefined ? this.broker.pollInterval : Math.max(0, this.due - now);
    this.poll(Math.min(wait, this.broker.pollInterval));
  }

  private poll(ms: number): void {
    this.timer?.cancel();
    this.timer = this.broker.clock.setTimeout(() => {
      this.timer = undefined;
      this.wake();
    }, ms);
  }

  private deliver(seq: number, attempt: number, body: string | undefined): void {
    this.inflight++;
    const op = { grp: this.group, topic: this.topic, seq, owner: this.owner };
    let envelope: Envelope;
    try {
      envelope = assertEnvelope(JSON.parse(body ?? ''));
    } catch (error) {
      const e = ParleyError.from(error, 'INVALID_ARGUMENT');
      this.broker.settle(
        { kind: 'dead', ...op, failure: failure(e.code === 'INVALID_ARGUMENT' ? e : badBody(e)) },
        this,
      );
      return;
    }
    const delivery = {
      envelope,
      attempt,
      extendLease: async (ms: number) => {
        // Until 2026-12-03 NaN or Infinity was taken: stored as NULL or inf, the lease never ended,
        // and the message (and its key) waited for good if its consumer went away.
        checkLease(ms);
        if (
          !this.broker.store.extendLease(
            this.group,
            this.topic,
            seq,
            this.owner,
            this.broker.clock.now() + ms,
          )
        ) {
          throw new ParleyError(
            'FAILED_PRECONDITION',
            'the lease was lost: another consumer has the message',
          );
        }
      },
    };
    runHandler(this.handler, delivery).then(
      () => this.broker.settle({ kind: 'ack', ...op }, this),
      (error: unknown) => {
        const e = ParleyError.from(error);
        const defer = deferOf(e);
        if (defer !== undefined) {
          // The handler's dependency is known to be down (an open breaker): wait, spend nothing.
          this.broker.settle({ kind: 'defer', ...op, delay: defer }, this);
        } else if (permanent(e) || attempt >= this.maxAttempts) {
          this.broker.settle({ kind: 'dead', ...op, failure: failure(e) }, this);
        } else {
          const delay = backoffDelay(this.backoff, attempt, this.broker.random);
          this.broker.settle({ kind: 'retry', ...op, delay, failure: failure(e) }, this);
        }
      },
    );
  }

  /** The outcome of one delivery was committed. */
  settled(): void {
    this.inflight--;
    if (this.closed) {
      if (this.inflight === 0) this.drained?.();
      return;
    }
    this.wake();
  }

  close(): Promise<void> {
    this.closed = true;
    this.timer?.cancel();
    // One wait, shared by every close: the broker's close closes its consumers again, and until
    // 2026-12-03 each close replaced the waiter of the one before, which then never resolved.
    this.closing ??=
      this.inflight > 0 ? new Promise<void>((resolve) => (this.drained = resolve)) : Promise.resolve();
    return this.closing;
  }
}
