/**
 * @module broker/embedded
 * The zero-infrastructure broker: SQLite in WAL mode (better-sqlite3), in-process, at
 * `embedded:PATH`. Several processes may open the same file; each sees the others' messages within
 * one poll interval. Publishes that arrive in the same tick are written in one transaction (one
 * fsync with `durability: 'power'`), and so are acks.
 *
 * Durability: with `process` (SQLite `synchronous=NORMAL`, the default) a confirmed publish
 * survives a crash of any process, not a power loss or kernel crash, which may lose the last
 * commits. With `power` (`synchronous=FULL`) every confirmed publish survives those too.
 */
import { encodeJsonText } from '../../codec/json.ts';
import type { Envelope } from '../../envelope/envelope.ts';
import { ParleyError } from '../../errors.ts';
import { type Clock, systemClock, type TimerHandle } from '../../runtime/clock.ts';
import type {
  Broker,
  BrokerHistory,
  BrokerPublishOptions,
  Consumer,
  ConsumerHandler,
  ConsumerSpec,
  DeadLetterStore,
  PublishReceipt,
} from '../broker.ts';
import { checkPublish, checkSpec } from '../check.ts';
import { type ConsumerHost, EmbeddedConsumer } from './consumer.ts';
import { DeadLetters } from './dead-letters.ts';
import { EmbeddedHistory } from './history.ts';
import { type Durability, isBusy, type Leased, type SettleOp, Store, type StoredMessage } from './store.ts';

export interface EmbeddedBrokerOptions {
  /** SQLite file; `:memory:` for a broker that lives and dies with the process. */
  path: string;
  durability?: Durability;
  clock?: Clock;
  /** How often an idle consumer looks for messages other processes wrote, ms. Default 50. */
  pollInterval?: number;
  /** Publisher dedupe window for `idempotencykey`, ms. Default 10 minutes. */
  idempotencyWindow?: number;
  /** Log retention: entries older than this (ms) or beyond this count may be removed once consumed. */
  retention?: { maxAge?: number; maxMessages?: number; interval?: number };
  /** Random numbers for backoff jitter (tests pass a seeded one). */
  random?: () => number;
}

export interface EmbeddedBroker extends Broker {
  /** The log read without a group (`history.ts`). */
  readonly history: BrokerHistory;
  /** Runs retention now; returns how many log entries were removed. */
  compact(): number;
  /**
   * Rows in the log, pending lists and dead-letter store (for tests and the dashboard). Messages
   * waiting behind an earlier message of their key stay in the log: `messages` counts them,
   * `pending` does not.
   */
  stats(): { messages: number; pending: number; dead: number };
}

interface PendingPublish {
  message: StoredMessage;
  resolve(receipt: PublishReceipt): void;
  reject(error: unknown): void;
}

export function createEmbeddedBroker(options: EmbeddedBrokerOptions): EmbeddedBroker {
  return new EmbeddedBrokerImpl(options);
}

class EmbeddedBrokerImpl implements EmbeddedBroker, ConsumerHost {
  readonly store: Store;
  readonly clock: Clock;
  readonly pollInterval: number;
  readonly random: () => number;
  private readonly idempotencyWindow: number;
  private readonly retention: { maxAge: number; maxMessages: number; interval: number };
  private readonly consumers = new Set<EmbeddedConsumer>();
  private publishes: PendingPublish[] = [];
  private settles: { op: SettleOp; consumer: EmbeddedConsumer }[] = [];
  private readonly takes = new Set<EmbeddedConsumer>();
  private flushScheduled = false;
  private retentionTimer: TimerHandle | undefined;
  private closed = false;
  readonly deadLetters: DeadLetterStore;
  readonly history: EmbeddedHistory;

  constructor(options: EmbeddedBrokerOptions) {
    this.store = new Store(options.path, options.durability ?? 'process');
    this.clock = options.clock ?? systemClock;
    this.pollInterval = options.pollInterval ?? 50;
    this.random = options.random ?? Math.random;
    this.idempotencyWindow = options.idempotencyWindow ?? 10 * 60_000;
    this.retention = {
      maxAge: options.retention?.maxAge ?? 7 * 24 * 3_600_000,
      maxMessages: options.retention?.maxMessages ?? 10_000_000,
      interval: options.retention?.interval ?? 60_000,
    };
    this.deadLetters = new DeadLetters(this);
    this.history = new EmbeddedHistory({
      store: this.store,
      clock: this.clock,
      pollInterval: this.pollInterval,
      isClosed: () => this.closed,
    });
    this.scheduleRetention();
  }

