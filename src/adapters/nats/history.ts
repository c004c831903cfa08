/**
 * @module adapters/nats/history
 * The JetStream broker's topic streams read without a group's consumer (`BrokerHistory`):
 * positions are stream sequences. Only the events (`<prefix>.t.<token>.all`) are read: a dead
 * letter replayed to one group (`….to.<group>`) is not a new event, and is passed over like a
 * message that is not an envelope.
 *
 * Two ways to read a page, both after one stream-info request (first and last sequence):
 * - **Message-gets**, for a short page: one get per sequence, all in flight together (one round
 *   trip, nothing made on the server). What a follower at the head of the log reads.
 * - **An ordered consumer kept between pages**, for a long one (more than `consumerFrom`
 *   sequences: a client resuming after a long gap): an ephemeral, in-memory, unacknowledged
 *   consumer filtered on the events, made at the page's first sequence, which streams the
 *   messages in order. It is kept with what it fetched and how many events the server said it
 *   still had, so the next page, however short, goes on from there without another one being
 *   made. A new one is made only while fewer than {@link MAX_READERS} are at work (other long
 *   reads use message-gets: a reconnect storm makes a bounded number of consumers on the
 *   server), {@link IDLE_READERS} wait for a next page, and one idle for {@link IDLE_MS} is
 *   deleted; the broker's `close` deletes the rest. A fetch asks for no more messages than the
 *   server said it has, so it returns at once.
 *
 * A read that may wait subscribes to the events' subject, flushes (so the server has the
 * subscription before the read looks again) and waits for one to be published.
 *
 * Gaps: limits (`retentionMs`, `maxMessages`) remove messages from the head of the stream and
 * sequences never repeat, so a reader whose position is below the first kept sequence less one
 * has lost messages.
 */
import type { Consumer, JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  type BrokerHistory,
  type HistoryEntry,
  type HistoryPage,
  type HistoryReadOptions,
  historyLimit,
  sequenceOf,
} from '../../broker/broker.ts';
import type { Codec } from '../../codec/codec.ts';
import { assertEnvelope, type Envelope } from '../../envelope/envelope.ts';
import { ParleyError } from '../../errors.ts';
import { IdlePool } from '../idle-pool.ts';
import { natsError } from './errors.ts';

export interface HistoryHost {
  readonly nc: NatsConnection;
  readonly codec: Codec;
  manager(): JetStreamManager;
  client(): JetStreamClient;
  streamOf(topic: string): string;
  subjectOf(topic: string): string;
  isClosed(): boolean;
  /** Pages of more sequences than this are read through an ordered consumer. Default 32. */
  consumerFrom?: number;
}

/** Readers at work at once beyond which no new one is made. */
const MAX_READERS = 8;
/** Readers kept for a next page. */
const IDLE_READERS = 4;
/** An idle reader's consumer is deleted after this long, ms. */
const IDLE_MS = 1_000;
/** The longest a fetch waits (the least nats.js takes); it asks only for what the server has. */
const FETCH_EXPIRES_MS = 1_000;

/** An ordered consumer on one topic's events, and where it stands. See the module comment. */
interface Reader {
  readonly topic: string;
  readonly consumer: Consumer;
  /** The position the last page read through it ended at: a page from there goes on here. */
  next: number;
  /** Messages fetched and not handed out yet, in sequence order, from `head`. */
  fetched: { seq: number; data: Uint8Array }[];
  head: number;
  /** Events the server said it still had after the last fetched one. */
  pending: number;
}

export class JetStreamHistory implements BrokerHistory {
  private readonly idle = new IdlePool<Reader>(IDLE_READERS, IDLE_MS);
  private busy = 0;
  private closed = false;

  constructor(private readonly host: HistoryHost) {}

  async latest(topic: string): Promise<string> {
    this.open();
    const state = await this.state(topic);
    return String(state?.last ?? 0);
  }

