/**
 * @module adapters/kafka/consumer
 * One Parley consumer = one Kafka consumer-group member (its own librdkafka client). Records are
 * read in partition order into per-key queues held in memory; the head of each key's queue is
 * handed to the handler (at most `maxInFlight` at once), so a key waits for its previous message
 * while other keys flow. Retries are in-consumer: a failed message goes back to the head of its
 * key's queue with a backoff deadline (only that key pauses; nothing is re-published), and a
 * `details.deferMs` error does the same without spending an attempt. Offsets are committed
 * manually, per partition, up to the lowest offset not yet acked or dead-lettered, so a crash
 * redelivers everything unsettled (at least once; attempt counts of in-memory retries restart).
 *
 * Leases, rebalances and commits: `rebalance.ts`.
 */
import type { ConsumerHandler, ConsumerSpec, Delivery } from '../../broker/broker.ts';
import { checkLease, DEFAULT_LEASE_MS } from '../../broker/check.ts';
import {
  badBody,
  deferOf,
  failure,
  farNotBefore,
  permanent,
  runHandler,
  spentAttempts,
  undecodableLetter,
} from '../../broker/outcome.ts';
import type { Envelope } from '../../envelope/envelope.ts';
import { ParleyError } from '../../errors.ts';
import { backoffDelay } from '../../resilience/backoff.ts';
import { type Config, type Consumer, call, connect, type Driver, header, type Message } from './driver.ts';
import { kafkaError } from './errors.ts';
import type { DeadRecord } from './protocol.ts';
import { envelopeOfRecord, HEADER, type headers } from './protocol.ts';
import { Assignment, type Entry } from './rebalance.ts';

/** What a consumer needs from its broker. */
export interface ConsumerHost {
  readonly driver: Driver;
  consumerConfig(group: string): Config;
  topicName(topic: string): string;
  ensureTopic(kafkaTopic: string): Promise<number>;
  produce(
    kafkaTopic: string,
    value: Buffer,
    options: { key?: string | null; partition?: number | null; headers?: ReturnType<typeof headers> },
  ): Promise<{ partition: number; offset: number }>;
  deadLetter(record: DeadRecord): Promise<number>;
  /** The most bytes of a body that was no envelope its dead letter may hold. */
  letterBodyRoom(): number;
  readonly random: () => number;
  /** How long one poll of the driver may block, ms. */
  readonly pollMs: number;
}

/** How long a full buffer waits for room before the consumer pauses its partitions (see `poll`). */
export const PAUSE_AFTER_MS = 1_000;

export class KafkaGroupConsumer {
  private readonly topic: string;
  private readonly kafkaTopic: string;
  private readonly group: string;
  private readonly maxAttempts: number;
  private readonly backoff: { initial: number; max: number; multiplier: number };
  private readonly leaseMs: number;
  private readonly maxInFlight: number;
  private readonly maxBuffered: number;
  private consumer: Consumer | undefined;
  private partitionCount = 0;
  private readonly assignment: Assignment;
  private readonly queues = new Map<string, Entry[]>();
  /**
   * Keys whose queue head may be waiting for a handler (checked when looked at), in the order they
   * became so: `dispatch` looks at these only, not at every queue (most heads are running when
   * maxInFlight is large: walking past them cost O(maxInFlight) per settled message).
   */
  private readonly ready = new Set<string>();
  /** Keys whose head waits for its `notBefore` (a backoff, a deferral); looked at on the wake timer. */
  private readonly delayed = new Set<string>();
  private buffered = 0;
  private inflight = 0;
  private paused = false;
  private closed = false;
  private closing: Promise<void> | undefined;
  private connecting: Promise<unknown> | undefined;
  private loop: Promise<void> = Promise.resolve();
  private wakeTimer: ReturnType<typeof setTimeout> | undefined;
  private wakeAt = Number.POSITIVE_INFINITY;
  private readonly settledWaiters = new Set<() => void>();
  private assigned: (() => void) | undefined;

  constructor(
    private readonly host: ConsumerHost,
    private readonly spec: ConsumerSpec,
    private readonly handler: ConsumerHandler,
  ) {
    this.topic = spec.topic;
    this.group = spec.group;
    this.kafkaTopic = host.topicName(spec.topic);
    this.maxAttempts = Math.max(1, spec.maxAttempts ?? 5);
    this.backoff = { initial: 100, max: 30_000, multiplier: 2, ...spec.backoff };
    this.leaseMs = spec.lease ?? DEFAULT_LEASE_MS;
    this.maxInFlight = Math.max(1, spec.maxInFlight ?? 64);
    this.maxBuffered = Math.max(this.maxInFlight * 4, 256);
    this.assignment = new Assignment({
      kafkaTopic: this.kafkaTopic,
      group: this.group,
      consumer: () => this.consumer,
      closed: () => this.closed,
      partitionCount: () => this.partitionCount,
      random: () => host.random(),
      produce: (value, options) => host.produce(this.kafkaTopic, value, options),
      entries: () => [...this.queues.values()].flat(),
      queued: (entry) => this.queues.get(entry.queue)?.includes(entry) === true,
      drop: (entry) => this.drop(entry),
      finish: (entry, releases) => this.finish(entry, releases),
      notifySettled: () => this.notifySettled(),
      waitSettled: (ms) => new Promise<void>((r) => this.waitSettled(r, ms)),
      dispatch: (entry) => this.dispatch(entry),
      assigned: () => {
        this.paused = false;
        this.assigned?.();
      },
    });
  }

