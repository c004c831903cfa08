/**
 * @module adapters/redis/redis-consumer
 * One subscription of the Redis broker (`redis-broker.ts`): a Redis consumer of the group, one
 * loop that reads, claims and takes due retries, on its own connection for blocking reads.
 *
 * - **Ack** is XACK, one per turn for the turn's acks. The entry stays in the stream (no XDEL:
 *   other groups still need it) until retention trims it. A handled entry frees its room once
 *   its ack is queued, not when Redis answers the XACK: the next read overlaps the ack's round
 *   trip (as an AMQP ack frees prefetch when it is sent). An XACK that fails is logged; its
 *   entries stay pending and are redelivered when their lease ends (at least once).
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
 * - **Per-key order**: the key travels in the `key` field; order holds per key within one
 *   consumer process (the group consumer holds later messages of a key while an earlier one is
 *   retried). Competing consumers of one group may interleave a key's messages.
 * - **Delay**: the `notBefore` field; the group consumer puts an early message back until then.
 * - **Backpressure**: each consumer reads and claims only as many entries as it has room for, in
 *   one loop, so reads and claims never together exceed `maxInFlight`.
 * - **Bodies are read as text**: ioredis turns each field into a string as it reads it, and the
 *   body goes to the codec as that text (`decodeText`), not made into bytes again to be checked
 *   and turned into text a second time. Text decoding turns a byte that is not UTF-8 into U+FFFD,
 *   so an entry whose text holds U+FFFD is read again as bytes (XRANGE of that one id) before it
 *   is delivered: a writer's own U+FFFD arrives as it was, and bytes that are not UTF-8 go to
 *   dead-letter with that reason.
 *
 * Reconnects: reads that fail are retried every second; what a consumer held is redelivered when
 * its lease ends.
 */
import { Buffer } from 'node:buffer';
import type { ConsumerHandler, ConsumerSpec } from '../../broker/broker.ts';
import type { Codec } from '../../codec/codec.ts';
import { ParleyError } from '../../errors.ts';
import { TurnQueue } from '../../runtime/turn-queue.ts';
import { GroupConsumer, type RawMessage } from '../group-consumer.ts';
import { Wakeup } from '../wakeup.ts';
import type { Redis } from './connect.ts';
import type { Letter } from './dead-letters.ts';
import { redisError } from './errors.ts';
import { CLAIM, EXTEND, FORGET, JANITOR, PARK } from './scripts.ts';

/** What a consumer needs of its broker (`RedisBroker` has it; a consumer does not import the broker). */
export interface ConsumerHost {
  /** The shared connection (everything but the blocking reads). */
  readonly redis: Redis;
  readonly codec: Codec;
  streamOf(topic: string): string;
  retryOf(topic: string, group: string): string;
  /** Creates the group (and the stream) unless it exists. */
  ensureGroup(spec: ConsumerSpec, from?: '0'): Promise<void>;
  /** A retry was parked: consumers of its group in this process look again at `at` (epoch ms). */
  parked(topic: string, group: string, at: number): void;
  /** Stores a dead letter. */
  deadLetter(letter: Letter): Promise<void>;
  /** The most bytes of a body that was no envelope its dead letter may hold. */
  letterBodyRoom(): number;
}

/** How often a consumer deletes the group's consumers that are long gone and hold nothing, ms. */
const JANITOR_EVERY = 5 * 60_000;

/** An entry's fields that a consumer reads. */
interface Fields {
  body: Buffer | string | undefined;
  key: string | undefined;
  notBefore: string | undefined;
  to: string | undefined;
}

/**
 * `[field, value, field, value…]`: strings from the reads and claims, Buffers from the XRANGE
 * that reads a body again as bytes (`bytesOf`), whose body then stays bytes.
 */
function fieldsOf(list: unknown): Fields {
  const out: Fields = { body: undefined, key: undefined, notBefore: undefined, to: undefined };
  if (!Array.isArray(list)) return out;
  for (let i = 0; i + 1 < list.length; i += 2) {
    const value: unknown = list[i + 1];
    switch (String(list[i])) {
      case 'body':
        out.body = Buffer.isBuffer(value) ? value : String(value);
        break;
      case 'key':
        out.key = String(value);
        break;
      case 'notBefore':
        out.notBefore = String(value);
        break;
      case 'to':
        out.to = String(value);
        break;
    }
  }
  return out;
}

/** One entry as the group consumer sees it: its operations are its consumer's (no closures). */
class Entry implements RawMessage {
  constructor(
    private readonly consumer: RedisConsumer,
    readonly id: string,
    readonly body: Buffer | string,
    readonly key: string | undefined,
    readonly notBefore: number | undefined,
    readonly deliveries: number,
  ) {}

  ack(): undefined {
    this.consumer.ack(this.id); // queued: the room frees now (see the module comment)
    return undefined;
  }

  retry(delay: number): Promise<void> {
    return this.consumer.park(this.id, delay);
  }

  extend(): Promise<void> {
    return this.consumer.extend(this.id);
  }
}

