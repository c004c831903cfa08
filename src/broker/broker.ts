/**
 * @module broker
 * The seam for durable messaging, for adapter authors. A broker stores envelopes by topic (the
 * event type, or `queue:<name>` for a work queue) and delivers them to consumer groups: each group
 * gets every message once, consumers inside a group compete. The broker owns redelivery: a
 * handler that resolves acks, one that rejects nacks, and the broker retries with backoff and
 * finally dead-letters. The conformance suite in `test/conformance/broker.ts` is the contract; an
 * adapter that does not pass it is not done.
 *
 * Guarantees every broker gives (and the suite checks):
 * - at least once per group; a message is gone from a group only when acked or dead-lettered;
 * - per key, within a group, in order: the next message with a key waits until the previous is
 *   acked or dead-lettered; other keys keep flowing;
 * - a delivery is leased: if its consumer dies, it is redelivered when the lease ends;
 * - after `maxAttempts` handler failures, or at once for a `retryable: false` error, the message
 *   goes to the dead-letter store with the error's code, message and the attempt count;
 * - a handler error with a numeric `details.deferMs` puts the message back for that long without
 *   spending an attempt (a consumer whose dependency's breaker is open waits instead of failing);
 * - at most `maxInFlight` deliveries per consumer at a time (backpressure).
 */
import { createEnvelope, type Envelope } from '../envelope/envelope.ts';
import { type ErrorCode, ParleyError } from '../errors.ts';

export interface BrokerPublishOptions {
  /** Ordering key: same key, same group → handled one after another. */
  key?: string;
  /** Not delivered before this many ms have passed. */
  delay?: number;
}

export interface PublishReceipt {
  /** The envelope id stored (the first one, for a deduplicated publish). */
  id: string;
  /** True when the envelope's `idempotencykey` was seen within the window: nothing new stored. */
  duplicate: boolean;
}

export interface BackoffOptions {
  /** First retry delay, ms. Default 100. */
  initial?: number;
  /** Largest delay, ms. Default 30 000. */
  max?: number;
  /** Growth per attempt. Default 2. */
  multiplier?: number;
}

export interface ConsumerSpec {
  /** Event type, or `queue:<name>` for a work queue. */
  topic: string;
  /** Consumer group: one copy per group, consumers within it compete. */
  group: string;
  /** Handler runs before dead-letter. Default 5. */
  maxAttempts?: number;
  /** Retry delays: exponential with full jitter. */
  backoff?: BackoffOptions;
  /** How long a delivery is reserved for its consumer, ms. Default 30 000. */
  lease?: number;
  /** Deliveries a consumer holds at once. Default 64. */
  maxInFlight?: number;
  /** Where a group that does not exist yet starts: every retained message, or new ones. Default `now`. */
  startFrom?: 'beginning' | 'now';
}

export interface Delivery {
  readonly envelope: Envelope;
  /** 1 on the first delivery. */
  readonly attempt: number;
  /** Keeps the delivery reserved for another `ms` from now (a long handler). */
  extendLease(ms: number): Promise<void>;
}

/** Resolve to ack; reject to nack (a ParleyError's `retryable` and `code` are honoured). */
export type ConsumerHandler = (delivery: Delivery) => Promise<void>;

export interface Consumer {
  /** Stops taking new messages; resolves when in-flight handlers have settled. */
  close(): Promise<void>;
}

export interface DeadLetter {
  id: number;
  topic: string;
  group: string;
  envelope: Envelope;
  code: ErrorCode;
  message: string;
  retryable: boolean;
  attempts: number;
  firstFailureAt: number;
  lastFailureAt: number;
}

export interface DeadLetterFilter {
  topic?: string;
  group?: string;
  code?: ErrorCode;
  ids?: number[];
}

export interface DeadLetterStore {
  list(filter?: DeadLetterFilter, limit?: number): Promise<DeadLetter[]>;
  get(id: number): Promise<DeadLetter | undefined>;
  /** Puts matching messages back in their group, attempts reset. Returns how many. */
  replay(filter?: DeadLetterFilter): Promise<number>;
  /** Deletes matching dead letters. Returns how many. */
  purge(filter?: DeadLetterFilter): Promise<number>;
}

export interface Broker {
  /** Durable: resolves once the message is stored (the publisher's confirmation). */
  publish(envelope: Envelope, options?: BrokerPublishOptions): Promise<PublishReceipt>;
  subscribe(spec: ConsumerSpec, handler: ConsumerHandler): Promise<Consumer>;
  readonly deadLetters: DeadLetterStore;
  /** Reading a topic's retained log without a group, where the broker keeps one. */
  readonly history?: BrokerHistory;
  close(): Promise<void>;
}

/** One retained message as a history reader sees it. */
export interface HistoryEntry {
  /** Where it is in its topic's log (see `comparePositions`). */
  readonly position: string;
  readonly envelope: Envelope;
}