  /**
   * Joins the group; resolves once the first assignment arrived (or after 15 s, still joining).
   * A new group's starting offsets are committed before it joins, so nothing published after
   * `subscribe` was called is missed even by a member still joining.
   */
  async start(): Promise<void> {
    this.partitionCount = await this.host.ensureTopic(this.kafkaTopic);
    this.stillOpen();
    const consumer = new this.host.driver.KafkaConsumer({
      ...this.host.consumerConfig(this.group),
      rebalance_cb: (err: { code: number }, assignment: { topic: string; partition: number }[]) =>
        this.assignment.rebalance(err.code, assignment),
    });
    this.consumer = consumer;
    consumer.on('event.error', () => undefined); // connection trouble: librdkafka retries
    this.connecting = connect(consumer, `connect consumer of group ${this.group}`);
    await this.connecting;
    this.stillOpen();
    consumer.setDefaultConsumeTimeout(this.host.pollMs);
    await this.initGroup(consumer);
    this.stillOpen();
    const assigned = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 15_000);
      this.assigned = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    consumer.subscribe([this.kafkaTopic]);
    this.loop = this.poll(consumer);
    await assigned;
    this.stillOpen();
  }

  /**
   * Closed while starting (its broker closing): `subscribe` fails, `close` disconnects what was
   * connected. Until 2026-12-03 the start went on: its client was never disconnected.
   */
  private stillOpen(): void {
    if (this.closed) throw new ParleyError('UNAVAILABLE', 'broker is closed');
  }

  /**
   * A group new to this topic starts at the end of every partition (`now`) by committing the
   * current high watermarks before it joins, or at the beginning (`auto.offset.reset=earliest`
   * applies). A group that has offsets keeps them.
   */
  private async initGroup(consumer: Consumer): Promise<void> {
    const parts = [...Array(this.partitionCount).keys()].map((partition) => ({
      topic: this.kafkaTopic,
      partition,
    }));
    const committed = await call<{ offset?: number }[]>('read committed offsets', (cb) =>
      consumer.committed(parts, 10_000, cb),
    );
    const known = committed.some((c) => typeof c.offset === 'number' && c.offset >= 0);
    if (known || (this.spec.startFrom ?? 'now') === 'beginning') return;
    const ends = await Promise.all(
      parts.map(async (tp) => {
        const w = await call<{ highOffset: number }>('read high watermark', (cb) =>
          consumer.queryWatermarkOffsets(tp.topic, tp.partition, 10_000, cb),
        );
        return { ...tp, offset: w.highOffset };
      }),
    );
    try {
      consumer.commitSync(ends);
    } catch (error) {
      throw kafkaError(error, `start group ${this.group} from now`);
    }
  }

  /**
   * Backpressure. While the buffer is full the loop waits for room instead of fetching; librdkafka
   * keeps what it fetched ahead. Only a buffer that stays full for `PAUSE_AFTER_MS` pauses the
   * partitions, so that `consume` runs again (the group's rebalances and `max.poll.interval.ms`
   * need it) without taking more. Pausing at once, every time the buffer filled, made handlers
   * slower than the fetch (the usual case: they do I/O) stall: a pause drops every message
   * librdkafka fetched ahead, and after the resume it fetched them again, up to a second later on
   * the mock cluster. 50,000 messages to handlers of 20 ms, 100 in flight: 112 s with a pause
   * each time, 13 s now (10 s is the handlers' own time; 3 s the mock's first join).
   */
  private async poll(consumer: Consumer): Promise<void> {
    let fullSince: number | undefined;
    while (!this.closed) {
      const full = this.buffered >= this.maxBuffered;
      if (!full) fullSince = undefined;
      else if (!this.paused) {
        fullSince ??= Date.now();
        if (Date.now() - fullSince < PAUSE_AFTER_MS) {
          await new Promise<void>((resolve) => this.waitSettled(resolve, 25));
          continue;
        }
      }
      this.applyBackpressure(consumer, full);
      let batch: Message[] = [];
      try {
        batch = await call<Message[]>('consume', (cb) => consumer.consume(100, cb));
      } catch {
        // Broker unreachable or a rebalance under way: librdkafka reconnects; look again soon.
        await new Promise((r) => setTimeout(r, 100));
      }
      for (const m of batch) this.take(m);
      if (batch.length > 0) this.dispatch();
    }
  }

  private applyBackpressure(consumer: Consumer, full: boolean): void {
    if (full === this.paused) return;
    const parts = this.assignment.owned().map((partition) => ({ topic: this.kafkaTopic, partition }));
    try {
      if (full) consumer.pause(parts);
      else consumer.resume(parts);
      this.paused = full;
    } catch {
      // A partition just revoked: the next round tries again.
    }
  }

  private take(m: Message): void {
    const ps = this.assignment.get(m.partition);
    if (ps === undefined || ps.revoking || m.offset < ps.next) return;
    ps.next = m.offset + 1;
    const only = header(m.headers, HEADER.group);
    if (only !== undefined && only !== this.group) {
      this.assignment.scheduleCommit(); // another group's replay: nothing to do but move past it
      return;
    }
    ps.outstanding.add(m.offset);
    const key = header(m.headers, HEADER.key) ?? (m.key == null ? null : String(m.key));
    let envelope: Envelope;
    let bad: ParleyError | undefined;
    try {
      envelope = envelopeOfRecord(m.value);
    } catch (error) {
      const letter = undecodableLetter(
        `${m.partition}:${m.offset}`,
        this.topic,
        m.value ?? Buffer.alloc(0),
        badBody(ParleyError.from(error)),
        this.host.letterBodyRoom(),
      );
      bad = letter.error;
      envelope = letter.envelope;
    }
    let notBefore = Number(header(m.headers, HEADER.notBefore) ?? 0) || 0;
    const far = farNotBefore(notBefore, Date.now());
    if (far !== undefined) {
      bad ??= far; // dead-lettered now, not waited for
      notBefore = 0;
    }
    const entry: Entry = {
      partition: m.partition,
      offset: m.offset,
      queue: key ?? `#${m.partition}:${m.offset}`,
      key,
      envelope,
      bad,
      // A header from elsewhere may say anything (`spentAttempts`).
      attempt: spentAttempts(header(m.headers, HEADER.attempts)) + 1,
      notBefore,
      run: undefined,
      lease: undefined,
      firstFailureAt: undefined,
    };
    const queue = this.queues.get(entry.queue);
    if (queue === undefined) {
      this.queues.set(entry.queue, [entry]);
      this.ready.add(entry.queue);
    } else queue.push(entry);
    this.buffered++;
  }

  /**
   * Hands ready queue heads to the handler while there is room; plans the next look. `freed`: a
   * message whose handler let go of it (its queue's head may be free again), or that left its
   * queue (the next one may be).
   */
  private dispatch(freed?: Entry): void {
    if (freed !== undefined && this.queues.has(freed.queue)) this.ready.add(freed.queue);
    if (this.closed) return;
    const now = Date.now();
    let soonest = Number.POSITIVE_INFINITY;
    for (const key of this.ready) {
      if (this.inflight >= this.maxInFlight) break;
      const head = this.queues.get(key)?.[0];
      this.ready.delete(key);
      if (head === undefined || head.run !== undefined) continue;
      if (head.notBefore > now) {
        soonest = Math.min(soonest, head.notBefore);
        this.delayed.add(key);
      } else this.run(head);
    }
    if (soonest < this.wakeAt) {
      if (this.wakeTimer !== undefined) clearTimeout(this.wakeTimer);
      this.wakeAt = soonest;
      this.wakeTimer = setTimeout(
        () => {
          this.wakeTimer = undefined;
          this.wakeAt = Number.POSITIVE_INFINITY;
          // Every waiting key is looked at again; those still early go back, and set the next wake.
          for (const key of this.delayed) this.ready.add(key);
          this.delayed.clear();
          this.dispatch();
        },
        Math.max(0, soonest - now),
      );
    }
  }

  private run(entry: Entry): void {
    const token = {};
    entry.run = token;
    this.inflight++;
    if (entry.bad !== undefined) {
      void this.deadLetter(entry, token, entry.bad);
      return;
    }
    entry.lease = setTimeout(() => this.assignment.leaseEnded(entry, token), this.leaseMs);
    const delivery: Delivery = {
      envelope: entry.envelope,
      attempt: entry.attempt,
      extendLease: async (ms: number) => {
        // A timer takes NaN, and more than 2^31 − 1 ms, as 1 ms: the lease would end at once.
        checkLease(ms);
        if (entry.run !== token)
          throw new ParleyError('FAILED_PRECONDITION', 'the lease was lost: the message was handed on');
        if (entry.lease !== undefined) clearTimeout(entry.lease);
        entry.lease = setTimeout(() => this.assignment.leaseEnded(entry, token), ms);
      },
    };
    runHandler(this.handler, delivery).then(
      () => this.outcome(entry, token, undefined),
      (error: unknown) => this.outcome(entry, token, ParleyError.from(error)),
    );
  }

  private outcome(entry: Entry, token: object, error: ParleyError | undefined): void {
    if (entry.run !== token) {
      // The lease ended before this handler did: the message went on without it.
      this.release();
      return;
    }
    if (entry.lease !== undefined) clearTimeout(entry.lease);
    if (error === undefined) {
      this.finish(entry);
      return;
    }
    const now = Date.now();
    const defer = deferOf(error);
    if (defer !== undefined) {
      entry.notBefore = now + defer;
    } else if (permanent(error) || entry.attempt >= this.maxAttempts) {
      entry.firstFailureAt ??= now;
      void this.deadLetter(entry, token, error);
      return;
    } else {
      entry.firstFailureAt ??= now;
      entry.notBefore = now + backoffDelay(this.backoff, entry.attempt, this.host.random);
      entry.attempt++;
    }
    entry.run = undefined;
    this.release(entry);
  }

  /** Writes the dead letter, then settles; while Kafka refuses, tries again (the key waits). */
  private async deadLetter(entry: Entry, token: object, error: ParleyError): Promise<void> {
    const now = Date.now();
    const record: DeadRecord = {
      kind: 'dead',
      topic: this.topic,
      group: this.group,
      key: entry.key,
      envelope: entry.envelope,
      ...failure(error),
      attempts: entry.attempt,
      firstFailureAt: entry.firstFailureAt ?? now,
      lastFailureAt: now,
    };
    for (let wait = 100; !this.closed; wait = Math.min(wait * 2, 5_000)) {
      try {
        await this.host.deadLetter(record);
        if (entry.run === token) this.finish(entry);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, wait));
      }
    }
    if (entry.run === token) entry.run = undefined;
    this.release(entry);
  }

  /** Settled (acked or dead-lettered): leaves the queue; the commit may move past it. */
  private finish(entry: Entry, releases = true): void {
    entry.run = undefined;
    const queue = this.queues.get(entry.queue);
    const i = queue?.indexOf(entry) ?? -1;
    if (queue !== undefined && i >= 0) {
      queue.splice(i, 1);
      if (queue.length === 0) this.queues.delete(entry.queue);
      this.buffered--;
    }
    this.assignment.get(entry.partition)?.outstanding.delete(entry.offset);
    this.assignment.scheduleCommit();
    if (releases) this.release(entry);
    else this.dispatch(entry);
  }

  /** Forgets a message without settling it (its partition is leaving this member). */
  private drop(entry: Entry): void {
    const queue = this.queues.get(entry.queue);
    const i = queue?.indexOf(entry) ?? -1;
    if (queue !== undefined && i >= 0) {
      queue.splice(i, 1);
      if (queue.length === 0) this.queues.delete(entry.queue);
      else if (i === 0) this.ready.add(entry.queue);
      this.buffered--;
    }
    this.notifySettled();
  }

  /** A handler's slot is free; `entry`, its message, may have left its queue's head free too. */
  private release(entry?: Entry): void {
    this.inflight--;
    this.notifySettled();
    this.dispatch(entry);
  }

  private notifySettled(): void {
    for (const w of [...this.settledWaiters]) w();
  }

  private waitSettled(resolve: () => void, ms: number): void {
    const done = () => {
      clearTimeout(timer);
      this.settledWaiters.delete(done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    this.settledWaiters.add(done);
  }

  /**
   * Stops taking messages; waits for running handlers (those still holding a lease). Idempotent:
   * every call gets the first one's promise (until 2026-12-03 a second call returned at once).
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    if (this.wakeTimer !== undefined) clearTimeout(this.wakeTimer);
    this.assigned?.();
    this.assignment.stop();
    const holding = () => [...this.queues.values()].some((q) => q.some((e) => e.run !== undefined));
    while (holding()) await new Promise<void>((r) => this.waitSettled(r, 50));
    await this.loop;
    const consumer = this.consumer;
    // Closed while it connected: wait for that first; a failed connect has nothing to commit.
    if (consumer === undefined) return;
    try {
      await this.connecting;
      const offsets = this.assignment.commitable(true);
      if (offsets.length > 0) consumer.commitSync(offsets);
    } catch {
      // Not committed: redelivered to the group (at least once).
    }
    for (const e of [...this.queues.values()].flat()) if (e.lease !== undefined) clearTimeout(e.lease);
    await new Promise<void>((r) => consumer.disconnect(() => r()));
  }
}
