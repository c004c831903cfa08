/**
 * @module adapters/kafka/history
 * The Kafka broker's topics read without a consumer group (`BrokerHistory`). Kafka keeps order per
 * partition only, so a position is one offset per partition, joined by `_` (`12_0_7_3_9_4`: the
 * next offset to read in each), and two positions are ordered only when one is behind or level
 * with the other on every partition (`comparePositions`).
 *
 * A page merges the partitions by record timestamp (the publish time the producer stamps; ties by
 * partition), each partition kept in its order: an entry is handed out only once every partition
 * still to be read has shown a record at least as late, so a page holds the earliest records after
 * its position. Messages published one after another therefore come back in that order; records
 * stamped within the same millisecond on two partitions come in partition order. Two readers that
 * take the same position see the same sequence, except where a record lands after a later-stamped
 * one on another partition was read (a slow producer): their positions may then be unordered. A
 * position still says exactly which records were handed out (those below it on each partition),
 * so the gateway's push resumes such an id once it has read past it on every partition.
 *
 * Reads use consumers of their own with partitions assigned by hand (no group join, no commits),
 * kept in a small pool between reads. Gaps: retention removes whole segments from the head of a
 * partition, so a position behind a partition's first kept offset has lost records. Records meant
 * for one group (a dead-letter replay or a lease handed over, `parley-group` header) are not new
 * events and are passed over, as are records that are not envelopes.
 */
import {
  type BrokerHistory,
  type HistoryEntry,
  type HistoryPage,
  type HistoryReadOptions,
  historyLimit,
} from '../../broker/broker.ts';
import type { Envelope } from '../../envelope/envelope.ts';
import { ParleyError } from '../../errors.ts';
import { IdlePool } from '../idle-pool.ts';
import {
  type Consumer,
  call,
  disconnect,
  header,
  type Message,
  type TopicPartitionOffset,
} from './driver.ts';
import { envelopeOfRecord, HEADER } from './protocol.ts';

export interface KafkaHistoryHost {
  kafkaTopic(topic: string): string;
  /** Creates the topic if needed; its partition count. */
  ensureTopic(kafkaTopic: string): Promise<number>;
  watermarks(kafkaTopic: string, partition: number): Promise<{ lowOffset: number; highOffset: number }>;
  /** A connected consumer with nothing assigned. */
  reader(): Promise<Consumer>;
  isClosed(): boolean;
}

const PART = /^\d{1,15}$/;
/** Readers kept for the next reads. */
const IDLE_READERS = 4;
/** An idle reader stops fetching (its partitions are unassigned) after this long, ms. */
const IDLE_MS = 1_000;
/** A read gives up when records the watermarks promised have not come within this time, ms. */
const READ_TIMEOUT_MS = 10_000;

/**
 * A consumer and where it stands in one topic. Kept between reads: a read that goes on from where
 * the last one ended (the next page of a resume, a follower's next read) takes the records
 * already fetched and keeps the partitions assigned, instead of assigning them again.
 */
interface Reader {
  readonly consumer: Consumer;
  cursor: Cursor | undefined;
}

interface Cursor {
  readonly name: string;
  /** The position the last read ended at (its `next`). */
  next: string;
  /** Per partition: the offset after the last record handed out. */
  readonly at: number[];
  /** Per partition: the next offset expected from the consumer (`at` plus what is buffered). */
  readonly fetched: number[];
  /** Per partition: records fetched and not handed out yet, in offset order. */
  readonly buffers: Message[][];
}

export class KafkaHistory implements BrokerHistory {
  private readonly idle = new IdlePool<Reader>(IDLE_READERS, IDLE_MS);
  private readonly busy = new Set<Reader>();
  private closed = false;

  constructor(private readonly host: KafkaHistoryHost) {}

  async latest(topic: string): Promise<string> {
    this.open();
    const name = this.host.kafkaTopic(topic);
    const marks = await this.marks(name, await this.host.ensureTopic(name));
    return marks.map((m) => m.highOffset).join('_');
  }

