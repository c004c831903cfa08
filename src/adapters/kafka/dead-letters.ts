/**
 * @module adapters/kafka/dead-letters
 * The dead-letter store kept in Kafka itself: one topic per namespace, written to partition 0
 * only, so a dead letter's id is its record's offset + 1 (numeric, stable, the same in every
 * process). Replay and purge append a `removed` record naming the ids; the store's index is
 * rebuilt by reading the partition from the start and then kept up to date by reading on to the
 * high watermark before each query. Kafka's retention bounds how long dead letters live: give the
 * topic a long `retention.ms` in production.
 */

import type { DeadLetter, DeadLetterFilter, DeadLetterStore } from '../../broker/broker.ts';
import { letterMatches, replayable, storedLetter } from '../../broker/outcome.ts';
import { ParleyError } from '../../errors.ts';
import { type Consumer, call, type Headers, type Message } from './driver.ts';
import { type DeadLetterRecord, type DeadRecord, deadLetterTopicName, headers } from './protocol.ts';

/** What the store needs from its broker. */
export interface DeadLetterHost {
  readonly namespace: string;
  topicName(topic: string): string;
  ensureTopic(kafkaTopic: string): Promise<number>;
  produce(
    kafkaTopic: string,
    value: Buffer,
    options: { key?: string | null; partition?: number | null; headers?: Headers },
  ): Promise<{ partition: number; offset: number }>;
  /** A consumer outside any group, for reading with `assign`. */
  reader(): Promise<Consumer>;
}

export class KafkaDeadLetters implements DeadLetterStore {
  private readonly topic: string;
  private readonly live = new Map<number, DeadRecord>();
  private reader: Consumer | undefined;
  private next = 0;
  private syncing: Promise<void> = Promise.resolve();
  /** The replay or purge under way: the next one starts after it. */
  private changing: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(private readonly host: DeadLetterHost) {
    this.topic = deadLetterTopicName(host.namespace);
  }

  /** Stores a dead letter; resolves with its id once Kafka confirmed it. */
  async write(record: DeadRecord): Promise<number> {
    await this.host.ensureTopic(this.topic);
    const { offset } = await this.host.produce(this.topic, Buffer.from(JSON.stringify(record)), {
      partition: 0,
    });
    this.live.set(offset + 1, record);
    return offset + 1;
  }

  async list(filter: DeadLetterFilter = {}, limit = 1000): Promise<DeadLetter[]> {
    await this.sync();
    return this.matching(filter).slice(0, Math.max(0, limit));
  }

  async get(id: number): Promise<DeadLetter | undefined> {
    await this.sync();
    const r = this.live.get(id);
    return r === undefined ? undefined : toDeadLetter(id, r);
  }

  /**
   * Puts letters back, then writes their removal. Replays and purges of this store run one at a
   * time, and a replay that fails part way removes the letters it did put back: until 2026-12-03
   * two replays at once both put every letter back (and one could throw a `TypeError`), and a
   * failed one left the letters it had put back in the store, to be put back again.
   */
  replay(filter: DeadLetterFilter = {}): Promise<number> {
    return this.exclusive(async () => {
      await this.sync();
      const found = this.matching(filter).filter(replayable);
      const done: number[] = [];
      try {
        for (const d of found) {
          const r = this.live.get(d.id) as DeadRecord;
          const target = this.host.topicName(r.topic);
          await this.host.ensureTopic(target);
          // Back to its own group only, attempts reset; other groups of the topic skip the record.
          await this.host.produce(target, Buffer.from(JSON.stringify(r.envelope)), {
            key: r.key,
            headers: headers({ group: r.group }),
          });
          done.push(d.id);
        }
      } catch (error) {
        await this.remove(done).catch(() => undefined);
        throw error;
      }
      return this.remove(done);
    });
  }

