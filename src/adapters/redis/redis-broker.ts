/**
 * @module adapters/redis/redis-broker
 * The Parley broker on Redis Streams: `createRedisBroker({ url: 'redis://127.0.0.1:6379' })`, or
 * `PARLEY_BROKER=redis://127.0.0.1:6379`. Needs Redis ≥ 6.2 (XAUTOCLAIM); Redis Cluster is not
 * supported (the scripts touch several keys).
 *
 * Keys, under a prefix (default `parley`; topic and group names have `%` and `:` escaped):
 * - `<prefix>:t:<topic>`: one stream per topic; each entry has the fields `body` (the envelope,
 *   JSON), and when set `key`, `notBefore` (epoch ms) and `to` (a replay meant for one group);
 * - `<prefix>:retry:<topic>:<group>`: a sorted set of entry ids waiting for a retry, by due time;
 * - `<prefix>:dedupe:<idempotency key>`: the first envelope id, for the dedupe window;
 * - `<prefix>:dlq` (hash: letter id → JSON letter) and `<prefix>:dlq:seq` (letter ids).
 *
 * How each guarantee maps onto Redis:
 * - **Publish** of an envelope with an idempotency key runs in a Lua script (atomic: a crash
 *   cannot leave half of an entry): `SET <prefix>:dedupe:<key> <envelope id> NX PX <window>`, then
 *   XADD (a failed XADD deletes the dedupe key again); a duplicate within `dedupeWindowMs`
 *   (default 2 min; 0 turns dedupe off) stores nothing and returns the first envelope's id. The
 *   outbox gives every event it relays a key, so a relay that publishes again after a crash is
 *   deduped. A publish without a key is a plain XADD: no key held for two minutes per message
 *   (at 100 k msg/s that was 12 M keys), and a third of the Redis time; a publish repeated
 *   without a key (ioredis resends a command the connection lost) may be stored twice, which a
 *   consumer's inbox absorbs (at least once, like every delivery here). The publishes of one turn
 *   of the event loop go in one call (`publisher.ts`), each with its own receipt or error.
 *   Resolves once Redis has the entry (in memory: durability is the server's persistence setting
 *   — AOF `appendfsync` — not Parley's).
 * - **Size**: an entry's body and field values, with 8 KiB for its dead letter, must fit the
 *   server's `proto-max-bulk-len` (read at connect); a larger publish is refused alone with
 *   INVALID_ARGUMENT.
 * - **Retention**: XADD trims with `MAXLEN ~ maxLength` when set, then `XTRIM MINID ~` (at most
 *   once a second per topic and publishing process) drops entries older than `retentionMs`
 *   (default 7 days; Redis keeps streams in memory, so bound them). Trimming is not aware of
 *   groups: an entry trimmed while still pending in a slow group is lost to that group; keep
 *   retention well above any group's backlog.
 * - **Groups** are consumer groups, created with MKSTREAM at `$` (`startFrom: 'now'`) or `0`
 *   (`'beginning'`); made again from `0` if they vanish (a Redis restart without persistence: what
 *   was published since is not skipped). Each Parley consumer is a Redis consumer with a unique
 *   name, reading `XREADGROUP COUNT <room> BLOCK` on its own connection (a blocking read holds its
 *   connection); consumers of a group compete.
 * - **Delivery** (acks, leases, attempts, retries, per-key order, delay, backpressure): see
 *   `redis-consumer.ts`.
 * - **Dead letters**: the `dlq` hash; see `dead-letters.ts`.
 * - **History** (reading a topic without a group, for the gateway's push): the topic's stream,
 *   positions are entry ids; see `history.ts`.
 *
 * The Lua scripts are in `scripts.ts`.
 *
 * Reconnects (`connect.ts`): ioredis reconnects without end; publishes fail with UNAVAILABLE
 * after a few failed reconnects; reads that fail are retried every second; what a consumer held
 * is redelivered when its lease ends.
 */

import { Buffer } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type {
  Broker,
  BrokerPublishOptions,
  Consumer,
  ConsumerHandler,
  ConsumerSpec,
  DeadLetterStore,
  PublishReceipt,
} from '../../broker/broker.ts';
import { checkLetterRoom, checkPublish, checkSpec, LETTER_ROOM } from '../../broker/check.ts';
import { letterBodyRoom } from '../../broker/outcome.ts';
import type { Codec } from '../../codec/codec.ts';
import { createJsonCodec, encodeJsonText } from '../../codec/json.ts';
import type { Envelope } from '../../envelope/envelope.ts';
import { ParleyError } from '../../errors.ts';
import { connectRedis, maxBulkOf, type Redis } from './connect.ts';
import { type Letter, RedisDeadLetters } from './dead-letters.ts';
import { isReply, redisError } from './errors.ts';
import { RedisHistory } from './history.ts';
import { Publisher } from './publisher.ts';
import { RedisConsumer } from './redis-consumer.ts';

