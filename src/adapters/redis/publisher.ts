/**
 * @module adapters/redis/publisher
 * The Redis broker's publishes (`redis-broker.ts`), gathered per turn of the event loop: every
 * append made in one turn goes to Redis in one call instead of one call each — a PUBLISH script
 * call (`scripts.ts`) when an entry of the turn has a dedupe key or a dead letter to delete, else
 * one pipeline of XADDs. A call costs Redis far more than the XADD inside it, so a publisher with
 * many publishes awaiting their confirmation is bound by calls, not entries.
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
import { PUBLISH } from './scripts.ts';

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
    // delete) needs the script; a batch of plain entries is a pipeline of XADDs, which costs Redis
    // about a third of the script per entry. One call either way, so batches stay in order.
    if (batch.every((e) => e.window === 0 && e.deleteLetter === '')) {
      this.sendPlain(batch);
      return;
    }
    const keys: string[] = [this.options.dlqKey];
    const args: (string | number | Buffer)[] = [this.options.maxLength, this.options.retentionMs];
    for (const e of batch) {
      keys.push(e.stream, e.dedupeKey);
      args.push(e.envelopeId, e.window, e.trim ? '1' : '0', e.deleteLetter, e.fields.length);
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
   * XADD per entry (`MAXLEN ~` when set) and, where due, `XTRIM MINID ~` by this process's clock
   * (trimming by age is approximate anyway), pipelined: each entry gets its own receipt or error.
   */
  private sendPlain(batch: Append[]): void {
    const { maxLength, retentionMs } = this.options;
    const pipeline = this.redis.pipeline();
    const minId = Date.now() - retentionMs;
    // Which entries are followed by an XTRIM (its reply sits between theirs).
    const trims = batch.map((e) => e.trim && retentionMs > 0 && minId > 0);
    batch.forEach((e, i) => {
      if (maxLength > 0) pipeline.call('XADD', e.stream, 'MAXLEN', '~', maxLength, '*', ...e.fields);
      else pipeline.call('XADD', e.stream, '*', ...e.fields);
      if (trims[i]) pipeline.call('XTRIM', e.stream, 'MINID', '~', minId);
    });
    pipeline.exec().then(
      (results) => {
        let at = 0;
        batch.forEach((e, i) => {
          const error = results?.[at]?.[0];
          at += trims[i] ? 2 : 1;
          if (results === null)
            e.reject(new ParleyError('INTERNAL', `Redis: publishing on ${e.topic}: no reply`));
          else if (error !== null && error !== undefined)
            e.reject(redisError(error, `publishing on ${e.topic}`));
          else e.resolve({ id: e.envelopeId, duplicate: false });
        });
      },
      (error: unknown) => {
        for (const e of batch) e.reject(redisError(error, `publishing on ${e.topic}`));
      },
    );
  }
}
