/**
 * @module adapters/nats/history
 * The JetStream broker's topic streams read without a consumer (`BrokerHistory`): positions are
 * stream sequences. A page asks for each sequence after the position (up to the stream's last)
 * with one message-get request each, all in flight together (one round trip for the page, no
 * consumer made on the server), and keeps the events (`<prefix>.t.<token>.all`): a dead letter
 * replayed to one group (`….to.<group>`) is not a new event, and is passed over like a message
 * that is not an envelope. A read that may wait subscribes to the events' subject, flushes (so
 * the server has the subscription before the read looks again) and waits for one to be published.
 *
 * Gaps: limits (`retentionMs`, `maxMessages`) remove messages from the head of the stream and
 * sequences never repeat, so a reader whose position is below the first kept sequence less one
 * has lost messages.
 */
import type { JetStreamManager } from '@nats-io/jetstream';
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
import { natsError } from './errors.ts';

export interface HistoryHost {
  readonly nc: NatsConnection;
  readonly codec: Codec;
  manager(): JetStreamManager;
  streamOf(topic: string): string;
  subjectOf(topic: string): string;
  isClosed(): boolean;
}

export class JetStreamHistory implements BrokerHistory {
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

  private envelopeOf(data: Uint8Array): Envelope | undefined {
    try {
      return assertEnvelope(this.host.codec.decode(data));
    } catch {
      return undefined;
    }
  }
}