export interface RedisBrokerOptions {
  url: string;
  /** Key prefix: brokers with different prefixes share nothing. Default `parley`. */
  prefix?: string;
  /** Dedupe window of publishes with an idempotency key, ms (0: no dedupe). Default 120 000. */
  dedupeWindowMs?: number;
  /** How long a topic keeps its entries, ms (0: until `maxLength`). Default 7 days. */
  retentionMs?: number;
  /** Most entries a topic keeps, approximately (`MAXLEN ~`; 0: no limit). Default 0. */
  maxLength?: number;
  /** Longest a blocking read waits, ms; also how often retries due from other processes are looked for. Default 1000. */
  blockMs?: number;
  /**
   * The largest argument the server takes (`proto-max-bulk-len`): read from the server at connect
   * (`CONFIG GET`); this when the server refuses CONFIG (a managed Redis), default 512 MiB,
   * Redis's own default.
   */
  maxMessageBytes?: number;
  log?: (message: string) => void;
}

/** A topic or group name inside a key: `%` and `:` escaped, so `<topic>:<group>` is unambiguous. */
function part(name: string): string {
  return name.replace(/%/g, '%25').replace(/:/g, '%3A');
}

export class RedisBroker implements Broker {
  readonly deadLetters: DeadLetterStore;
  readonly history: RedisHistory;
  private readonly letters: RedisDeadLetters;
  /** @internal */ readonly prefix: string;
  /** @internal */ readonly codec: Codec = createJsonCodec();
  private readonly log: (message: string) => void;
  private readonly consumers = new Set<RedisConsumer>();
  private readonly publisher: Publisher;
  /** When this process last trimmed each topic's stream by age (epoch ms). */
  private readonly trimmed = new Map<string, number>();
  private closed = false;

  private constructor(
    /** @internal */ readonly redis: Redis,
    private readonly more: (name: string) => Promise<Redis>,
    private readonly options: RedisBrokerOptions,
    /** The server's `proto-max-bulk-len`: an entry's body (and a letter holding it) must fit. */
    private readonly maxBulk: number,
  ) {
    this.prefix = options.prefix ?? 'parley';
    this.log = options.log ?? ((m) => process.stderr.write(`parley redis broker: ${m}\n`));
    this.letters = new RedisDeadLetters(this);
    this.publisher = new Publisher(redis, {
      dlqKey: this.key('dlq'),
      maxLength: Math.max(0, Math.round(options.maxLength ?? 0)),
      retentionMs: Math.max(0, Math.round(options.retentionMs ?? 7 * 24 * 3600 * 1000)),
    });
    this.deadLetters = this.letters;
    this.history = new RedisHistory({
      redis,
      codec: this.codec,
      streamOf: (topic) => this.streamOf(topic),
      more,
      isClosed: () => this.closed,
    });
  }

  static async connect(options: RedisBrokerOptions): Promise<RedisBroker> {
    const log = options.log ?? ((m: string) => process.stderr.write(`parley redis broker: ${m}\n`));
    const { redis, more } = await connectRedis(options.url, 'parley-broker', log);
    const maxBulk = options.maxMessageBytes ?? (await maxBulkOf(redis));
    return new RedisBroker(redis, more, options, maxBulk);
  }

  /** @internal */ streamOf(topic: string): string {
    return `${this.prefix}:t:${part(topic)}`;
  }

  /** @internal */ retryOf(topic: string, group: string): string {
    return `${this.prefix}:retry:${part(topic)}:${part(group)}`;
  }

  /** @internal */ key(name: string): string {
    return `${this.prefix}:${name}`;
  }

  publish(envelope: Envelope, options: BrokerPublishOptions = {}): Promise<PublishReceipt> {
    try {
      checkPublish(envelope, options); // before the turn's batch: one bad publish must not fail the others
    } catch (error) {
      return Promise.reject(error);
    }
    const fields: (string | Buffer)[] = [];
    if (options.key !== undefined) fields.push('key', options.key);
    if (options.delay !== undefined && options.delay > 0)
      fields.push('notBefore', String(Date.now() + Math.round(options.delay)));
    // Deduped by its idempotency key only (see the module comment).
    return this.append(envelope.type, envelope, fields, envelope.idempotencykey, '');
  }