/** One Parley consumer: a Redis consumer of the group with its own connection for blocking reads. */
export class RedisConsumer {
  private readonly group: GroupConsumer;
  private readonly stream: string;
  private readonly retrySet: string;
  private readonly autoclaimEvery: number;
  private stopping = false;
  private loop: Promise<void> | undefined;
  private readonly freed = new Wakeup();
  /** This process's parked retries: when to look at the retry set (epoch ms). */
  private dues: number[] = [];
  private cursor = '0-0';
  private readerId: string | undefined;
  /** While a blocking read is out: until when it may wait. */
  private blockedUntil: number | undefined;
  private closing: Promise<void> | undefined;
  /** The last claim took as many as there was room for: more may be due. */
  private claimFilled = false;
  /** Acks made in one turn go out as one XACK (a command per batch, not per entry). */
  private readonly acks = new TurnQueue<string>((ids) => this.sendAcks(ids));

  constructor(
    private readonly broker: ConsumerHost,
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
        broker.deadLetter(raw.key === undefined ? letter : { ...letter, key: raw.key }),
      onRoom: () => this.freed.wake(),
      letterBodyRoom: () => broker.letterBodyRoom(),
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
        await this.freed.wait();
        continue;
      }
      try {
        let now = Date.now();
        const autoclaim = now >= nextAutoclaim;
        // A claim that filled the room may have left due retries behind: the next one comes as
        // soon as there is room. Otherwise claims keep their times (not one before every read:
        // a round trip per batch costs the reads).
        if (autoclaim || now >= nextPoll || this.claimFilled || this.dues.some((d) => d <= now)) {
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
            const later = this.take(String(id), fields, 1);
            if (later !== undefined) await later;
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
    const room = this.group.room;
    this.claimFilled = false;
    const reply = await CLAIM.run(
      this.broker.redis,
      [this.stream, this.retrySet],
      [this.spec.group, this.name, room, autoclaim ? this.group.lease : '', this.cursor],
    );
    if (!Array.isArray(reply)) return;
    const [cursor, claimed] = reply as [unknown, unknown];
    if (autoclaim) this.cursor = String(cursor);
    if (!Array.isArray(claimed)) return;
    this.claimFilled = claimed.length >= room;
    for (const c of claimed) {
      const [id, fields, count] = c as [unknown, unknown, unknown];
      const later = this.take(String(id), fields, Number(count) || 1);
      if (later !== undefined) await later;
    }
  }

  /**
   * Delivers one entry read or claimed; returns a promise only when it must first read the
   * entry's bytes (its text holds U+FFFD), so the caller keeps the entries in order.
   */
  private take(id: string, list: unknown, deliveries: number): Promise<void> | undefined {
    const fields = fieldsOf(list);
    if (typeof fields.body === 'string' && fields.body.includes('\ufffd')) {
      return this.bytesOf(id, fields.body).then((body) => this.deliver(id, { ...fields, body }, deliveries));
    }
    this.deliver(id, fields, deliveries);
    return undefined;
  }

  /**
   * The body's bytes, read again: U+FFFD in text is either the writer's own character or a byte
   * that was not UTF-8. (On the reader's connection, between its reads: ioredis's
   * auto-pipelining, on the shared one, loses `callBuffer`'s command name.)
   */
  private async bytesOf(id: string, text: string): Promise<Buffer | string> {
    try {
      const reply = await this.reader.callBuffer('XRANGE', this.stream, id, id);
      const entry = Array.isArray(reply) ? (reply[0] as unknown[] | undefined) : undefined;
      const body = fieldsOf(entry?.[1]).body;
      if (body !== undefined) return body;
    } catch (error) {
      this.log(`reading ${id} as bytes failed: ${redisError(error, 'XRANGE').message}`);
    }
    return text; // trimmed meanwhile, or unreadable now: the text is all there is
  }

  private deliver(id: string, fields: Fields, deliveries: number): void {
    const to = fields.to;
    if (to !== undefined && to !== this.spec.group) {
      this.ack(id); // a replay meant for another group
      return;
    }
    const notBefore = fields.notBefore;
    this.group.deliver(
      new Entry(
        this,
        id,
        fields.body ?? '',
        fields.key || undefined,
        notBefore === undefined || notBefore === '' ? undefined : Number(notBefore),
        deliveries,
      ),
    );
  }

  /** @internal */ ack(id: string): void {
    this.acks.add(id);
  }

  private sendAcks(ids: string[]): void {
    this.broker.redis.call('XACK', this.stream, this.spec.group, ...ids).catch((error: unknown) => {
      const what = ids.length === 1 ? ids[0] : `${ids.length} entries`;
      this.log(`${redisError(error, `acking ${what}`).message}: redelivered when their lease ends`);
    });
  }

  /** @internal */ async park(id: string, delay: number): Promise<void> {
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

  /** @internal */ async extend(id: string): Promise<void> {
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
      this.freed.wake();
      this.unblock();
      await this.loop;
      await settled;
      this.acks.flush(); // before FORGET, on the same connection: the consumer then holds nothing
      await FORGET.run(this.broker.redis, [this.stream], [this.spec.group, this.name]).catch(() => undefined);
      await this.reader.quit().then(undefined, () => this.reader.disconnect());
    })();
    return this.closing;
  }
}
