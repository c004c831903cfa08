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
 * - **Publish** is one Lua script (atomic: a crash cannot leave half of it): the dedupe check,
 *   XADD, then `SET <prefix>:dedupe:<key> <envelope id> PX <window>`. The dedupe key is the
 *   envelope's idempotency key, else its id; a duplicate within `dedupeWindowMs` (default 2 min)
 *   stores nothing and returns the first envelope's id (every publish holds one small key for the
 *   window; `dedupeWindowMs: 0` turns dedupe off). Resolves once Redis has the entry (in
 *   memory: durability is the server's persistence setting — AOF `appendfsync` — not Parley's).
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
 * - **Ack** is XACK. The entry stays in the stream (no XDEL: other groups still need it) until
 *   retention trims it.
 * - **Leases** are idle times in the group's pending list: every consumer runs XAUTOCLAIM with
 *   min-idle-time = its lease (every lease/4, at most every 5 s) and takes over what dead or
 *   stalled consumers held; `extendLease` is XCLAIM to itself with JUSTID (idle time back to 0:
 *   a whole lease from now, whatever `ms` asks for; it fails once another consumer took the entry).
 *   A closed consumer is deleted from its group when it holds nothing; consumers gone for long
 *   (10 leases, at least 5 min) that hold nothing are deleted by the others.
 * - **Attempts** come from the delivery count in the pending list (1 on the first delivery; every
 *   XCLAIM adds one), less the deferrals the group consumer counted (`adapters/group-consumer.ts`).
 * - **Retry after a delay** has no Redis primitive: the entry stays pending and its id goes into
 *   the group's retry sorted set, scored by due time (Redis's clock). Consumers of the group take
 *   due ids with ZREM + XCLAIM in one script (so exactly one gets it, and the delivery count goes
 *   up) — at once for this process's own retries, within `blockMs` (default 1 s) for the rest.
 *   A parked entry is never taken by XAUTOCLAIM before its time (the take-over skips ids in the
 *   retry set), so a retry delay longer than the lease costs no attempt.
 * - **Dead letters**: after `maxAttempts` the letter (with the key) goes into the `dlq` hash under
 *   an id from INCR, then the entry is acked. Replay appends the envelope to the topic stream
 *   again with `to` = its group (other groups ack and skip it), as a new entry (attempts start
 *   again), and deletes the letter, in one script. One stream per topic keeps the read path
 *   single; the cost is one skipped entry per other group.
 * - **Per-key order**: the key travels in the `key` field; order holds per key within one
 *   consumer process (the group consumer holds later messages of a key while an earlier one is
 *   retried). Competing consumers of one group may interleave a key's messages.
 * - **Delay**: the `notBefore` field; the group consumer puts an early message back until then.
 * - **Backpressure**: each consumer reads and claims only as many entries as it has room for, in
 *   one loop, so reads and claims never together exceed `maxInFlight`.
 *
 * Reconnects (`connect.ts`): ioredis reconnects without end; publishes fail with UNAVAILABLE
 * after a few failed reconnects; reads that fail are retried every second; what a consumer held
 * is redelivered when its lease ends.
 */