export interface HistoryPage {
  /** Oldest first. */
  readonly entries: HistoryEntry[];
  /** Where the next read starts: the last entry's position, or the one read after when none came. */
  readonly next: string;
  /** Messages after the position read after were removed by retention: the reader has lost some. */
  readonly gap: boolean;
}

export interface HistoryReadOptions {
  /** Entries at most (1 to 1000). Default 100. */
  limit?: number;
  /** When nothing is there yet, wait this long (ms) for a first entry. Default 0. */
  waitMs?: number;
  /**
   * Read no further than this position: no entry after it is returned (on a partitioned log, no
   * partition is read past its part of it). Default: no bound.
   */
  until?: string;
}

/**
 * A topic's retained log, read in order without a consumer group: no lease, no ack, nothing
 * changes for the groups. For readers that keep their own place, such as the gateway's server
 * push resuming a browser at its `Last-Event-ID`. What is retained, and for how long, is the
 * broker's retention; a delayed publish is in the log at the place it was stored. Brokers whose
 * messages live only in the groups' queues (RabbitMQ, MQTT) keep no such log and have none.
 *
 * Positions are one or more decimal numbers joined by `-`, growing along the log: the embedded
 * broker's sequence, a Redis stream entry id. A partitioned log (Kafka) has no order across its
 * partitions: its position is one number per partition joined by `_` (the offset each partition
 * was read up to), and of two positions one comes first only when it is behind or level on every
 * partition (see `comparePositions`). A position the broker does not recognise (another broker's,
 * or made up) is an INVALID_ARGUMENT error.
 */
export interface BrokerHistory {
  /** The newest position of `topic` (one before every message while it has none): reading after it gives only new ones. */
  latest(topic: string): Promise<string>;
  /** The entries of `topic` after `after`, oldest first. */
  read(topic: string, after: string, options?: HistoryReadOptions): Promise<HistoryPage>;
}

const POSITION = /^\d{1,16}(?:(?:-\d{1,16})*|(?:_\d{1,16})+)$/;

/** True for a string shaped like a history position (a broker may still not recognise it). */
export function isPosition(value: string): boolean {
  return POSITION.test(value);
}

/** For brokers: a read's `limit`, 1 to 1000 (default 100). */
export function historyLimit(limit: number | undefined): number {
  return Math.min(1000, Math.max(1, Math.floor(limit ?? 100) || 1));
}

const SEQUENCE = /^\d{1,15}$/;

/**
 * For brokers whose positions are one sequence number (the embedded broker, JetStream): `after`
 * as that number, or INVALID_ARGUMENT naming the broker.
 */
export function sequenceOf(after: string, broker: string): number {
  if (!SEQUENCE.test(after)) {
    throw new ParleyError('INVALID_ARGUMENT', `not a position of the ${broker}: ${after.slice(0, 40)}`);
  }
  return Number(after);
}

/**
 * Orders two positions of one topic: negative when `a` comes first, 0 when equal, positive when
 * `b` does. Partitioned positions (`_`) are ordered only when one is behind or level with the
 * other on every partition (a missing part is 0); otherwise, and for positions of two kinds, NaN:
 * neither comes first, so test `c <= 0`, never `!(c > 0)`.
 */
export function comparePositions(a: string, b: string): number {
  const partitioned = a.includes('_') || b.includes('_');
  if (partitioned && (a.includes('-') || b.includes('-'))) return Number.NaN;
  const x = a.split(partitioned ? '_' : '-');
  const y = b.split(partitioned ? '_' : '-');
  let behind = false;
  let ahead = false;
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = BigInt(x[i] ?? '0') - BigInt(y[i] ?? '0');
    if (d === 0n) continue;
    if (!partitioned) return d < 0n ? -1 : 1;
    if (d < 0n) behind = true;
    else ahead = true;
  }
  if (behind && ahead) return Number.NaN;
  return behind ? -1 : ahead ? 1 : 0;
}

/**
 * For brokers whose log has one order: `page` without its entries after `until` (when given),
 * `next` then being the last entry kept, or `after` when none was.
 */
export function boundPage(page: HistoryPage, after: string, until: string | undefined): HistoryPage {
  if (until === undefined) return page;
  const keep = page.entries.findIndex((e) => !(comparePositions(e.position, until) <= 0));
  if (keep === -1) return page;
  const entries = page.entries.slice(0, keep);
  return { entries, next: entries.at(-1)?.position ?? after, gap: page.gap };
}

/** The topic of a work queue: one group, every consumer competes, each message handled once. */
export function queueTopic(name: string): string {
  return `queue:${name}`;
}

/**
 * Puts `data` on work queue `queue`: exactly one consumer of the queue's group handles it.
 * Consumers subscribe with `{ topic: queueTopic(queue), group: queue }`.
 */
export function send(
  broker: Broker,
  queue: string,
  data: unknown,
  options: BrokerPublishOptions & { source?: string } = {},
): Promise<PublishReceipt> {
  const { source = '/parley/send', ...publish } = options;
  return broker.publish(createEnvelope({ source, type: queueTopic(queue), data }), publish);
}
