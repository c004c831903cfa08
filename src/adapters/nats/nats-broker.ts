/**
 * @module adapters/nats/nats-broker
 * The Parley broker on NATS JetStream: `createNatsBroker({ url: 'nats://127.0.0.1:4222' })`, or
 * `PARLEY_BROKER=nats://127.0.0.1:4222`.
 *
 * How each guarantee maps onto JetStream:
 * - **Topics** are streams (`<PREFIX>_<topic token>`, file storage, limits retention: messages stay
 *   until `retention` says, so a group created later can start from the beginning). Events are
 *   published on `<prefix>.t.<token>.all`; a dead letter replayed to one group on
 *   `<prefix>.t.<token>.to.<group token>` (other groups ack and skip it).
 * - **Publish** waits for JetStream's ack (stored, replicated as the stream is). **Dedupe**: the
 *   `Nats-Msg-Id` is the envelope's idempotency key, else its source and id (`msgIdOf`), within
 *   the stream's duplicate window (`dedupeWindowMs`, default 2 min); a duplicate returns the
 *   first envelope's id.
 * - **Groups** are durable pull consumers with explicit acks; `ack_wait` is the lease, refreshed
 *   by `working()` (`extendLease`); consumers of a group compete; `startFrom` picks the deliver
 *   policy when the group is created.
 * - **Retries** are `nak(delay)` with Parley's backoff; attempts come from the delivery count
 *   (`adapters/group-consumer.ts`); after `maxAttempts` the message is stored in the dead-letter
 *   stream (`<PREFIX>_DLQ`, one message per letter, its sequence is the letter's id) and acked.
 * - **Per-key order**: the key travels in the `Parley-Key` header; order holds per key within one
 *   consumer process (the group consumer holds later messages of a key while an earlier one is
 *   retried). Competing consumers of one group may interleave a key's messages.
 * - **Delay**: `Parley-Not-Before` header; a message that comes early is nak'ed until its time.
 * - **Backpressure**: each consumer fetches only as many messages as it has room for.
 * - **Pull requests** stay open 30 s (see `PULL_EXPIRES_MS`: nats-server 2.9 can lose a
 *   redelivery due as one expires); two missed server heartbeats end one early.
 * - **History** (reading a topic without a consumer, for the gateway's push): the topic's stream,
 *   positions are stream sequences; see `history.ts`.
 *
 * Reconnects: nats.js reconnects without end; fetches that fail while the server is away are
 * retried every second; unacked messages are redelivered when their lease ends.
 */

import type { JsMsg } from '@nats-io/jetstream';
import type { MsgHdrs } from '@nats-io/nats-core';
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
import { checkLetterRoom, checkPublish, checkSpec, DEFAULT_LEASE_MS } from '../../broker/check.ts';
import { letterBodyRoom, letterMatches, replayable, storedLetter } from '../../broker/outcome.ts';
import type { Codec } from '../../codec/codec.ts';
import { createJsonCodec } from '../../codec/json.ts';
import type { Envelope } from '../../envelope/envelope.ts';
import { assertEnvelope } from '../../envelope/envelope.ts';
import { ParleyError } from '../../errors.ts';
import { loadDriver, TurnBatch } from '../driver.ts';
import { GroupConsumer, type NewDeadLetter, type RawMessage } from '../group-consumer.ts';
import { Wakeup } from '../wakeup.ts';
import { connectNats, type NatsConnection } from './connect.ts';
import { natsError } from './errors.ts';
import { JetStreamHistory } from './history.ts';

type JsModule = typeof import('@nats-io/jetstream');
type JetStreamClient = ReturnType<JsModule['jetstream']>;
type JetStreamManager = Awaited<ReturnType<JsModule['jetstreamManager']>>;