import { Buffer } from 'node:buffer';
import { createHash, randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type {
  Broker,
  BrokerPublishOptions,
  Consumer,
  ConsumerHandler,
  ConsumerSpec,
  DeadLetter,
  DeadLetterFilter,
  DeadLetterStore,
  PublishReceipt,
} from '../../broker/broker.ts';
import type { Codec } from '../../codec/codec.ts';
import { createJsonCodec } from '../../codec/json.ts';
import type { Envelope } from '../../envelope/envelope.ts';
import { ParleyError } from '../../errors.ts';
import { GroupConsumer, type NewDeadLetter, type RawMessage } from '../group-consumer.ts';
import { connectRedis, type Redis } from './connect.ts';
import { isReply, redisError } from './errors.ts';

export interface RedisBrokerOptions {
  url: string;
  /** Key prefix: brokers with different prefixes share nothing. Default `parley`. */
  prefix?: string;
  /** Publisher dedupe window, ms (0: no dedupe). Default 120 000. */
  dedupeWindowMs?: number;
  /** How long a topic keeps its entries, ms (0: until `maxLength`). Default 7 days. */
  retentionMs?: number;
  /** Most entries a topic keeps, approximately (`MAXLEN ~`; 0: no limit). Default 0. */
  maxLength?: number;
  /** Longest a blocking read waits, ms; also how often retries due from other processes are looked for. Default 1000. */
  blockMs?: number;
  log?: (message: string) => void;
}

/** A Lua script run by EVALSHA, loaded again with EVAL when Redis does not know it (a restart). */
class Script {
  private readonly sha: string;
  constructor(private readonly lua: string) {
    this.sha = createHash('sha1').update(lua).digest('hex');
  }
  async run(redis: Redis, keys: string[], args: (string | number | Buffer)[]): Promise<unknown> {
    try {
      return await redis.call('EVALSHA', this.sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!isReply(error, 'NOSCRIPT')) throw error;
      return redis.call('EVAL', this.lua, keys.length, ...keys, ...args);
    }
  }
}

const NOW_MS = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/**
 * KEYS: stream, dedupe key, dead-letter hash. ARGV: envelope id, dedupe window (0: none),
 * max length (0: none), retention ms (0: none), dead letter to delete ('' none), fields…
 * Returns [stored or first envelope id, 1 if a duplicate].
 */
const PUBLISH = new Script(`
if ARGV[2] ~= '0' then
  local first = redis.call('GET', KEYS[2])
  if first then return {first, 1} end
end
local add = {KEYS[1]}
if ARGV[3] ~= '0' then
  add[#add + 1] = 'MAXLEN'; add[#add + 1] = '~'; add[#add + 1] = ARGV[3]
end
add[#add + 1] = '*'
for i = 6, #ARGV do add[#add + 1] = ARGV[i] end
redis.call('XADD', unpack(add))
if ARGV[4] ~= '0' then
  ${NOW_MS}
  local minid = now - tonumber(ARGV[4])
  if minid > 0 then redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d', minid)) end
end
if ARGV[2] ~= '0' then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
if ARGV[5] ~= '' then redis.call('HDEL', KEYS[3], ARGV[5]) end
return {ARGV[1], 0}
`);

/**
 * KEYS: stream, retry set. ARGV: group, consumer, room, lease ('' : no take-over this time),
 * XAUTOCLAIM cursor. Takes due retries, then (if asked) entries idle for a lease that are not
 * waiting for a retry. Returns [next cursor, [[id, fields, delivery count], …]].
 */
const CLAIM = new Script(`
${NOW_MS}
local room = tonumber(ARGV[3])
local out = {}
local function take(id)
  local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
  if #c == 0 then return end
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  local n = 1
  if #p > 0 then n = p[1][4] end
  out[#out + 1] = {c[1][1], c[1][2], n}
  room = room - 1
end
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, room)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  take(id)
end
local cursor = ARGV[5]
if ARGV[4] ~= '' and room > 0 then
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[4], cursor, 'COUNT', room, 'JUSTID')
  cursor = r[1]
  for _, id in ipairs(r[2]) do
    if room > 0 and not redis.call('ZSCORE', KEYS[2], id) then take(id) end
  end
end
return {cursor, out}
`);

/** KEYS: stream, retry set. ARGV: group, consumer, id, delay. Parks a held entry; returns 1, or 0 if no longer held. */
const PARK = new Script(`
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #p == 0 then return 0 end
${NOW_MS}
redis.call('ZADD', KEYS[2], string.format('%d', now + tonumber(ARGV[4])), ARGV[3])
return 1
`);

/** KEYS: stream. ARGV: group, consumer, id. Resets a held entry's idle time; 0 if no longer held. */
const EXTEND = new Script(`
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #p == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
`);

/** KEYS: stream. ARGV: group, consumer. Deletes a consumer that holds nothing (never one with pending entries). */
const FORGET = new Script(`
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
`);

/**
 * KEYS: stream. ARGV: group, idle ms. Deletes consumers that hold nothing and were not seen for
 * that long (crashed or closed while others still had their retries): never one with pending
 * entries, and a live one that is deleted is made again by its next read.
 */
const JANITOR = new Script(`
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    n = n + 1
  end
end
return n
`);

/** KEYS: dead-letter hash, counter. ARGV: JSON letter without id. Returns the id. */
const DEAD_LETTER = new Script(`
local id = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], id, ARGV[1])
return id
`);

/** How often a consumer deletes the group's consumers that are long gone and hold nothing, ms. */
const JANITOR_EVERY = 5 * 60_000;

/** A topic or group name inside a key: `%` and `:` escaped, so `<topic>:<group>` is unambiguous. */
function part(name: string): string {
  return name.replace(/%/g, '%25').replace(/:/g, '%3A');
}

/** `[field, value, field, value…]` as a map. */
function fieldsOf(list: unknown): Map<string, string> {
  const out = new Map<string, string>();
  if (!Array.isArray(list)) return out;
  for (let i = 0; i + 1 < list.length; i += 2) out.set(String(list[i]), String(list[i + 1]));
  return out;
}

interface Letter extends NewDeadLetter {
  key?: string;
}

export class RedisBroker implements Broker {
  readonly deadLetters: DeadLetterStore;
  /** @internal */ readonly prefix: string;
  /** @internal */ readonly codec: Codec = createJsonCodec();
  private readonly log: (message: string) => void;
  private readonly consumers = new Set<RedisConsumer>();
  /** When this process last trimmed each topic's stream by age (epoch ms). */
  private readonly trimmed = new Map<string, number>();
  private closed = false;

  private constructor(
    /** @internal */ readonly redis: Redis,
    private readonly more: (name: string) => Promise<Redis>,
    private readonly options: RedisBrokerOptions,
  ) {
    this.prefix = options.prefix ?? 'parley';
    this.log = options.log ?? ((m) => process.stderr.write(`parley redis broker: ${m}\n`));
    this.deadLetters = new RedisDeadLetters(this);
  }

  static async connect(options: RedisBrokerOptions): Promise<RedisBroker> {
    const log = options.log ?? ((m: string) => process.stderr.write(`parley redis broker: ${m}\n`));
    const { redis, more } = await connectRedis(options.url, 'parley-broker', log);
    return new RedisBroker(redis, more, options);
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

  async publish(envelope: Envelope, options: BrokerPublishOptions = {}): Promise<PublishReceipt> {
    if (this.closed) throw new ParleyError('UNAVAILABLE', 'the broker is closed');
    const fields: (string | Buffer)[] = [];
    if (options.key !== undefined) fields.push('key', options.key);
    if (options.delay !== undefined && options.delay > 0)
      fields.push('notBefore', String(Date.now() + Math.round(options.delay)));
    const dedupe = envelope.idempotencykey ?? envelope.id;
    return this.append(envelope.type, envelope, fields, dedupe, '');
  }

  /** @internal Appends one envelope to its topic's stream (deduped when `dedupe` is set). */
  async append(
    topic: string,
    envelope: Envelope,
    fields: (string | Buffer)[],
    dedupe: string | undefined,
    deleteLetter: string,
  ): Promise<PublishReceipt> {
    const body = Buffer.from(this.codec.encode(envelope));
    const window = dedupe === undefined ? 0 : Math.max(0, Math.round(this.options.dedupeWindowMs ?? 120_000));
    // Trimming by age is approximate anyway (`~`): once a second per topic from this process.
    const now = Date.now();
    const stream = this.streamOf(topic);
    const trim = now - (this.trimmed.get(stream) ?? 0) >= 1000;
    if (trim) this.trimmed.set(stream, now);
    let reply: unknown;
    try {
      reply = await PUBLISH.run(
        this.redis,
        [stream, this.key(`dedupe:${dedupe ?? ''}`), this.key('dlq')],
        [
          envelope.id,
          window,
          Math.max(0, Math.round(this.options.maxLength ?? 0)),
          trim ? Math.max(0, Math.round(this.options.retentionMs ?? 7 * 24 * 3600 * 1000)) : 0,
          deleteLetter,
          'body',
          body,
          ...fields,
        ],
      );
    } catch (error) {
      throw redisError(error, `publishing on ${topic}`);
    }
    const [id, duplicate] = Array.isArray(reply) ? reply : [];
    return { id: String(id ?? envelope.id), duplicate: duplicate === 1 };
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

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.consumers].map((c) => c.close()));
    this.consumers.clear();
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

/** One Parley consumer: a Redis consumer of the group with its own connection for blocking reads. */
class RedisConsumer {
  private readonly group: GroupConsumer;
  private readonly stream: string;
  private readonly retrySet: string;
  private readonly autoclaimEvery: number;
  private stopping = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  /** This process's parked retries: when to look at the retry set (epoch ms). */
  private dues: number[] = [];
  private cursor = '0-0';
  private readerId: string | undefined;
  /** While a blocking read is out: until when it may wait. */
  private blockedUntil: number | undefined;
  private closing: Promise<void> | undefined;
  /** Acks waiting for this turn's XACK. */
  private acks: { id: string; resolve: () => void; reject: (error: unknown) => void }[] = [];

  constructor(
    private readonly broker: RedisBroker,
    private readonly reader: Redis,
    private readonly name: string,
    readonly spec: ConsumerSpec,
    handler: ConsumerHandler,
    private readonly blockMs: number,
    private readonly log: (message: string) => void,
  ) {
    this.stream = broker.streamOf(spec.topic);
    this.retrySet = broker.retryOf(spec.topic, spec.group);
    this.group = new GroupConsumer(spec, handler, {
      codec: broker.codec,
      deadLetter: (letter, raw) =>
        (broker.deadLetters as RedisDeadLetters).add(
          raw.key === undefined ? letter : { ...letter, key: raw.key },
        ),
      onRoom: () => this.wake?.(),
      log,
    });
    this.autoclaimEvery = Math.min(5000, Math.max(50, this.group.lease / 4));
    reader.on('ready', () => (this.readerId = undefined)); // a reconnect: a new client id
  }

  start(): void {
    this.loop = this.run();
  }

  /** Look at the retry set at `at`: interrupts a blocking read that would wait past it. */
  schedule(at: number): void {
    if (this.stopping) return;
    this.dues.push(at);
    if (this.blockedUntil !== undefined && at < this.blockedUntil) this.unblock();
  }

  private unblock(): void {
    if (this.readerId === undefined) return;
    this.blockedUntil = undefined;
    void this.broker.redis.call('CLIENT', 'UNBLOCK', this.readerId).catch(() => undefined);
  }

  private async run(): Promise<void> {
    let nextAutoclaim = Date.now() + this.autoclaimEvery;
    let nextPoll = 0;
    let nextJanitor = Date.now() + JANITOR_EVERY * Math.random();
    while (!this.stopping) {
      if (this.group.room <= 0) {
        await new Promise<void>((r) => (this.wake = r));
        this.wake = undefined;
        nextPoll = 0; // room again: parked retries may be waiting for it
        continue;
      }
      try {
        let now = Date.now();
        const autoclaim = now >= nextAutoclaim;
        if (autoclaim || now >= nextPoll || this.dues.some((d) => d <= now)) {
          this.dues = this.dues.filter((d) => d > now);
          if (autoclaim) nextAutoclaim = now + this.autoclaimEvery;
          nextPoll = now + this.blockMs;
          await this.claim(autoclaim);
          if (now >= nextJanitor) {
            nextJanitor = now + JANITOR_EVERY;
            const idle = Math.max(JANITOR_EVERY, 10 * this.group.lease);
            await JANITOR.run(this.broker.redis, [this.stream], [this.spec.group, idle]);
          }
          continue; // room may have changed
        }
        if (this.readerId === undefined) this.readerId = String(await this.reader.call('CLIENT', 'ID'));
        now = Date.now();
        const block = Math.max(1, Math.min(nextPoll, nextAutoclaim, ...this.dues) - now);
        this.blockedUntil = now + block;
        const reply = await this.reader.call(
          'XREADGROUP',
          'GROUP',
          this.spec.group,
          this.name,
          'COUNT',
          this.group.room,
          'BLOCK',
          block,
          'STREAMS',
          this.stream,
          '>',
        );
        this.blockedUntil = undefined;
        if (!Array.isArray(reply)) continue;
        for (const stream of reply) {
          const entries = (stream as unknown[])[1];
          if (!Array.isArray(entries)) continue;
          for (const entry of entries) {
            const [id, fields] = entry as [unknown, unknown];
            this.take(String(id), fields, 1);
          }
        }
      } catch (error) {
        this.blockedUntil = undefined;
        if (this.stopping) break;
        if (/^(NOGROUP|UNBLOCKED)\b/.test(String((error as Error).message))) {
          // The group or the stream vanished (a restart of a Redis that keeps nothing, a deleted
          // key): made again from the stream's start, so nothing stored since is skipped.
          this.log(`group ${this.spec.group} on ${this.spec.topic} vanished: created again`);
          await this.broker
            .ensureGroup(this.spec, '0')
            .catch((e: unknown) => this.log(redisError(e, 'creating the group again').message));
          continue;
        }
        this.log(
          `read for ${this.spec.group} on ${this.spec.topic} failed: ${redisError(error, 'read').message}`,
        );
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  /** Due retries, and (when `autoclaim`) entries whose lease ended, up to the room there is. */
  private async claim(autoclaim: boolean): Promise<void> {
    const reply = await CLAIM.run(
      this.broker.redis,
      [this.stream, this.retrySet],
      [this.spec.group, this.name, this.group.room, autoclaim ? this.group.lease : '', this.cursor],
    );
    if (!Array.isArray(reply)) return;
    const [cursor, claimed] = reply as [unknown, unknown];
    if (autoclaim) this.cursor = String(cursor);
    if (!Array.isArray(claimed)) return;
    for (const c of claimed) {
      const [id, fields, count] = c as [unknown, unknown, unknown];
      this.take(String(id), fields, Number(count) || 1);
    }
  }

  private take(id: string, list: unknown, deliveries: number): void {
    const fields = fieldsOf(list);
    const to = fields.get('to');
    if (to !== undefined && to !== this.spec.group) {
      void this.ack(id).catch(() => undefined); // a replay meant for another group
      return;
    }
    const notBefore = fields.get('notBefore');
    const raw: RawMessage = {
      id,
      body: Buffer.from(fields.get('body') ?? '', 'utf8'),
      key: fields.get('key') || undefined,
      notBefore: notBefore === undefined || notBefore === '' ? undefined : Number(notBefore),
      deliveries,
      ack: () => this.ack(id),
      retry: (delay) => this.park(id, delay),
      extend: () => this.extend(id),
    };
    this.group.deliver(raw);
  }

  /** Acks made in one turn of the event loop go out as one XACK (a command per batch, not per entry). */
  private ack(id: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.acks.push({ id, resolve, reject }) === 1) setImmediate(() => this.flushAcks());
    });
  }

  private flushAcks(): void {
    const batch = this.acks;
    this.acks = [];
    this.broker.redis.call('XACK', this.stream, this.spec.group, ...batch.map((a) => a.id)).then(
      () => {
        for (const a of batch) a.resolve();
      },
      (error: unknown) => {
        const e = redisError(
          error,
          `acking ${batch.length === 1 ? batch[0]?.id : `${batch.length} entries`}`,
        );
        for (const a of batch) a.reject(e);
      },
    );
  }

  private async park(id: string, delay: number): Promise<void> {
    const ms = Math.max(0, Math.round(delay));
    let held: unknown;
    try {
      held = await PARK.run(
        this.broker.redis,
        [this.stream, this.retrySet],
        [this.spec.group, this.name, id, ms],
      );
    } catch (error) {
      throw redisError(error, `putting back ${id}`);
    }
    // Due by Redis's clock at `now + ms` as Redis saw it: never before now + ms here.
    if (held === 1) this.broker.parked(this.spec.topic, this.spec.group, Date.now() + ms + 1);
  }

  private async extend(id: string): Promise<void> {
    let held: unknown;
    try {
      held = await EXTEND.run(this.broker.redis, [this.stream], [this.spec.group, this.name, id]);
    } catch (error) {
      throw redisError(error, `extending the lease of ${id}`);
    }
    if (held !== 1) {
      throw new ParleyError('FAILED_PRECONDITION', `the lease of ${id} ended: another consumer has it`);
    }
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopping = true;
      const settled = this.group.close();
      this.wake?.();
      this.unblock();
      await this.loop;
      await settled;
      await FORGET.run(this.broker.redis, [this.stream], [this.spec.group, this.name]).catch(() => undefined);
      await this.reader.quit().then(undefined, () => this.reader.disconnect());
    })();
    return this.closing;
  }
}