  async read(topic: string, after: string, options: HistoryReadOptions = {}): Promise<HistoryPage> {
    this.open();
    const name = this.host.kafkaTopic(topic);
    const count = await this.host.ensureTopic(name);
    const from = offsetsOf(after, count);
    const until = options.until === undefined ? undefined : offsetsOf(options.until, count);
    const limit = historyLimit(options.limit);
    const deadline = Date.now() + Math.max(0, options.waitMs ?? 0);
    const reader = await this.acquire(name, after);
    try {
      let cursor = reader.cursor;
      if (
        cursor === undefined ||
        cursor.name !== name ||
        cursor.next !== after ||
        cursor.at.length !== count
      ) {
        cursor = { name, next: after, at: [...from], fetched: [...from], buffers: from.map(() => []) };
        reader.cursor = cursor;
        assignAll(reader.consumer, cursor);
      }
      for (;;) {
        const page = await this.page(reader.consumer, cursor, after, until, limit);
        if (page.entries.length > 0 || page.gap || page.next !== after || Date.now() >= deadline) return page;
        // Nothing after the position yet: wait on the partitions for a record, then read again.
        await this.waitForRecord(reader.consumer, cursor, until, deadline);
      }
    } catch (error) {
      reader.cursor = undefined;
      try {
        reader.consumer.unassign();
      } catch {
        // disconnected (the broker closed): nothing is assigned any more
      }
      throw error;
    } finally {
      this.release(reader);
    }
  }

  /** Disconnects the readers (with the broker); reads in progress fail. */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.idle.drain(), ...this.busy];
    this.busy.clear();
    await Promise.all(all.map((r) => disconnect(r.consumer)));
  }

  private open(): void {
    if (this.closed || this.host.isClosed()) throw new ParleyError('UNAVAILABLE', 'broker is closed');
  }

  private marks(name: string, count: number) {
    return Promise.all(Array.from({ length: count }, (_, p) => this.host.watermarks(name, p)));
  }

  /** The next page after where `cursor` stands, up to where each partition ends now and `until`. */
  private async page(
    consumer: Consumer,
    cursor: Cursor,
    after: string,
    until: readonly number[] | undefined,
    limit: number,
  ): Promise<HistoryPage> {
    const { at, fetched, buffers } = cursor;
    const started = at.join('_');
    const marks = await this.marks(cursor.name, at.length);
    let gap = false;
    let reassign = false;
    for (const [p, m] of marks.entries()) {
      if ((at[p] as number) >= m.lowOffset) continue;
      // Retention removed records this reader had not handed out.
      gap = true;
      at[p] = m.lowOffset;
      if ((fetched[p] as number) < m.lowOffset) {
        fetched[p] = m.lowOffset;
        buffers[p] = [];
        reassign = true;
      } else {
        buffers[p] = (buffers[p] as Message[]).filter((r) => r.offset >= m.lowOffset);
      }
    }
    if (reassign) assignAll(consumer, cursor);
    // Each partition is read up to where it ends now, and no further than `until`.
    const stop = marks.map((m, p) => Math.min(m.highOffset, until?.[p] ?? Number.MAX_SAFE_INTEGER));
    const entries: HistoryEntry[] = [];
    const giveUp = Date.now() + READ_TIMEOUT_MS;
    while (entries.length < limit) {
      // The earliest head among the partitions; none while one still to read shows no record.
      let pick: number | undefined;
      let blocked = false;
      for (let p = 0; p < buffers.length; p++) {
        const head = (buffers[p] as Message[])[0];
        if (head === undefined) {
          if ((fetched[p] as number) < (stop[p] as number)) blocked = true;
          continue;
        }
        if (head.offset >= (stop[p] as number)) continue; // past where this page stops
        const best = pick === undefined ? undefined : (buffers[pick] as Message[])[0];
        if (best === undefined || (head.timestamp ?? 0) < (best.timestamp ?? 0)) pick = p;
      }
      if (blocked) {
        if (this.closed) throw new ParleyError('UNAVAILABLE', 'broker is closed');
        if (Date.now() > giveUp) {
          throw new ParleyError('UNAVAILABLE', `kafka: the history of ${cursor.name} could not be read`);
        }
        const batch = await call<Message[]>('history read', (cb) => consumer.consume(limit, cb));
        take(cursor, batch);
        // Offsets that hold no record (a transaction marker, a compacted record) are passed by
        // the consumer's position, not by a record: a partition can end in one.
        if (batch.length === 0) passHoles(consumer, cursor, stop);
        continue;
      }
      if (pick === undefined) break; // every partition read up to where it stops
      const m = (buffers[pick] as Message[]).shift() as Message;
      at[pick] = m.offset + 1;
      const envelope = envelopeOf(m);
      if (envelope !== undefined) entries.push({ position: at.join('_'), envelope });
    }
    const reached = at.join('_');
    // Nothing handed out nor passed over: `after` as given (a short one stays short).
    const next = reached === started ? after : reached;
    cursor.next = next;
    return { entries, next, gap };
  }

  /** Resolves when a record after the cursor (within `until`) is fetched, or at the deadline. */
  private async waitForRecord(
    consumer: Consumer,
    cursor: Cursor,
    until: readonly number[] | undefined,
    deadline: number,
  ): Promise<void> {
    const bound = (p: number) => until?.[p] ?? Number.MAX_SAFE_INTEGER;
    if (cursor.at.every((o, p) => o >= bound(p))) {
      await new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())));
      return;
    }
    const fetchedWithin = () =>
      cursor.buffers.some((b, p) =>
        b.some((m) => m.offset >= (cursor.at[p] as number) && m.offset < bound(p)),
      );
    while (!fetchedWithin() && Date.now() < deadline && !this.closed) {
      take(cursor, await call<Message[]>('history wait', (cb) => consumer.consume(100, cb)));
    }
  }

  private async acquire(name: string, after: string): Promise<Reader> {
    // One that stands where this read starts, else any, else a new one.
    let reader = this.idle.take((r) => r.cursor?.name === name && r.cursor.next === after, true);
    if (reader === undefined) {
      const consumer = await this.host.reader();
      // A page takes what has been fetched without waiting for `limit` records to come.
      consumer.setDefaultIsTimeoutOnlyForFirstMessage?.(true);
      reader = { consumer, cursor: undefined };
    }
    this.busy.add(reader);
    return reader;
  }

  private release(reader: Reader): void {
    this.busy.delete(reader);
    // Not asked to go on soon: it stops fetching (its partitions unassigned), kept idle.
    if (this.closed || !this.idle.keep(reader, unassign)) void disconnect(reader.consumer);
  }
}