export interface NatsBrokerOptions {
  url: string;
  /** Subject prefix and stream-name prefix: brokers with different prefixes share nothing. Default `parley`. */
  prefix?: string;
  /** Publisher dedupe window, ms. Default 120 000. */
  dedupeWindowMs?: number;
  /** How long a topic keeps its messages, ms (0: until `maxMessages`). Default 7 days. */
  retentionMs?: number;
  /** Most messages a topic keeps (-1: no limit). Default -1. */
  maxMessages?: number;
  /** `file` (default: survives a server restart) or `memory`. */
  storage?: 'file' | 'memory';
  /**
   * History pages of more sequences than this are read through an ordered consumer kept between
   * pages, shorter ones by message-gets (`history.ts`). Default 32; 0 reads every page through one.
   */
  historyConsumerFrom?: number;
  log?: (message: string) => void;
}

const KEY = 'Parley-Key';
const NOT_BEFORE = 'Parley-Not-Before';
/**
 * How long a group's pull request stays open, ms. Long, because nats-server 2.9 can lose a
 * redelivery that falls due just as a pull request expires: it counts the delivery, sends nothing,
 * and the message comes back only when its lease ends (seen here: a message nak'ed with a delay
 * of about the old 1 s expiry, 1 in ~15 tries). A request that is open for 30 s rarely expires at
 * that instant; it asks for no more than the consumer has room for, so backpressure is unchanged.
 */
const PULL_EXPIRES_MS = 30_000;
/** The server's heartbeat on an open pull request; two missed end it and a new one is made. */
const PULL_HEARTBEAT_MS = 2_500;
const MS = 1_000_000; // nanoseconds

/** A token safe in a subject and a stream name, distinct for distinct inputs. */
export function tokenOf(name: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return `${name.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 48)}_${h.toString(16).padStart(8, '0')}`;
}

interface Letter extends NewDeadLetter {
  key?: string;
}

/**
 * The `Nats-Msg-Id` JetStream dedupes on: the idempotency key, else the source and the id, which
 * CloudEvents makes unique together (the id alone is not: two producers may both send id `1`,
 * and the second would be dropped as a duplicate). As JSON text, so the two forms cannot meet and
 * a CR or LF, which a header value may not hold, is escaped rather than refused.
 */
export function msgIdOf(envelope: Envelope): string {
  return envelope.idempotencykey !== undefined
    ? JSON.stringify(envelope.idempotencykey)
    : JSON.stringify([envelope.source, envelope.id]);
}

/** nats-server's default `max_payload`, for a connection that has not said its own. */
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