  /**
   * @internal Appends one envelope to its topic's stream (deduped when `dedupe` is set), with the
   * other appends of this turn (`publisher.ts`).
   */
  append(
    topic: string,
    envelope: Envelope,
    fields: (string | Buffer)[],
    dedupe: string | undefined,
    deleteLetter: string,
  ): Promise<PublishReceipt> {
    if (this.closed) return Promise.reject(new ParleyError('UNAVAILABLE', 'the broker is closed'));
    // Text, not bytes: a command of strings is written as one string (see encodeJsonText).
    let body: string;
    try {
      body = encodeJsonText(envelope);
      this.checkSize(body, fields);
    } catch (error) {
      return Promise.reject(error);
    }
    const window = dedupe === undefined ? 0 : Math.max(0, Math.round(this.options.dedupeWindowMs ?? 120_000));
    // Trimming by age is approximate anyway (`~`): once a second per topic from this process.
    const now = Date.now();
    const stream = this.streamOf(topic);
    const trim = now - (this.trimmed.get(stream) ?? 0) >= 1000;
    if (trim) this.trimmed.set(stream, now);
    return new Promise<PublishReceipt>((resolve, reject) =>
      this.publisher.add({
        topic,
        stream,
        dedupeKey: this.key(`dedupe:${dedupe ?? ''}`),
        envelopeId: envelope.id,
        window,
        trim,
        deleteLetter,
        body,
        fields,
        resolve,
        reject,
      }),
    );
  }

  /**
   * INVALID_ARGUMENT unless the body, and the dead letter that would hold it with its fields, fit
   * `proto-max-bulk-len`. Sent, an argument over it is a protocol error: Redis drops the connection,
   * failing the turn's other publishes with it (as INTERNAL, which an outbox would send again for ever).
   */
  private checkSize(body: string, fields: (string | Buffer)[]): void {
    // UTF-8 takes at most 3 bytes per UTF-16 unit: counted exactly only near the limit.
    // The fields' values (the key, …) go into the letter too; their names do not.
    let bound = 3 * body.length;
    for (let i = 1; i < fields.length; i += 2) bound += sizeBound(fields[i] as string | Buffer);
    if (bound + LETTER_ROOM <= this.maxBulk) return;
    let bytes = Buffer.byteLength(body);
    for (let i = 1; i < fields.length; i += 2) bytes += Buffer.byteLength(fields[i] as string | Buffer);
    checkLetterRoom(bytes, this.maxBulk, 'Redis', 'proto-max-bulk-len');
  }

  /** Creates the group (and the stream) unless it exists. */
  /** @internal */ async ensureGroup(spec: ConsumerSpec, from?: '0'): Promise<void> {
    try {
      await this.redis.call(
        'XGROUP',
        'CREATE',
        this.streamOf(spec.topic),
        spec.group,
        from ?? (spec.startFrom === 'beginning' ? '0' : '$'),
        'MKSTREAM',
      );
    } catch (error) {
      if (!isReply(error, 'BUSYGROUP')) throw redisError(error, `creating group ${spec.group}`);
    }
  }

  async subscribe(spec: ConsumerSpec, handler: ConsumerHandler): Promise<Consumer> {
    if (this.closed) throw new ParleyError('UNAVAILABLE', 'the broker is closed');
    checkSpec(spec);
    await this.ensureGroup(spec);
    const name = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
    const reader = await this.more(`parley-consumer-${name}`);
    const consumer = new RedisConsumer(
      this,
      reader,
      name,
      spec,
      handler,
      this.options.blockMs ?? 1000,
      this.log,
    );
    this.consumers.add(consumer);
    consumer.start();
    return {
      close: async () => {
        await consumer.close();
        this.consumers.delete(consumer);
      },
    };
  }

  /** @internal A retry was parked: consumers of its group here look again at `at` (epoch ms). */
  parked(topic: string, group: string, at: number): void {
    for (const c of this.consumers) {
      if (c.spec.topic === topic && c.spec.group === group) c.schedule(at);
    }
  }

  /** @internal Stores a consumer's dead letter. */
  /** The most bytes of a body that was no envelope its dead letter may hold. */
  letterBodyRoom(): number {
    return letterBodyRoom(this.maxBulk);
  }

  deadLetter(letter: Letter): Promise<void> {
    return this.letters.add(letter);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.publisher.flush(); // this turn's publishes go before QUIT
    await Promise.all([...this.consumers].map((c) => c.close()));
    this.consumers.clear();
    this.history.close();
    await this.redis.quit().then(undefined, () => this.redis.disconnect());
  }

  /** Deletes every key of this broker's prefix (tests, and tearing down an environment). */
  async destroyAll(): Promise<void> {
    const match = `${this.prefix.replace(/[*?[\]\\]/g, '\\$&')}:*`;
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', match, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await this.redis.unlink(...keys);
    } while (cursor !== '0');
  }
}

/** The most bytes a field value takes: 3 per UTF-16 unit of a string. */
const sizeBound = (f: string | Buffer) => (typeof f === 'string' ? 3 * f.length : f.byteLength);

export function createRedisBroker(options: RedisBrokerOptions): Promise<RedisBroker> {
  return RedisBroker.connect(options);
}