  purge(filter: DeadLetterFilter = {}): Promise<number> {
    return this.exclusive(async () => {
      await this.sync();
      return this.remove(this.matching(filter).map((d) => d.id));
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.syncing.catch(() => undefined);
    const reader = this.reader;
    this.reader = undefined;
    if (reader !== undefined) await new Promise<void>((r) => reader.disconnect(() => r()));
  }

  private async remove(ids: number[]): Promise<number> {
    if (ids.length === 0) return 0;
    const record: DeadLetterRecord = { kind: 'removed', ids };
    await this.host.ensureTopic(this.topic);
    await this.host.produce(this.topic, Buffer.from(JSON.stringify(record)), { partition: 0 });
    for (const id of ids) {
      this.live.delete(id);
      this.removed.add(id);
    }
    return ids.length;
  }

  private matching(filter: DeadLetterFilter): DeadLetter[] {
    const ids = filter.ids === undefined ? undefined : new Set(filter.ids);
    const out: DeadLetter[] = [];
    for (const [id, r] of this.live) {
      if (!letterMatches(r, filter)) continue;
      if (ids !== undefined && !ids.has(id)) continue;
      out.push(toDeadLetter(id, r));
    }
    return out.sort((a, b) => a.id - b.id);
  }

  private exclusive<T>(change: () => Promise<T>): Promise<T> {
    const run = this.changing.then(change);
    this.changing = run.catch(() => undefined);
    return run;
  }

  /** Reads the dead-letter partition on to its current end (one reader at a time). */
  private sync(): Promise<void> {
    const run = this.syncing.then(() => this.readToEnd());
    this.syncing = run.catch(() => undefined);
    return run;
  }

  private async readToEnd(): Promise<void> {
    if (this.closed) throw new ParleyError('UNAVAILABLE', 'broker is closed');
    await this.host.ensureTopic(this.topic);
    if (this.reader === undefined) {
      const reader = await this.host.reader();
      reader.assign([{ topic: this.topic, partition: 0, offset: this.next }]);
      this.reader = reader;
    }
    const reader = this.reader;
    const { highOffset } = await call<{ highOffset: number }>('dead-letter watermark', (cb) =>
      reader.queryWatermarkOffsets(this.topic, 0, 5_000, cb),
    );
    const deadline = Date.now() + 10_000;
    while (this.next < highOffset) {
      if (Date.now() > deadline)
        throw new ParleyError('UNAVAILABLE', 'kafka: the dead-letter topic could not be read to its end');
      const batch = await call<Message[]>('dead-letter read', (cb) => reader.consume(500, cb));
      for (const m of batch) {
        if (m.topic !== this.topic || m.partition !== 0 || m.offset < this.next) continue;
        this.apply(m.offset + 1, m.value);
        this.next = m.offset + 1;
      }
    }
    // A removal read past its letter has done its work: only ids not read yet need remembering.
    // Until 2026-12-03 every id ever removed was kept for the life of the process.
    for (const id of this.removed) if (id <= this.next) this.removed.delete(id);
  }

  /**
   * One record of the dead-letter partition. It never throws: a record that threw here would stop
   * the partition's reading at it, and every later read with it. A removal lists numbers; any
   * other record is a letter, checked (`storedLetter`): one that is no letter is listed as an
   * unreadable one, to be seen and purged, not skipped unseen.
   */
  private apply(id: number, value: Buffer | null): void {
    const bytes = value ?? Buffer.alloc(0);
    let record: unknown;
    try {
      record = JSON.parse(bytes.toString('utf8'));
    } catch {
      record = undefined;
    }
    const r = (typeof record === 'object' && record !== null ? record : {}) as Record<string, unknown>;
    if (r.kind === 'removed' && Array.isArray(r.ids)) {
      for (const gone of r.ids) {
        if (typeof gone !== 'number') continue;
        this.live.delete(gone);
        this.removed.add(gone);
      }
      return;
    }
    if (this.removed.has(id)) return;
    // Checked as a letter from the record parsed above (not parsed a second time).
    const { id: _id, key, ...letter } = storedLetter(id, bytes, () => record);
    this.live.set(id, { kind: 'dead', ...letter, key: key ?? null });
  }

  /** Ids removed whose letters this store has not read yet: read later, they stay removed. */
  private readonly removed = new Set<number>();
}

function toDeadLetter(id: number, r: DeadRecord): DeadLetter {
  return {
    id,
    topic: r.topic,
    group: r.group,
    envelope: r.envelope,
    code: r.code,
    message: r.message,
    retryable: r.retryable,
    attempts: r.attempts,
    firstFailureAt: r.firstFailureAt,
    lastFailureAt: r.lastFailureAt,
  };
}