export class NatsBroker implements Broker {
  readonly deadLetters: DeadLetterStore;
  /** @internal */ readonly prefix: string;
  private readonly streamPrefix: string;
  private readonly codec: Codec = createJsonCodec();
  private readonly log: (message: string) => void;
  private readonly ready = new Map<string, Promise<void>>();
  private readonly consumers = new Set<{ close(): Promise<void> }>();
  private closed = false;
  readonly history: JetStreamHistory;
  /** @internal Publishes and acks of one turn, sent together. */
  readonly turn = new TurnBatch();

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly headers: () => MsgHdrs,
    private readonly options: NatsBrokerOptions,
  ) {
    this.prefix = options.prefix ?? 'parley';
    this.streamPrefix = this.prefix.replace(/[^A-Za-z0-9_-]/g, '_').toUpperCase();
    this.log = options.log ?? ((m) => process.stderr.write(`parley nats broker: ${m}\n`));
    this.deadLetters = new NatsDeadLetters(this);
    this.history = new JetStreamHistory({
      nc,
      codec: this.codec,
      manager: () => this.jsm,
      client: () => this.js,
      streamOf: (topic) => this.streamOf(topic),
      subjectOf: (topic) => this.subjectOf(topic),
      isClosed: () => this.closed,
      ...(options.historyConsumerFrom === undefined ? {} : { consumerFrom: options.historyConsumerFrom }),
    });
  }

  static async connect(options: NatsBrokerOptions): Promise<NatsBroker> {
    const { nats, nc } = await connectNats(options.url, 'parley-broker');
    const jsmod = await loadDriver<JsModule>('@nats-io/jetstream', 'nats:');
    try {
      const jsm = await jsmod.jetstreamManager(nc);
      return new NatsBroker(nc, jsmod.jetstream(nc), jsm, () => nats.headers(), options);
    } catch (error) {
      await nc.close();
      throw natsError(error, 'opening JetStream (is the server started with -js?)');
    }
  }

  /** @internal */ streamOf(topic: string): string {
    return `${this.streamPrefix}_${tokenOf(topic)}`;
  }

  /** @internal */ subjectOf(topic: string, group?: string): string {
    const base = `${this.prefix}.t.${tokenOf(topic)}`;
    return group === undefined ? `${base}.all` : `${base}.to.${tokenOf(group)}`;
  }

  /** @internal */ get dlqStream(): string {
    return `${this.streamPrefix}_DLQ`;
  }

  /** @internal */ manager(): JetStreamManager {
    return this.jsm;
  }

  /** Creates the topic's stream once (and the dead-letter stream). */
  /** @internal */ ensure(stream: string, subjects: string[]): Promise<void> {
    let p = this.ready.get(stream);
    if (p === undefined) {
      p = (async () => {
        try {
          await this.jsm.streams.info(stream);
        } catch (error) {
          if (natsError(error, 'stream info').code !== 'NOT_FOUND')
            throw natsError(error, `looking up ${stream}`);
          const retention = this.options.retentionMs ?? 7 * 24 * 3600 * 1000;
          await this.jsm.streams
            .add({
              name: stream,
              subjects,
              storage: (this.options.storage ?? 'file') as never,
              duplicate_window: (this.options.dedupeWindowMs ?? 120_000) * MS,
              max_age: retention * MS,
              max_msgs: this.options.maxMessages ?? -1,
            })
            .catch((e: unknown) => {
              // Another process made it first: fine.
              if (!/already in use/i.test(String((e as Error).message)))
                throw natsError(e, `creating ${stream}`);
            });
        }
      })();
      p.catch(() => this.ready.delete(stream));
      this.ready.set(stream, p);
    }
    return p;
  }

  private ensureTopic(topic: string): Promise<void> {
    return this.ensure(this.streamOf(topic), [`${this.prefix}.t.${tokenOf(topic)}.>`]);
  }

  async publish(envelope: Envelope, options: BrokerPublishOptions = {}): Promise<PublishReceipt> {
    if (this.closed) throw new ParleyError('UNAVAILABLE', 'the broker is closed');
    checkPublish(envelope, options);
    await this.ensureTopic(envelope.type);
    return this.store(this.subjectOf(envelope.type), envelope, options, msgIdOf(envelope));
  }

  /** @internal Publishes bytes as they are and waits for JetStream to have them. */
  async storeBytes(subject: string, bytes: Uint8Array): Promise<void> {
    try {
      await this.js.publish(subject, bytes);
    } catch (error) {
      throw natsError(error, `publishing on ${subject}`);
    }
  }

  /** @internal Publishes one envelope and waits for JetStream to have it. */
  async store(
    subject: string,
    envelope: Envelope,
    options: BrokerPublishOptions,
    msgID: string | undefined,
  ): Promise<PublishReceipt> {
    const h = this.headers();
    if (options.key !== undefined) h.set(KEY, options.key);
    if (options.delay !== undefined && options.delay > 0)
      h.set(NOT_BEFORE, String(Date.now() + options.delay));
    let ack: Awaited<ReturnType<JetStreamClient['publish']>>;
    try {
      const body = this.codec.encode(envelope);
      // Its dead letter (body, key and the letter's fields) must fit the server's max_payload too.
      const max = this.nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
      checkLetterRoom(body.byteLength, max, 'NATS', 'max_payload', options.key);
      // With the turn's other publishes: one write for all of them (see TurnBatch).
      ack = await this.turn.call(() =>
        this.js.publish(subject, body, { headers: h, ...(msgID === undefined ? {} : { msgID }) }),
      );
    } catch (error) {
      throw natsError(error, `publishing ${envelope.type}`);
    }
    if (!ack.duplicate) return { id: envelope.id, duplicate: false };
    // A duplicate: the stream answers with the first message's sequence; its envelope has the id.
    const first = await this.jsm.streams.getMessage(ack.stream, { seq: ack.seq }).catch(() => null);
    let id = envelope.id;
    try {
      if (first !== null) id = assertEnvelope(this.codec.decode(first.data)).id;
    } catch {
      // keep the envelope's own id
    }
    return { id, duplicate: true };
  }

  async subscribe(spec: ConsumerSpec, handler: ConsumerHandler): Promise<Consumer> {
    if (this.closed) throw new ParleyError('UNAVAILABLE', 'the broker is closed');
    checkSpec(spec);
    await this.ensureTopic(spec.topic);
    const stream = this.streamOf(spec.topic);
    const durable = tokenOf(spec.group);
    const lease = spec.lease ?? DEFAULT_LEASE_MS;
    try {
      await this.jsm.consumers.info(stream, durable);
    } catch (error) {
      if (natsError(error, 'consumer info').code !== 'NOT_FOUND')
        throw natsError(error, `looking up ${durable}`);
      await this.jsm.consumers
        .add(stream, {
          durable_name: durable,
          ack_policy: 'explicit' as never,
          deliver_policy: (spec.startFrom === 'beginning' ? 'all' : 'new') as never,
          ack_wait: lease * MS,
          max_deliver: -1,
          max_ack_pending: 100_000,
        })
        .catch((e: unknown) => {
          if (!/already in use|already exists/i.test(String((e as Error).message))) {
            throw natsError(e, `creating group ${spec.group}`);
          }
        });
    }
    const consumer = await this.js.consumers.get(stream, durable).catch((e: unknown) => {
      throw natsError(e, `opening group ${spec.group}`);
    });
    const mine = this.subjectOf(spec.topic, spec.group);
    const others = `${this.prefix}.t.${tokenOf(spec.topic)}.to.`;
    const freed = new Wakeup();
    const group = new GroupConsumer(spec, handler, {
      codec: this.codec,
      deadLetter: (letter, raw) =>
        (this.deadLetters as NatsDeadLetters).add(
          raw.key === undefined ? letter : { ...letter, key: raw.key },
        ),
      onRoom: () => freed.wake(),
      letterBodyRoom: () => letterBodyRoom(this.nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD),
      log: this.log,
    });
    let batch: { stop(): void } | undefined;
    const loop = (async () => {
      while (!group.isClosed) {
        const room = group.room;
        if (room <= 0) {
          await freed.wait();
          continue;
        }
        try {
          const messages = await consumer.fetch({
            max_messages: room,
            expires: PULL_EXPIRES_MS,
            idle_heartbeat: PULL_HEARTBEAT_MS,
          });
          batch = messages;
          // close() ran while the fetch was being set up: it found no batch to stop, and the
          // pull would otherwise hold close() until it expires.
          if (group.isClosed) messages.stop();
          for await (const m of messages) {
            if (m.subject.startsWith(others) && m.subject !== mine) {
              m.ack(); // a replay meant for another group
              continue;
            }
            group.deliver(rawOf(m, this.turn));
          }
        } catch (error) {
          if (group.isClosed) break;
          this.log(`fetch for ${spec.group} on ${spec.topic} failed: ${natsError(error, 'fetch').message}`);
          await new Promise((r) => setTimeout(r, 1000));
        } finally {
          batch = undefined;
        }
      }
    })();
    const handle = {
      close: async () => {
        const closing = group.close();
        freed.wake();
        batch?.stop();
        await loop;
        await closing;
        this.consumers.delete(handle);
      },
    };
    this.consumers.add(handle);
    return handle;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...[...this.consumers].map((c) => c.close()), this.history.close()]);
    this.turn.flush();
    await this.nc.drain().catch(() => this.nc.close());
  }

  /** Deletes every stream of this broker's prefix (tests, and tearing down an environment). */
  async destroyAll(): Promise<void> {
    const names: string[] = [];
    for await (const info of this.jsm.streams.list()) {
      if (info.config.name.startsWith(`${this.streamPrefix}_`)) names.push(info.config.name);
    }
    for (const name of names) await this.jsm.streams.delete(name).catch(() => false);
    this.ready.clear();
  }
}

