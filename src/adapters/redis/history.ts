/**
 * @module adapters/redis/history
 * The Redis broker's topic streams read without a group (`BrokerHistory`): positions are stream
 * entry ids. A read is XRANGE after the position; a read that may wait is XREAD BLOCK, on a
 * connection of its own while it waits (a blocking read holds its connection), returned to a
 * small pool afterwards. Gaps: trimming (`maxLength`, `retentionMs`) removes entries from the
 * head, so a reader whose position comes before the first kept entry has lost some, once anything
 * was trimmed (`entries-added` above `length`; on Redis before 7, which does not count, always
 * assumed); an XDEL after the position (`max-deleted-entry-id`) is a gap too. A reader whose own
 * entry was just trimmed is told so even when nothing after it was: it starts over, never
 * silently misses.
 *
 * Entries meant for one group (a dead-letter replay, `to` field) are not new events and are
 * passed over; so is an entry whose body is not an envelope (another writer's), which the groups
 * still get and dead-letter with the reason.
 */
import {
  type BrokerHistory,
  boundPage,
  comparePositions,
  type HistoryEntry,
  type HistoryPage,
  type HistoryReadOptions,
  historyLimit,
} from '../../broker/broker.ts';
import type { Codec } from '../../codec/codec.ts';
import { assertEnvelope, type Envelope } from '../../envelope/envelope.ts';
import { ParleyError } from '../../errors.ts';
import type { Redis } from './connect.ts';
import { redisError } from './errors.ts';

const ID = /^\d{1,15}(?:-\d{1,15})?$/;

export interface HistoryHost {
  readonly redis: Redis;
  readonly codec: Codec;
  streamOf(topic: string): string;
  more(name: string): Promise<Redis>;
  isClosed(): boolean;
}

type RawEntry = [id: string, fields: string[]];

export class RedisHistory implements BrokerHistory {
  /** Connections for blocking reads, not in use now. */
  private readonly idle: Redis[] = [];
  private readonly all = new Set<Redis>();

  constructor(private readonly host: HistoryHost) {}

  async latest(topic: string): Promise<string> {
    this.open();
    const info = await this.info(topic);
    return info?.last ?? '0-0';
  }

  async read(topic: string, after: string, options: HistoryReadOptions = {}): Promise<HistoryPage> {
    for (const position of options.until === undefined ? [after] : [after, options.until]) {
      if (!ID.test(position)) {
        throw new ParleyError(
          'INVALID_ARGUMENT',
          `not a position of the Redis broker: ${position.slice(0, 40)}`,
        );
      }
    }
    this.open();
    const stream = this.host.streamOf(topic);
    const limit = historyLimit(options.limit);
    const waitMs = Math.max(0, Math.round(options.waitMs ?? 0));
    let raw: RawEntry[];
    try {
      raw =
        waitMs > 0
          ? await this.blocking(stream, after, limit, waitMs)
          : ((await this.host.redis.call(
              'XRANGE',
              stream,
              `(${after}`,
              options.until ?? '+',
              'COUNT',
              limit,
            )) as RawEntry[]);
    } catch (error) {
      throw redisError(error, `reading the history of ${topic}`);
    }
    const info = await this.info(topic);
    const gap = info !== undefined && lostAfter(info, after);
    const entries: HistoryEntry[] = [];
    for (const [id, fields] of raw) {
      const envelope = this.envelopeOf(fields);
      if (envelope !== undefined) entries.push({ position: id, envelope });
    }
    // A blocking read has no end bound: what it got past `until` is dropped.
    return boundPage({ entries, next: raw.at(-1)?.[0] ?? after, gap }, after, options.until);
  }

  /** Closes the blocking connections (with the broker). */
  close(): void {
    for (const r of this.all) r.disconnect();
    this.all.clear();
    this.idle.length = 0;
  }

  private open(): void {
    if (this.host.isClosed()) throw new ParleyError('UNAVAILABLE', 'the broker is closed');
  }

  private async blocking(stream: string, after: string, limit: number, waitMs: number): Promise<RawEntry[]> {
    const conn = this.idle.pop() ?? (await this.connection());
    try {
      const reply = (await conn.call('XREAD', 'COUNT', limit, 'BLOCK', waitMs, 'STREAMS', stream, after)) as
        | [string, RawEntry[]][]
        | null;
      this.idle.push(conn);
      return reply?.[0]?.[1] ?? [];
    } catch (error) {
      this.all.delete(conn);
      conn.disconnect();
      throw error;
    }
  }

  private async connection(): Promise<Redis> {
    const conn = await this.host.more('parley-history');
    this.all.add(conn);
    return conn;
  }

  /** What XINFO STREAM says about the stream; undefined when it does not exist. */
  private async info(topic: string): Promise<StreamInfo | undefined> {
    let reply: unknown[];
    try {
      reply = (await this.host.redis.call('XINFO', 'STREAM', this.host.streamOf(topic))) as unknown[];
    } catch (error) {
      if (error instanceof Error && /no such key/i.test(error.message)) return undefined;
      throw redisError(error, `reading the history of ${topic}`);
    }
    const field = (name: string) => (reply.includes(name) ? reply[reply.indexOf(name) + 1] : undefined);
    const first = field('first-entry') as RawEntry | null | undefined;
    const deleted = field('max-deleted-entry-id');
    const added = field('entries-added');
    return {
      last: String(field('last-generated-id')),
      first: first?.[0] ?? undefined,
      length: Number(field('length')),
      maxDeleted: deleted === undefined ? undefined : String(deleted),
      added: added === undefined ? undefined : Number(added),
    };
  }

  private envelopeOf(fields: string[]): Envelope | undefined {
    let body: string | undefined;
    for (let i = 0; i + 1 < fields.length; i += 2) {
      if (fields[i] === 'to') return undefined;
      if (fields[i] === 'body') body = fields[i + 1];
    }
    if (body === undefined) return undefined;
    try {
      return assertEnvelope(this.host.codec.decodeText?.(body) ?? this.host.codec.decode(Buffer.from(body)));
    } catch {
      return undefined;
    }
  }
}

interface StreamInfo {
  readonly last: string;
  readonly first: string | undefined;
  readonly length: number;
  /** Redis 7: the highest id XDEL removed (`0-0` when none). */
  readonly maxDeleted: string | undefined;
  /** Redis 7: entries ever added; fewer kept means trimming removed some from the head. */
  readonly added: number | undefined;
}

/**
 * Whether entries after `after` are gone. Trimming removes from the head, so every trimmed entry
 * comes before the first kept one: a reader at or after the first kept entry lost nothing; one
 * before it did, when anything was trimmed (counted as possible where Redis does not say).
 */
function lostAfter(info: StreamInfo, after: string): boolean {
  if (info.maxDeleted !== undefined && comparePositions(info.maxDeleted, after) > 0) return true;
  const trimmed = info.added === undefined || info.added > info.length;
  if (!trimmed) return false;
  return comparePositions(info.first ?? info.last, after) > 0;
}