  async read(topic: string, after: string, options: HistoryReadOptions = {}): Promise<HistoryPage> {
    const from = sequenceOf(after, 'JetStream broker');
    const until = options.until === undefined ? undefined : sequenceOf(options.until, 'JetStream broker');
    this.open();
    const limit = historyLimit(options.limit);
    const waitMs = Math.max(0, Math.round(options.waitMs ?? 0));
    const page = await this.page(topic, from, limit, until);
    if (page.entries.length > 0 || page.gap || page.next !== after || waitMs === 0) return page;
    // Nothing yet: wait for the next event on the topic, then look again.
    let wake: () => void = () => undefined;
    const published = new Promise<void>((resolve) => (wake = resolve));
    const sub = this.host.nc.subscribe(this.host.subjectOf(topic), { max: 1, callback: () => wake() });
    // Also woken when the connection closes (the broker closes): a wait never outlives it.
    void sub.closed.then(wake, wake);
    const timer = setTimeout(wake, waitMs);
    try {
      await this.host.nc.flush();
      const again = await this.page(topic, from, limit, until);
      if (again.entries.length > 0 || again.gap || again.next !== after) return again;
      await published;
      return await this.page(topic, from, limit, until);
    } finally {
      clearTimeout(timer);
      sub.unsubscribe();
    }
  }

  /** Deletes the idle readers' consumers (the broker closes); readers at work go when done. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.idle.drain().map((r) => this.dispose(r)));
  }

  private open(): void {
    if (this.host.isClosed()) throw new ParleyError('UNAVAILABLE', 'the broker is closed');
  }

  /** The stream's first and last sequences; undefined when it does not exist yet. */
  private async state(topic: string): Promise<{ first: number; last: number } | undefined> {
    try {
      const info = await this.host.manager().streams.info(this.host.streamOf(topic));
      return { first: info.state.first_seq, last: info.state.last_seq };
    } catch (error) {
      const e = natsError(error, `reading the history of ${topic}`);
      if (e.code === 'NOT_FOUND') return undefined;
      throw e;
    }
  }

  private async page(
    topic: string,
    from: number,
    limit: number,
    until = Number.MAX_SAFE_INTEGER,
  ): Promise<HistoryPage> {
    const after = String(from);
    const state = await this.state(topic);
    if (state === undefined) return { entries: [], next: after, gap: false };
    const gap = from < state.first - 1;
    const start = Math.max(from + 1, state.first);
    const end = Math.min(start + limit - 1, state.last, until);
    if (end < start) {
      return { entries: [], next: gap ? String(Math.max(from, Math.min(state.last, until))) : after, gap };
    }
    const kept = this.idle.take((r) => r.topic === topic && r.next === from);
    if (kept !== undefined || (end - start + 1 > (this.host.consumerFrom ?? 32) && this.busy < MAX_READERS)) {
      // A consumer reads as far as the stream's last sequence (or `until`), not only this page's
      // sequences: it passes over what is not an event without a request for each.
      const last = Math.min(state.last, until);
      return this.consumerPage(topic, from, start, last, limit, gap, kept);
    }
    return this.gets(topic, start, end, gap);
  }

  /** A page by message-gets of the sequences `start` to `end`. */
  private async gets(topic: string, start: number, end: number, gap: boolean): Promise<HistoryPage> {
    const stream = this.host.streamOf(topic);
    const subject = this.host.subjectOf(topic);
    const jsm = this.host.manager();
    const seqs = Array.from({ length: end - start + 1 }, (_, i) => start + i);
    let stored: Awaited<ReturnType<JetStreamManager['streams']['getMessage']>>[];
    try {
      // A sequence removed meanwhile (limits, or deleted) comes back as null.
      stored = await Promise.all(seqs.map((seq) => jsm.streams.getMessage(stream, { seq })));
    } catch (error) {
      throw natsError(error, `reading the history of ${topic}`);
    }
    const entries: HistoryEntry[] = [];
    for (const m of stored) {
      if (m === null || m.subject !== subject) continue;
      const envelope = this.envelopeOf(m.data);
      if (envelope !== undefined) entries.push({ position: String(m.seq), envelope });
    }
    return { entries, next: String(end), gap };
  }