function rawOf(m: JsMsg, turn: TurnBatch): RawMessage {
  const notBefore = m.headers?.get(NOT_BEFORE);
  const key = m.headers?.get(KEY);
  return {
    id: String(m.info.streamSequence),
    body: m.data,
    key: key === undefined || key === '' ? undefined : key,
    notBefore: notBefore === undefined || notBefore === '' ? undefined : Number(notBefore),
    deliveries: m.info.deliveryCount,
    ack: () => {
      turn.later(() => m.ack()); // sent at the end of the turn: the room frees now
      return undefined;
    },
    retry: async (delay) => turn.later(() => m.nak(Math.max(0, Math.round(delay)))),
    extend: async () => turn.later(() => m.working()),
  };
}

/**
 * Dead letters in one stream, a message each; the letter's id is its sequence. Listing reads the
 * stream by sequence (dead letters are few; at most `scan` are read per call).
 */
class NatsDeadLetters implements DeadLetterStore {
  private readonly codec = createJsonCodec();
  private readonly scan = 10_000;

  constructor(private readonly broker: NatsBroker) {}

  private subject(topic: string, group: string): string {
    return `${this.broker.prefix}.dlq.${tokenOf(topic)}.${tokenOf(group)}`;
  }

  private async ready(): Promise<void> {
    await this.broker.ensure(this.broker.dlqStream, [`${this.broker.prefix}.dlq.>`]);
  }