/** An idle reader stops fetching; it stays kept. */
function unassign(reader: Reader): boolean {
  reader.cursor = undefined;
  try {
    reader.consumer.unassign();
  } catch {
    // disconnected meanwhile
  }
  return true;
}

/** Assigns every partition of the cursor's topic at the offset it expects next. */
function assignAll(consumer: Consumer, cursor: Cursor): void {
  consumer.assign(cursor.fetched.map((offset, partition) => ({ topic: cursor.name, partition, offset })));
}

/** Buffers the records of `batch` that come next in their partitions. */
function take(cursor: Cursor, batch: Message[]): void {
  for (const m of batch) {
    const p = m.partition;
    if (m.topic !== cursor.name || m.offset < (cursor.fetched[p] ?? Number.MAX_SAFE_INTEGER)) continue;
    (cursor.buffers[p] as Message[]).push(m);
    cursor.fetched[p] = m.offset + 1;
  }
}

function passHoles(consumer: Consumer, cursor: Cursor, stop: readonly number[]): void {
  const { name, fetched } = cursor;
  const behind = stop.flatMap((s, p) => ((fetched[p] as number) < s ? [{ topic: name, partition: p }] : []));
  let positions: Partial<TopicPartitionOffset>[];
  try {
    positions = consumer.position(behind);
  } catch {
    return;
  }
  for (const { partition, offset } of positions) {
    if (partition === undefined || offset === undefined || offset < 0) continue;
    if ((fetched[partition] as number) < offset)
      fetched[partition] = Math.min(offset, stop[partition] as number);
  }
}

/** A position as one offset per partition, or INVALID_ARGUMENT. */
function offsetsOf(position: string, partitions: number): number[] {
  const parts = position.split('_');
  if (!parts.every((p) => PART.test(p)) || parts.length > partitions) {
    throw new ParleyError('INVALID_ARGUMENT', `not a position of the Kafka broker: ${position.slice(0, 40)}`);
  }
  // A topic's partitions can grow: a position taken before has no part for the new ones.
  return Array.from({ length: partitions }, (_, p) => Number(parts[p] ?? '0'));
}

function envelopeOf(m: Message): Envelope | undefined {
  if (header(m.headers, HEADER.group) !== undefined) return undefined;
  try {
    return envelopeOfRecord(m.value);
  } catch {
    return undefined;
  }
}