  publish(envelope: Envelope, options: BrokerPublishOptions = {}): Promise<PublishReceipt> {
    if (this.closed) return Promise.reject(new ParleyError('UNAVAILABLE', 'broker is closed'));
    let body: string;
    try {
      checkPublish(envelope, options); // before the batch: one bad publish must not fail the others
      // Data with no JSON text (a BigInt, a cycle) is INVALID_ARGUMENT, as the Redis broker and the
      // hub's client say. Until 2026-12-03 JSON.stringify's TypeError was thrown at the caller.
      body = encodeJsonText(envelope);
    } catch (error) {
      return Promise.reject(error);
    }
    const now = this.clock.now();
    const message: StoredMessage = {
      id: envelope.id,
      topic: envelope.type,
      key: options.key ?? null,
      body,
      availableAt: now + Math.max(0, options.delay ?? 0),
      idempotencyKey: envelope.idempotencykey,
    };
    return new Promise((resolve, reject) => {
      this.publishes.push({ message, resolve, reject });
      this.scheduleFlush();
    });
  }

  /** Queues an ack, retry or dead-letter; all queued in one tick commit together. */
  settle(op: SettleOp, consumer: EmbeddedConsumer): void {
    this.settles.push({ op, consumer });
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  /** A consumer wants work: its lease runs in the next tick's transaction. */
  requestTake(consumer: EmbeddedConsumer): void {
    this.takes.add(consumer);
    this.scheduleFlush();
  }

  /**
   * Everything one tick asked for, in one transaction: publishes, acks and retries, and every
   * waiting consumer's lease. One commit (and with `durability: 'power'`, one fsync) for all.
   */
  flush(): void {
    this.flushScheduled = false;
    if (this.closed && this.publishes.length === 0 && this.settles.length === 0) return;
    const now = this.clock.now();
    const publishes = this.publishes;
    const settles = this.settles;
    const takes = [...this.takes];
    this.publishes = [];
    this.settles = [];
    this.takes.clear();
    let receipts: PublishReceipt[] = [];
    let taken: Map<EmbeddedConsumer, Leased[]> = new Map();
    let failure: ParleyError | undefined;
    try {
      this.store.batch(() => {
        if (publishes.length > 0) {
          receipts = this.store.publish(
            publishes.map((p) => p.message),
            now,
            this.idempotencyWindow,
          );
        }
        if (settles.length > 0)
          this.store.settle(
            settles.map((s) => s.op),
            now,
          );
        taken = new Map(takes.map((c) => [c, c.take(now)]));
      });
    } catch (error) {
      if (isBusy(error)) {
        // Another process is committing: nothing of this tick was written; try again at once
        // (on the next turn of the event loop, which stays free meanwhile).
        this.publishes = [...publishes, ...this.publishes];
        this.settles = [...settles, ...this.settles];
        for (const c of takes) this.takes.add(c);
        this.scheduleFlush();
        return;
      }
      // Failing: publishers learn it; deliveries keep their leases, which end by themselves;
      // consumers try again later.
      failure = ParleyError.from(error, 'UNAVAILABLE');
    }
    for (const [i, p] of publishes.entries()) {
      const r = receipts[i];
      if (failure === undefined && r !== undefined) p.resolve(r);
      else p.reject(failure ?? new ParleyError('INTERNAL', 'publish was not stored'));
    }
    for (const s of settles) s.consumer.settled();
    for (const c of takes) c.leased(taken.get(c) ?? [], now, failure !== undefined);
    if (failure === undefined && publishes.length > 0) {
      const topics = new Set(publishes.map((p) => p.message.topic));
      for (const c of this.consumers) if (topics.has(c.topic)) c.wake();
      this.history.wake(topics);
    }
  }

  async subscribe(spec: ConsumerSpec, handler: ConsumerHandler): Promise<Consumer> {
    if (this.closed) throw new ParleyError('UNAVAILABLE', 'broker is closed');
    checkSpec(spec);
    const consumer = new EmbeddedConsumer(this, spec, handler);
    this.store.ensureGroup(spec.group, spec.topic, spec.startFrom ?? 'now', this.clock.now());
    this.consumers.add(consumer);
    consumer.wake();
    return {
      close: async () => {
        await consumer.close();
        this.consumers.delete(consumer);
      },
    };
  }

  compact(): number {
    const now = this.clock.now();
    return this.store.compact(
      now - this.retention.maxAge,
      this.retention.maxMessages,
      now - this.idempotencyWindow,
    );
  }

  stats() {
    return this.store.counts();
  }

  /** After a replay: every consumer looks for work. */
  wakeAll(): void {
    for (const c of this.consumers) c.wake();
  }

  private scheduleRetention(): void {
    this.retentionTimer = this.clock.setTimeout(() => {
      if (this.closed) return;
      this.compact();
      this.scheduleRetention();
    }, this.retention.interval);
    this.retentionTimer.unref();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.retentionTimer?.cancel();
    this.history.wakeAll();
    await Promise.all([...this.consumers].map((c) => c.close()));
    this.consumers.clear();
    // Write what is left; while another process holds the lock, wait for it (bounded).
    const until = Date.now() + 10_000;
    this.flush();
    while ((this.publishes.length > 0 || this.settles.length > 0) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 1));
      this.flush();
    }
    this.store.close();
  }
}