/** Dead letters in one hash (id → JSON letter); ids from a counter. Listing reads the hash. */
class RedisDeadLetters implements DeadLetterStore {
  constructor(private readonly broker: RedisBroker) {}

  async add(letter: Letter): Promise<void> {
    try {
      await DEAD_LETTER.run(
        this.broker.redis,
        [this.broker.key('dlq'), this.broker.key('dlq:seq')],
        [Buffer.from(this.broker.codec.encode(letter))],
      );
    } catch (error) {
      throw redisError(error, 'storing a dead letter');
    }
  }

  private parse(id: string, json: string): (DeadLetter & { key?: string }) | undefined {
    try {
      const letter = this.broker.codec.decode(Buffer.from(json, 'utf8')) as Letter;
      return { ...letter, id: Number(id) };
    } catch {
      return undefined;
    }
  }

  private async all(filter: DeadLetterFilter = {}, limit = Number.POSITIVE_INFINITY): Promise<DeadLetter[]> {
    let stored: Record<string, string>;
    try {
      stored =
        filter.ids === undefined
          ? await this.broker.redis.hgetall(this.broker.key('dlq'))
          : await this.some(filter.ids);
    } catch (error) {
      throw redisError(error, 'reading dead letters');
    }
    const out: DeadLetter[] = [];
    const ids = Object.keys(stored).sort((a, b) => Number(a) - Number(b));
    for (const id of ids) {
      if (out.length >= limit) break;
      const letter = this.parse(id, stored[id] as string);
      if (letter === undefined) continue;
      if (filter.topic !== undefined && letter.topic !== filter.topic) continue;
      if (filter.group !== undefined && letter.group !== filter.group) continue;
      if (filter.code !== undefined && letter.code !== filter.code) continue;
      out.push(letter);
    }
    return out;
  }

