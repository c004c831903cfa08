/**
 * @module adapters/redis/publisher
 * The Redis broker's publishes (`redis-broker.ts`), gathered per turn of the event loop: every
 * append made in one turn goes to Redis in one script call (`scripts.ts`) instead of one command
 * each — PUBLISH when an entry of the turn has a dedupe key or a dead letter to delete, else the
 * leaner APPEND. A command costs the client far more than the entry inside it (ioredis makes a
 * command object, a promise and a reply for each), so a publisher with many publishes awaiting
 * their confirmation is bound by commands, not entries.
 *
 * What each publish still gets on its own: its dedupe check atomic with its XADD (inside the
 * script, entry by entry, in the order they were made), its own receipt (id, duplicate), and its
 * own error when Redis refused that entry (then nothing of it was stored). A call that fails as a
 * whole (the connection is lost, Redis is loading…) rejects every publish of its batch with the
 * mapped error; entries Redis ran before the failure may be stored: a publisher that retries gets
 * them back as duplicates (at least once, never silently dropped).
 */
import type { Buffer } from 'node:buffer';
import type { PublishReceipt } from '../../broker/broker.ts';
import { ParleyError } from '../../errors.ts';
import { TurnQueue } from '../../runtime/turn-queue.ts';
import type { Redis } from './connect.ts';
import { redisError } from './errors.ts';
import { APPEND, PUBLISH } from './scripts.ts';

/** Most entries in one script call: a larger batch is split (a script blocks Redis while it runs). */
const MOST = 500;

/** One entry to append, with its publisher's promise. */
export interface Append {
  topic: string;
  stream: string;
  dedupeKey: string;
  envelopeId: string;
  /** Dedupe window, ms (0: no dedupe). */
  window: number;
  /** Trim the stream by age after this entry. */
  trim: boolean;
  /** Dead letter to delete with it ('' none: a replay deletes its letter). */
  deleteLetter: string;
  /** The envelope as JSON text (the entry's `body` field). */
  body: string;
  /** The entry's other fields, name then value. */
  fields: (string | Buffer)[];
  resolve(receipt: PublishReceipt): void;
  reject(error: unknown): void;
}

export interface PublisherOptions {
  dlqKey: string;
  /** `MAXLEN ~` (0: no limit). */
  maxLength: number;
  /** Age trimming, ms (0: none). */
  retentionMs: number;
}

/** A Redis error reply for one entry, shaped as ioredis's `ReplyError` so `redisError` maps it. */
function replyError(message: string): Error {
  const e = new Error(message);
  e.name = 'ReplyError';
  return e;
}

export class Publisher {
  private readonly queue = new TurnQueue<Append>((turn) => {
    for (let i = 0; i < turn.length; i += MOST) this.send(turn.slice(i, i + MOST));
  });

  constructor(
    private readonly redis: Redis,
    private readonly options: PublisherOptions,
  ) {}

  /** Appends at the end of this turn, with the turn's other appends. */
  add(entry: Append): void {
    this.queue.add(entry);
  }

  /** Sends what is queued now (before a close, so nothing queued is left behind). */
  flush(): void {
    this.queue.flush();
  }

  private send(batch: Append[]): void {
    // Only an entry with something to do beside its XADD (a dedupe key to claim, a dead letter to
    // delete) needs PUBLISH; a batch of plain entries takes APPEND, with a third of the arguments
    // per entry. One call either way, so batches stay in order.
    if (batch.every((e) => e.window === 0 && e.deleteLetter === '')) {
      this.sendPlain(batch);
      return;
    }
    const keys: string[] = [this.options.dlqKey];
    const args: (string | number | Buffer)[] = [this.options.maxLength, this.options.retentionMs];
    for (const e of batch) {
      keys.push(e.stream, e.dedupeKey);
      args.push(
        e.envelopeId,
        e.window,
        e.trim ? '1' : '0',
        e.deleteLetter,
        e.fields.length + 2,
        'body',
        e.body,
      );
      for (const f of e.fields) args.push(f);
    }
    PUBLISH.run(this.redis, keys, args).then(
      (reply) => {
        const results = Array.isArray(reply) ? reply : [];
        batch.forEach((e, i) => {
          const r: unknown = results[i];
          const [value, status] = Array.isArray(r) ? r : [];
          if (status === 0 || status === 1) {
            e.resolve({ id: String(value ?? e.envelopeId), duplicate: status === 1 });
          } else if (status === 2) {
            e.reject(redisError(replyError(String(value)), `publishing on ${e.topic}`));
          } else {
            e.reject(new ParleyError('INTERNAL', `Redis: publishing on ${e.topic}: unexpected reply`));
          }
        });
      },
      (error: unknown) => {
        for (const e of batch) e.reject(redisError(error, `publishing on ${e.topic}`));
      },
    );
  }

  /**
   * The APPEND script (`MAXLEN ~` when set) and, for streams due, `XTRIM MINID ~` by this
   * process's clock (trimming by age is approximate anyway): each entry gets its own receipt or
   * error.
   */
  private sendPlain(batch: Append[]): void {
    const { maxLength, retentionMs } = this.options;
    const minId = Date.now() - retentionMs;
    const streams: string[] = [];
    const indexOf = new Map<string, number>(); // stream → its place in KEYS, from 1
    const trim: boolean[] = [];
    const args: (string | number | Buffer)[] = [maxLength, 0, ''];
    for (const e of batch) {
      let k = indexOf.get(e.stream);
      if (k === undefined) {
        k = streams.push(e.stream);
        indexOf.set(e.stream, k);
        trim.push(false);
      }
      if (e.trim) trim[k - 1] = true;
      args.push(k, e.fields.length, e.body);
      for (const f of e.fields) args.push(f);
    }
    if (retentionMs > 0 && minId > 0 && trim.includes(true)) {
      args[1] = minId;
      args[2] = trim.map((t) => (t ? '1' : '0')).join('');
    }
    APPEND.run(this.redis, streams, args).then(
      (reply) => {
        const refused = new Map<number, string>();
        if (Array.isArray(reply)) {
          for (let i = 0; i + 1 < reply.length; i += 2) refused.set(Number(reply[i]), String(reply[i + 1]));
        }
        batch.forEach((e, i) => {
          const error = refused.get(i + 1);
          if (error === undefined) e.resolve({ id: e.envelopeId, duplicate: false });
          else e.reject(redisError(replyError(error), `publishing on ${e.topic}`));
        });
      },
      (error: unknown) => {
        for (const e of batch) e.reject(redisError(error, `publishing on ${e.topic}`));
      },
    );
  }
}