  /**
   * A page through a reader: up to `limit` events after `from`, none after `last`. The server's
   * count of what it still has is taken after the stream's state was, so when it says none and
   * nothing fetched is left, no event up to `last` remains: the page ends at `last`.
   */
  private async consumerPage(
    topic: string,
    from: number,
    start: number,
    last: number,
    limit: number,
    gap: boolean,
    kept: Reader | undefined,
  ): Promise<HistoryPage> {
    this.busy += 1;
    let reader: Reader | undefined;
    try {
      // A new reader's count comes with it; a kept one's may be older than the state read above.
      let fresh = kept === undefined;
      reader = kept ?? (await this.reader(topic, from, start));
      const entries: HistoryEntry[] = [];
      let at = from;
      let next: number | undefined;
      let emptyFetches = 0;
      while (next === undefined) {
        while (reader.head < reader.fetched.length && entries.length < limit) {
          const m = reader.fetched[reader.head] as { seq: number; data: Uint8Array };
          if (m.seq > last) break;
          reader.head += 1;
          at = m.seq;
          const envelope = this.envelopeOf(m.data);
          if (envelope !== undefined) entries.push({ position: String(m.seq), envelope });
        }
        // Full; or what is left fetched is after `last`; or fetch; or ask how many are left.
        if (entries.length >= limit) next = at;
        else if (reader.head < reader.fetched.length) next = last;
        else if (reader.pending > 0) {
          const got = await this.fetch(reader, Math.min(limit - entries.length, reader.pending));
          // None of what the server said it had (removed by limits meanwhile?): ask it again; after
          // a second empty fetch the page ends where it got to, claiming nothing past it.
          fresh = got > 0;
          if (got === 0 && ++emptyFetches >= 2) next = at;
        } else if (fresh) next = last;
        else {
          reader.pending = (await reader.consumer.info()).num_pending;
          fresh = true;
        }
      }
      reader.next = next;
      const done = reader;
      reader = undefined;
      this.keep(done);
      return { entries, next: String(next), gap };
    } catch (error) {
      throw natsError(error, `reading the history of ${topic}`);
    } finally {
      this.busy -= 1;
      if (reader !== undefined) void this.dispose(reader);
    }
  }

  /** A new reader of `topic`'s events from sequence `start` (its page begins after `from`). */
  private async reader(topic: string, from: number, start: number): Promise<Reader> {
    const consumer = await this.host.client().consumers.get(this.host.streamOf(topic), {
      filter_subjects: this.host.subjectOf(topic),
      opt_start_seq: start,
    });
    // The consumer's info from its creation: how many events there are from `start`.
    const info = await consumer.info(true);
    return {
      topic,
      consumer,
      next: from,
      fetched: [],
      head: 0,
      pending: info.num_pending,
    };
  }

  /** Fetches up to `max` messages into the reader; how many came. */
  private async fetch(reader: Reader, max: number): Promise<number> {
    if (reader.head === reader.fetched.length) {
      reader.fetched = [];
      reader.head = 0;
    }
    const messages = await reader.consumer.fetch({ max_messages: max, expires: FETCH_EXPIRES_MS });
    let got = 0;
    reader.pending = 0;
    for await (const m of messages) {
      reader.fetched.push({ seq: m.seq, data: m.data });
      reader.pending = m.info.pending;
      got += 1;
    }
    return got;
  }

  /** Keeps a reader for a next page (deleted once idle), or deletes its consumer at once. */
  private keep(reader: Reader): void {
    const dispose = (r: Reader) => {
      void this.dispose(r);
      return false;
    };
    if (this.closed || this.host.isClosed() || !this.idle.keep(reader, dispose)) dispose(reader);
  }

  private async dispose(reader: Reader): Promise<void> {
    // The server deletes it itself after a while without use, should this fail.
    await reader.consumer.delete().catch(() => false);
  }

  private envelopeOf(data: Uint8Array): Envelope | undefined {
    try {
      return assertEnvelope(this.host.codec.decode(data));
    } catch {
      return undefined;
    }
  }
}