  private async some(ids: number[]): Promise<Record<string, string>> {
    if (ids.length === 0) return {};
    const values = await this.broker.redis.hmget(this.broker.key('dlq'), ...ids.map(String));
    const out: Record<string, string> = {};
    ids.forEach((id, i) => {
      const v = values[i];
      if (typeof v === 'string') out[String(id)] = v;
    });
    return out;
  }

  list(filter?: DeadLetterFilter, limit = 100): Promise<DeadLetter[]> {
    return this.all(filter, limit);
  }

  async get(id: number): Promise<DeadLetter | undefined> {
    const [letter] = await this.all({ ids: [id] });
    return letter;
  }

  async replay(filter?: DeadLetterFilter): Promise<number> {
    let n = 0;
    for (const letter of await this.all(filter)) {
      const key = (letter as { key?: string }).key;
      const fields = ['to', letter.group, ...(key === undefined ? [] : ['key', key])];
      // To its group only, as a new entry (attempts start again), without dedupe; the letter is
      // deleted by the same script.
      await this.broker.append(letter.topic, letter.envelope, fields, undefined, String(letter.id));
      n++;
    }
    return n;
  }

  async purge(filter?: DeadLetterFilter): Promise<number> {
    const ids = (await this.all(filter)).map((l) => String(l.id));
    if (ids.length === 0) return 0;
    try {
      return await this.broker.redis.hdel(this.broker.key('dlq'), ...ids);
    } catch (error) {
      throw redisError(error, 'purging dead letters');
    }
  }
}

export function createRedisBroker(options: RedisBrokerOptions): Promise<RedisBroker> {
  return RedisBroker.connect(options);
}