  async add(letter: Letter): Promise<void> {
    await this.ready();
    await this.broker.storeBytes(this.subject(letter.topic, letter.group), this.codec.encode(letter));
  }

  private async all(filter: DeadLetterFilter = {}, limit = Number.POSITIVE_INFINITY): Promise<DeadLetter[]> {
    await this.ready();
    const jsm = this.broker.manager();
    const info = await jsm.streams.info(this.broker.dlqStream);
    const out: DeadLetter[] = [];
    const ids = filter.ids === undefined ? undefined : new Set(filter.ids);
    const first = info.state.first_seq;
    const last = Math.min(info.state.last_seq, first + this.scan);
    if (info.state.messages === 0) return out;
    for (let seq = first; seq <= last && out.length < limit; seq++) {
      if (ids !== undefined && !ids.has(seq)) continue;
      const letter = await this.read(seq);
      if (letter === undefined) continue;
      if (!letterMatches(letter, filter)) continue;
      out.push(letter);
    }
    return out;
  }

  private async read(seq: number): Promise<(DeadLetter & { key?: string }) | undefined> {
    const m = await this.broker
      .manager()
      .streams.getMessage(this.broker.dlqStream, { seq })
      .catch(() => null);
    if (m === null) return undefined;
    return storedLetter(seq, m.data, (b) => this.codec.decode(b));
  }

  list(filter?: DeadLetterFilter, limit = 100): Promise<DeadLetter[]> {
    return this.all(filter, limit);
  }

  async get(id: number): Promise<DeadLetter | undefined> {
    await this.ready();
    return this.read(id);
  }

  async replay(filter?: DeadLetterFilter): Promise<number> {
    let n = 0;
    for (const letter of (await this.all(filter)).filter(replayable)) {
      const key = (letter as { key?: string }).key;
      // To its group only, as a new message (attempts start again), without dedupe.
      await this.broker.store(
        this.broker.subjectOf(letter.topic, letter.group),
        letter.envelope,
        key === undefined ? {} : { key },
        undefined,
      );
      await this.broker.manager().streams.deleteMessage(this.broker.dlqStream, letter.id);
      n++;
    }
    return n;
  }

  async purge(filter?: DeadLetterFilter): Promise<number> {
    let n = 0;
    for (const letter of await this.all(filter)) {
      if (await this.broker.manager().streams.deleteMessage(this.broker.dlqStream, letter.id)) n++;
    }
    return n;
  }
}

export function createNatsBroker(options: NatsBrokerOptions): Promise<NatsBroker> {
  return NatsBroker.connect(options);
}
