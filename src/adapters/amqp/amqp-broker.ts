/**
 * @module adapters/amqp/amqp-broker
 * The Parley broker on RabbitMQ (3.10 or later): `createAmqpBroker({ url: 'amqp://guest:guest@127.0.0.1:5672' })`.
 *
 * How each guarantee maps onto RabbitMQ:
 * - **Topics**: one durable topic exchange per prefix, `<prefix>.topics`; an event is published
 *   with its topic (the event type, or `queue:<name>`) as routing key. Topics may not hold a `*`
 *   or `#` word (they would be wildcards in the binding) and are at most 255 bytes.
 * - **Groups**: a durable quorum queue per (topic, group), `<prefix>.<topic>.<group>` (a hashed
 *   name when the group holds a `.` or the name is too long), bound with the topic. Consumers of
 *   a group compete on its queue. A queue holds only what arrived after it was bound: a group
 *   always starts from now (`startFrom: 'beginning'` cannot be honoured; streams could, at the
 *   cost of every other guarantee here being rebuilt by hand).
 * - **Publish** goes through a confirm channel as a persistent message and resolves on the
 *   server's confirm (for a quorum queue: written to a majority). A topic no group listens to
 *   drops the message, as every topic broker does.
 * - **Dedupe**: RabbitMQ has none. The idempotency key (else the envelope id) is remembered for
 *   `dedupeWindowMs` (default 2 min, at most `dedupeMaxKeys`) **in this publisher process**: two
 *   processes publishing the same key both store it, and a restart forgets. A shared record would
 *   need a store with an atomic insert, which RabbitMQ does not offer (queue declares race).
 * - **Delivery**: each consumer has its own channel with `prefetch = maxInFlight` and manual acks.
 *   Attempts: a quorum queue counts returns in `x-delivery-count`; a retried message is
 *   republished (new to RabbitMQ), so the deliveries before it travel in the `x-parley-attempt`
 *   header, and deliveries = `x-parley-attempt` + `x-delivery-count` + 1. With `queueType:
 *   'classic'` there is no count: a redelivered message counts once more per delivery this
 *   process saw, so a crash that moves it to another process may cost no attempt.
 * - **Retry with delay**: the message is published (confirmed) to the headers exchange
 *   `<prefix>.delay`, which routes it by its bucket to the quorum queue `<prefix>.delay.<ms>`:
 *   a queue TTL of `<ms>` and a dead-letter exchange (the default exchange, at-least-once
 *   dead-lettering) that sends it, by its routing key (the group's queue name), back to that
 *   group's queue only. The original is acked only after the confirm: a crash in between
 *   delivers it twice, never zero times. Buckets are 10, 12, 15, 20, 25, 30, 40, 50, 60, 80 × 10ⁿ
 *   ms (a delay is rounded up: late by under 25 %, never early). A delay of 0 is a plain requeue.
 * - **Delayed publish**: the same, through `<prefix>.delay-topic.<ms>` queues that dead-letter to
 *   the topic exchange with the topic as routing key (to every group). The `x-parley-not-before`
 *   header holds the exact time; a message that comes early is put back until then.
 * - **Leases**: RabbitMQ has none: a delivery is held until it is acked or its channel closes
 *   (and the server closes a channel holding one past `consumer_timeout`, 30 min by default). So
 *   the lease is kept here: a delivery not settled nor extended within its lease is given back
 *   (`nack` with requeue) for another consumer; a later ack of it is ignored. A crashed process
 *   loses its connection and RabbitMQ requeues everything it held at once. Leases longer than
 *   `consumer_timeout` cannot be had: raise it on the server.
 * - **Dead letters**: a stream `<prefix>.dlq` (shared by every process, kept `deadLetterMaxAge`,
 *   default 30 days): one record per letter, with the error code and message in its headers (the
 *   reason); the letter's id is its stream offset. Replay and purge append tombstones (streams
 *   are append-only); replay publishes to the group's queue only, as a new message (attempts
 *   start again). Each broker instance indexes the stream in memory, reading from where it last
 *   stopped: every `list`/`get`/`replay`/`purge` first appends a marker and reads up to it.
 * - **Per-key order**: the key travels in `x-parley-key`; order holds per key within one consumer
 *   process (the group consumer holds later messages of a key while an earlier one waits for its
 *   retry). Competing consumers of one group may interleave a key's messages; a single active
 *   consumer (`x-single-active-consumer`) per group would give order across processes.
 * - **Backpressure**: `prefetch = maxInFlight`; a lease given back frees a prefetch slot while
 *   its handler may still run, so a consumer that is full pauses (cancels its consumer) until it
 *   has room, and a message that comes anyway is returned uncounted.
 *
 * Reconnects (`connect.ts`): the connection is dialled again with backoff; consumers open new
 * channels and consume again (RabbitMQ requeued what the old ones held; their late acks are
 * ignored). A publish while the connection is down waits for it up to `publishTimeoutMs` and
 * then fails with UNAVAILABLE; a publish whose confirm is lost with the connection fails too
 * (UNAVAILABLE, retryable: it may have been stored).
 */
import { randomUUID } from 'node:crypto';
import type { ConsumeMessage, Options } from 'amqplib';
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
import { type AmqpChannel, type AmqpConfirmChannel, AmqpLink, type ChannelModel } from './connect.ts';
import { amqpError } from './errors.ts';

export interface AmqpBrokerOptions {
  /** `amqp://user:pass@host:port/vhost`. */
  url: string;
  /** Name prefix of every exchange and queue: brokers with different prefixes share nothing. Default `parley`. */
  prefix?: string;
  /** `quorum` (default: replicated, counts deliveries) or `classic` (a single node; see the module comment). */
  queueType?: 'quorum' | 'classic';
  /** Publisher dedupe window, ms, per publisher process. Default 120 000. */
  dedupeWindowMs?: number;
  /** Most keys the dedupe window remembers. Default 100 000. */
  dedupeMaxKeys?: number;
  /** How long dead letters are kept (a stream `x-max-age`). Default `30D`. */
  deadLetterMaxAge?: string;
  /** How long a publish waits for a lost connection to come back. Default 10 000. */
  publishTimeoutMs?: number;
  log?: (message: string) => void;
}

const KEY = 'x-parley-key';
const NOT_BEFORE = 'x-parley-not-before';
const ATTEMPT = 'x-parley-attempt';
/** Routing header of the delay exchange (a headers exchange ignores `x-` headers when matching). */
const DELAY = 'parley-delay';
const RECORD = 'x-parley-record';
const MARK = 'x-parley-mark';

const BUCKETS = [10, 12, 15, 20, 25, 30, 40, 50, 60, 80];

/** The delay bucket a delay falls in: the smallest bucket not shorter than it. */
export function bucketOf(ms: number): number {
  let scale = 1;
  for (;;) {
    for (const b of BUCKETS) if (b * scale >= ms) return b * scale;
    scale *= 10;
  }
}

function fnv(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

function checkTopic(topic: string): void {
  if (Buffer.byteLength(topic) > 255)
    throw new ParleyError('INVALID_ARGUMENT', `RabbitMQ: topic over 255 bytes: ${topic.slice(0, 40)}...`);
  if (topic.split('.').some((w) => w === '*' || w === '#'))
    throw new ParleyError('INVALID_ARGUMENT', `RabbitMQ: topic ${topic} holds a * or # word (a wildcard)`);
}

function header(m: ConsumeMessage, name: string): string | undefined {
  const v: unknown = m.properties.headers?.[name];
  if (v === undefined || v === null) return undefined;
  return Buffer.isBuffer(v) ? v.toString() : String(v);
}

function count(m: ConsumeMessage, name: string): number {
  const n = Number(header(m, name) ?? 0);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

interface Letter extends NewDeadLetter {
  key?: string;
}

interface DedupeEntry {
  at: number;
  id: Promise<string>;
}

export class AmqpBroker implements Broker {
  readonly deadLetters: DeadLetterStore;
  /** @internal */ readonly prefix: string;
  /** @internal */ readonly quorum: boolean;
  /** @internal */ readonly log: (message: string) => void;
  private readonly codec: Codec = createJsonCodec();
  private readonly declared = new Map<string, Promise<void>>();
  /** Every queue and exchange this instance declared (for `destroyAll`). */
  private readonly names = { queues: new Set<string>(), exchanges: new Set<string>() };
  private readonly consumers = new Set<AmqpConsumer>();
  private readonly dedupe = new Map<string, DedupeEntry>();
  private confirm: { model: ChannelModel; channel: Promise<AmqpConfirmChannel> } | undefined;
  private admin: { model: ChannelModel; channel: Promise<AmqpChannel> } | undefined;
  private closed = false;

  private constructor(
    /** @internal */ readonly link: AmqpLink,
    /** @internal */ readonly options: AmqpBrokerOptions,
    prefix: string,
    log: (message: string) => void,
  ) {
    this.prefix = prefix;
    this.log = log;
    this.quorum = (options.queueType ?? 'quorum') === 'quorum';
    this.deadLetters = new AmqpDeadLetters(this);
  }

  static async connect(options: AmqpBrokerOptions): Promise<AmqpBroker> {
    const prefix = options.prefix ?? 'parley';
    if (!/^[A-Za-z0-9_-]+$/.test(prefix))
      throw new ParleyError(
        'INVALID_ARGUMENT',
        `RabbitMQ: prefix ${JSON.stringify(prefix)} must be letters, digits, _ and -`,
      );
    const log = options.log ?? ((m: string) => process.stderr.write(`parley amqp broker: ${m}\n`));
    const link = await AmqpLink.open({ url: options.url, name: `parley-broker ${prefix}`, log });
    const [major = 0, minor = 0] = link.serverVersion.split('.').map(Number);
    if (major < 3 || (major === 3 && minor < 10))
      log(
        `RabbitMQ ${link.serverVersion}: quorum queue TTL and at-least-once dead-lettering need 3.10 or later`,
      );
    return new AmqpBroker(link, options, prefix, log);
  }

  // --- names ---

  /** @internal */ get topicsExchange(): string {
    return `${this.prefix}.topics`;
  }

  /** @internal */ get delayExchange(): string {
    return `${this.prefix}.delay`;
  }

  /** @internal */ get dlq(): string {
    return `${this.prefix}.dlq`;
  }

  /** @internal The queue of a (topic, group): `<prefix>.<topic>.<group>`, hashed when that would be ambiguous. */
  queueOf(topic: string, group: string): string {
    const plain = `${this.prefix}.${topic}.${group}`;
    if (
      !group.includes('.') &&
      topic !== 'delay' &&
      topic !== 'delay-topic' &&
      Buffer.byteLength(plain) <= 255
    )
      return plain;
    const readable = `${topic}.${group}`.replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 120);
    return `${this.prefix}.q.${readable}.${fnv(`${topic}\u0000${group}`)}`;
  }

  // --- channels ---

  private async confirmChannel(): Promise<AmqpConfirmChannel> {
    const model = await this.link.connection(this.options.publishTimeoutMs ?? 10_000);
    if (this.confirm?.model !== model) {
      const channel = model.createConfirmChannel().then((ch) => {
        ch.on('error', (e: Error) => this.log(amqpError(e, 'publish channel').message));
        ch.on('close', () => {
          if (this.confirm?.channel === channel) this.confirm = undefined;
        });
        return ch;
      });
      channel.catch(() => {
        if (this.confirm?.channel === channel) this.confirm = undefined;
      });
      this.confirm = { model, channel };
    }
    return this.confirm.channel;
  }

  /** @internal Runs declarations on a channel of their own (a failed one closes it). */
  async declare<T>(what: string, fn: (ch: AmqpChannel) => Promise<T>): Promise<T> {
    const model = await this.link.connection(this.options.publishTimeoutMs ?? 10_000);
    if (this.admin?.model !== model) {
      const channel = model.createChannel().then((ch) => {
        ch.on('error', (e: Error) => this.log(amqpError(e, 'declaring').message));
        ch.on('close', () => {
          if (this.admin?.channel === channel) this.admin = undefined;
        });
        return ch;
      });
      channel.catch(() => {
        if (this.admin?.channel === channel) this.admin = undefined;
      });
      this.admin = { model, channel };
    }
    try {
      return await fn(await this.admin.channel);
    } catch (error) {
      throw amqpError(error, what);
    }
  }

  /** @internal Publishes and waits for the server's confirm. */
  async publishConfirmed(
    exchange: string,
    routingKey: string,
    body: Uint8Array,
    options: Options.Publish,
  ): Promise<void> {
    const content = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    try {
      const ch = await this.confirmChannel();
      await new Promise<void>((resolve, reject) => {
        try {
          ch.publish(exchange, routingKey, content, { persistent: true, ...options }, (err: unknown) =>
            err === null || err === undefined ? resolve() : reject(err),
          );
        } catch (error) {
          reject(error);
        }
      });
    } catch (error) {
      throw amqpError(error, `publishing to ${exchange || 'queue'} ${routingKey}`);
    }
  }

  /** @internal Declares once per instance (until a failure or `destroyAll`). */
  once(name: string, fn: () => Promise<void>): Promise<void> {
    let p = this.declared.get(name);
    if (p === undefined) {
      p = fn();
      p.catch(() => this.declared.delete(name));
      this.declared.set(name, p);
    }
    return p;
  }

  private queueArgs(extra: Record<string, unknown> = {}): Record<string, unknown> {
    return { 'x-queue-type': this.quorum ? 'quorum' : 'classic', ...extra };
  }

  /** @internal */ ensureTopics(): Promise<void> {
    return this.once(`exchange ${this.topicsExchange}`, () =>
      this.declare(`declaring ${this.topicsExchange}`, async (ch) => {
        this.names.exchanges.add(this.topicsExchange);
        await ch.assertExchange(this.topicsExchange, 'topic', { durable: true });
      }),
    );
  }

  /** @internal The group's queue, bound to its topic. */
  ensureGroup(topic: string, group: string): Promise<string> {
    const queue = this.queueOf(topic, group);
    return this.once(`queue ${queue}`, async () => {
      await this.ensureTopics();
      await this.declare(`declaring ${queue}`, async (ch) => {
        this.names.queues.add(queue);
        await ch.assertQueue(queue, { durable: true, arguments: this.queueArgs() });
        await ch.bindQueue(queue, this.topicsExchange, topic);
      });
    }).then(() => queue);
  }

  /** A delay bucket: `via: 'queue'` returns to a group's queue by name, `'topic'` to the topic exchange. */
  private ensureDelay(bucket: number, via: 'queue' | 'topic'): Promise<void> {
    const queue = via === 'queue' ? `${this.prefix}.delay.${bucket}` : `${this.prefix}.delay-topic.${bucket}`;
    return this.once(`queue ${queue}`, async () => {
      if (via === 'topic') await this.ensureTopics();
      await this.declare(`declaring ${queue}`, async (ch) => {
        this.names.exchanges.add(this.delayExchange);
        this.names.queues.add(queue);
        await ch.assertExchange(this.delayExchange, 'headers', { durable: true });
        const safe = this.quorum
          ? { 'x-dead-letter-strategy': 'at-least-once', 'x-overflow': 'reject-publish' }
          : {};
        await ch.assertQueue(queue, {
          durable: true,
          arguments: this.queueArgs({
            'x-message-ttl': bucket,
            'x-dead-letter-exchange': via === 'queue' ? '' : this.topicsExchange,
            ...safe,
          }),
        });
        await ch.bindQueue(queue, this.delayExchange, '', { 'x-match': 'all', [DELAY]: `${via}.${bucket}` });
      });
    });
  }

  /** @internal Publishes through a delay bucket; `routingKey` is the group's queue or the topic. */
  async publishDelayed(
    via: 'queue' | 'topic',
    routingKey: string,
    delay: number,
    body: Uint8Array,
    options: Options.Publish & { headers: Record<string, unknown> },
  ): Promise<void> {
    const bucket = bucketOf(delay);
    await this.ensureDelay(bucket, via);
    await this.publishConfirmed(this.delayExchange, routingKey, body, {
      ...options,
      headers: { ...options.headers, [DELAY]: `${via}.${bucket}` },
    });
  }

  // --- publish ---

  async publish(envelope: Envelope, options: BrokerPublishOptions = {}): Promise<PublishReceipt> {
    if (this.closed) throw new ParleyError('UNAVAILABLE', 'the broker is closed');
    checkTopic(envelope.type);
    const key = envelope.idempotencykey ?? envelope.id;
    const now = Date.now();
    const window = this.options.dedupeWindowMs ?? 120_000;
    for (const [k, e] of this.dedupe) {
      if (now - e.at <= window && this.dedupe.size <= (this.options.dedupeMaxKeys ?? 100_000)) break;
      this.dedupe.delete(k);
    }
    const seen = this.dedupe.get(key);
    if (seen !== undefined) {
      const id = await seen.id.catch(() => undefined);
      if (id !== undefined) return { id, duplicate: true };
    }
    const id = this.store(envelope, options);
    const entry = { at: now, id: id.then(() => envelope.id) };
    entry.id.catch(() => undefined); // the caller hears of a failure through `id`; this copy is only for dedupe
    this.dedupe.set(key, entry);
    try {
      await id;
    } catch (error) {
      if (this.dedupe.get(key) === entry) this.dedupe.delete(key);
      throw error;
    }
    return { id: envelope.id, duplicate: false };
  }

  private async store(envelope: Envelope, options: BrokerPublishOptions): Promise<void> {
    const headers: Record<string, unknown> = { [ATTEMPT]: 0 };
    if (options.key !== undefined) headers[KEY] = options.key;
    const delay = options.delay ?? 0;
    if (delay > 0) headers[NOT_BEFORE] = Date.now() + delay;
    const body = this.codec.encode(envelope);
    const props = { messageId: randomUUID(), contentType: this.codec.contentType, headers };
    if (delay > 0) {
      await this.publishDelayed('topic', envelope.type, delay, body, props);
    } else {
      await this.ensureTopics();
      await this.publishConfirmed(this.topicsExchange, envelope.type, body, props);
    }
  }

  /** @internal Puts an envelope straight into one group's queue (a replayed dead letter). */
  async sendToGroup(
    topic: string,
    group: string,
    envelope: Envelope,
    key: string | undefined,
  ): Promise<void> {
    const queue = await this.ensureGroup(topic, group);
    const headers: Record<string, unknown> = { [ATTEMPT]: 0 };
    if (key !== undefined) headers[KEY] = key;
    await this.publishConfirmed('', queue, this.codec.encode(envelope), {
      messageId: randomUUID(),
      contentType: this.codec.contentType,
      headers,
    });
  }

  // --- consume ---

  async subscribe(spec: ConsumerSpec, handler: ConsumerHandler): Promise<Consumer> {
    if (this.closed) throw new ParleyError('UNAVAILABLE', 'the broker is closed');
    checkTopic(spec.topic);
    const queue = await this.ensureGroup(spec.topic, spec.group);
    const consumer = new AmqpConsumer(this, queue, spec, handler);
    await consumer.attach(await this.link.connection());
    const off = this.link.onReconnect((model) => consumer.attach(model));
    this.consumers.add(consumer);
    return {
      close: async () => {
        off();
        await consumer.close();
        this.consumers.delete(consumer);
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.consumers].map((c) => c.close()));
    await this.link.close();
  }

  /**
   * Deletes every queue and exchange this instance declared, and the prefix's dead-letter
   * stream (tests, and tearing down an environment). Works after `close()`, on a connection of
   * its own. Without the management API, a queue declared only by another instance is unknown here.
   */
  async destroyAll(): Promise<void> {
    const link = this.link.isClosed
      ? await AmqpLink.open({
          url: this.options.url,
          name: `parley-broker ${this.prefix} cleanup`,
          log: this.log,
        })
      : this.link;
    try {
      const model = await link.connection();
      const ch = await model.createChannel();
      ch.on('error', () => undefined);
      for (const q of [...this.names.queues, this.dlq]) await ch.deleteQueue(q);
      for (const x of this.names.exchanges) await ch.deleteExchange(x);
      await ch.close();
    } catch (error) {
      throw amqpError(error, 'deleting the queues');
    } finally {
      if (link !== this.link) await link.close();
      this.declared.clear();
    }
  }
}

/** One subscription: a channel of its own, the group consumer on top. */
class AmqpConsumer {
  readonly group: GroupConsumer;
  private channel: AmqpChannel | undefined;
  private model: ChannelModel | undefined;
  private tag: string | undefined;
  private paused = false;
  private closed = false;
  /** Deliveries this consumer handed back without counting (pauses), by message id. */
  private readonly uncounted = new Map<string, number>();
  /** Deliveries seen per message id (classic queues only: they count nothing). */
  private readonly seen = new Map<string, number>();
  /** Unsettled deliveries: they die with their channel. */
  private readonly held = new Set<{ drop(): void }>();
  private readonly settling = new Set<Promise<unknown>>();

  constructor(
    private readonly broker: AmqpBroker,
    private readonly queue: string,
    readonly spec: ConsumerSpec,
    handler: ConsumerHandler,
  ) {
    this.group = new GroupConsumer(spec, handler, {
      codec: createJsonCodec(),
      deadLetter: (letter, raw) =>
        (broker.deadLetters as AmqpDeadLetters).add(
          raw.key === undefined ? letter : { ...letter, key: raw.key },
        ),
      onRoom: () => void this.resume(),
      log: broker.log,
    });
  }

  /** Opens a channel on `model` and consumes (again, after a reconnect). */
  async attach(model: ChannelModel): Promise<void> {
    if (this.closed) return;
    this.model = model;
    const ch = await model.createChannel();
    ch.on('error', (e: Error) => {
      if (!this.closed)
        this.broker.log(amqpError(e, `consumer ${this.spec.group}/${this.spec.topic}`).message);
    });
    ch.on('close', () => this.lost(ch, model));
    await ch.prefetch(this.group.maxInFlight);
    this.channel = ch;
    this.tag = undefined;
    this.paused = false;
    await this.consume();
  }

  /** The channel closed: what it held is back in the queue; a live connection gets a new channel. */
  private lost(ch: AmqpChannel, model: ChannelModel): void {
    if (this.channel !== ch) return;
    this.channel = undefined;
    this.tag = undefined;
    for (const h of [...this.held]) h.drop();
    if (this.closed) return;
    setTimeout(() => {
      if (
        !this.closed &&
        this.channel === undefined &&
        this.broker.link.current === model &&
        this.model === model
      )
        this.attach(model).catch((e: unknown) =>
          this.broker.log(amqpError(e, 'reopening a consumer').message),
        );
    }, 500).unref();
  }

  private async consume(): Promise<void> {
    const ch = this.channel;
    if (ch === undefined || this.tag !== undefined || this.closed) return;
    const { consumerTag } = await ch.consume(this.queue, (m) => this.onMessage(ch, m), { noAck: false });
    if (this.channel === ch) this.tag = consumerTag;
  }

  /** Stops deliveries (the consumer is full, yet RabbitMQ may send more). */
  private async pause(): Promise<void> {
    if (this.paused) return;
    this.paused = true;
    const { channel: ch, tag } = this;
    this.tag = undefined;
    if (ch !== undefined && tag !== undefined) await ch.cancel(tag).catch(() => undefined);
  }

  private async resume(): Promise<void> {
    if (!this.paused || this.closed || this.group.room <= 0) return;
    this.paused = false;
    await this.consume().catch((e: unknown) => this.broker.log(amqpError(e, 'resuming a consumer').message));
  }

  private onMessage(ch: AmqpChannel, m: ConsumeMessage | null): void {
    if (m === null) {
      // The server cancelled the consumer (the queue was deleted).
      if (this.channel === ch) this.tag = undefined;
      if (!this.closed) this.broker.log(`RabbitMQ: the server cancelled the consumer of ${this.queue}`);
      return;
    }
    if (this.channel !== ch) return;
    const id = m.properties.messageId ?? `${this.queue}#${fnv(m.content.toString('base64'))}`;
    if (!this.group.isClosed && this.group.room <= 0) {
      // Only after a lease was given back (its slot freed while its handler runs): back, uncounted.
      this.uncounted.set(id, (this.uncounted.get(id) ?? 0) + 1);
      ch.nack(m, false, true);
      void this.pause();
      return;
    }
    this.group.deliver(this.rawOf(ch, m, id));
  }

  private deliveries(m: ConsumeMessage, id: string): number {
    const before = count(m, ATTEMPT) - (this.uncounted.get(id) ?? 0);
    if (this.broker.quorum) return before + count(m, 'x-delivery-count') + 1;
    const seen = (this.seen.get(id) ?? 0) + 1;
    this.seen.set(id, seen);
    if (this.seen.size > 10_000) this.seen.delete(this.seen.keys().next().value as string);
    return before + (m.fields.redelivered ? Math.max(2, seen) : 1);
  }

  private rawOf(ch: AmqpChannel, m: ConsumeMessage, id: string): RawMessage {
    const deliveries = this.deliveries(m, id);
    const key = header(m, KEY);
    const notBefore = header(m, NOT_BEFORE);
    // held: the handler has it; moving: being republished; done: settled, or given back.
    let state: 'held' | 'moving' | 'done' = 'held';
    let timer: NodeJS.Timeout | undefined;
    const entry = {
      drop: () => {
        state = 'done';
        clearTimeout(timer);
        this.held.delete(entry);
      },
    };
    this.held.add(entry);
    const forget = () => {
      this.uncounted.delete(id);
      this.seen.delete(id);
    };
    const lease = (ms: number) => {
      clearTimeout(timer);
      timer = setTimeout(() => void expire(), ms);
      timer.unref();
    };
    const expire = async () => {
      if (state !== 'held') return;
      entry.drop();
      this.broker.log(`the lease on a message of ${this.queue} ended: given back for redelivery`);
      // Full: stop deliveries first, so the message goes to another consumer, not back here.
      if (this.group.room <= 0) await this.pause();
      if (this.channel === ch) ch.nack(m, false, true);
    };
    const settle = (what: string): boolean => {
      if (state !== 'held') {
        if (state === 'done')
          this.broker.log(`ignored ${what} of a message of ${this.queue}: its lease had ended`);
        return false;
      }
      entry.drop();
      return true;
    };
    const track = <T>(p: Promise<T>): Promise<T> => {
      this.settling.add(p);
      void p.catch(() => undefined).finally(() => this.settling.delete(p));
      return p;
    };
    lease(this.group.lease);
    return {
      id,
      body: m.content,
      key: key === '' ? undefined : key,
      notBefore: notBefore === undefined || notBefore === '' ? undefined : Number(notBefore),
      deliveries,
      ack: async () => {
        if (!settle('an ack')) return;
        forget();
        try {
          ch.ack(m);
        } catch (error) {
          throw amqpError(error, 'ack');
        }
      },
      retry: (delay) =>
        track(
          (async () => {
            if (state !== 'held') return;
            if (delay < 1) {
              settle('a requeue');
              try {
                ch.nack(m, false, true);
              } catch (error) {
                throw amqpError(error, 'requeue');
              }
              return;
            }
            state = 'moving';
            clearTimeout(timer);
            try {
              await this.broker.publishDelayed('queue', this.queue, delay, m.content, {
                messageId: id,
                contentType: m.properties.contentType as string | undefined,
                headers: {
                  [ATTEMPT]: deliveries,
                  ...(key === undefined ? {} : { [KEY]: key }),
                  ...(notBefore === undefined ? {} : { [NOT_BEFORE]: notBefore }),
                },
              });
            } catch (error) {
              // Not stored elsewhere: keep holding it; its lease gives it back.
              if (state === 'moving') {
                state = 'held';
                lease(this.group.lease);
              }
              throw error;
            }
            if (state !== 'moving') return; // the channel died meanwhile: RabbitMQ has it back too
            entry.drop();
            forget();
            ch.ack(m);
          })(),
        ),
      extend: async (ms) => {
        if (state === 'held') lease(ms > 0 ? ms : this.group.lease);
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    const closing = this.group.close();
    await this.pause();
    await closing;
    await Promise.allSettled([...this.settling]);
    this.closed = true;
    const ch = this.channel;
    this.channel = undefined;
    for (const h of [...this.held]) h.drop();
    // Closing the channel gives back what it still holds.
    await ch?.close().catch(() => undefined);
  }
}

/**
 * Dead letters in the stream `<prefix>.dlq`: see the module comment. Records: a letter (its
 * offset is its id), a tombstone (ids replayed or purged), a marker (where a read stops).
 */
class AmqpDeadLetters implements DeadLetterStore {
  private readonly codec = createJsonCodec();
  private readonly index = new Map<number, DeadLetter & { key?: string }>();
  private next = 0;
  private tail: Promise<void> = Promise.resolve();
  private queued: Promise<void> | undefined;

  constructor(private readonly broker: AmqpBroker) {}

  private ready(): Promise<void> {
    const { broker } = this;
    return broker.once(`stream ${broker.dlq}`, () =>
      broker.declare(`declaring ${broker.dlq}`, async (ch) => {
        await ch.assertQueue(broker.dlq, {
          durable: true,
          arguments: {
            'x-queue-type': 'stream',
            'x-max-age': broker.options.deadLetterMaxAge ?? '30D',
            'x-stream-max-segment-size-bytes': 16_000_000,
          },
        });
      }),
    );
  }

  private async append(record: string, body: unknown, headers: Record<string, unknown> = {}): Promise<void> {
    await this.ready();
    await this.broker.publishConfirmed('', this.broker.dlq, this.codec.encode(body), {
      contentType: this.codec.contentType,
      headers: { [RECORD]: record, ...headers },
    });
  }

  async add(letter: Letter): Promise<void> {
    await this.append('letter', letter, {
      'x-parley-topic': letter.topic,
      'x-parley-group': letter.group,
      'x-parley-code': letter.code,
      'x-parley-reason': letter.message.slice(0, 1000),
      'x-parley-attempts': letter.attempts,
    });
  }

  /** Brings the index up to date (reads queue up: one read runs, one waits, later callers join it). */
  private sync(): Promise<void> {
    if (this.queued !== undefined) return this.queued;
    const run: Promise<void> = this.tail
      .catch(() => undefined)
      .then(() => {
        if (this.queued === run) this.queued = undefined;
        return this.read();
      });
    this.queued = run;
    this.tail = run;
    return run;
  }

  private async read(): Promise<void> {
    const token = randomUUID();
    await this.append('mark', {}, { [MARK]: token });
    const model = await this.broker.link.connection();
    let ch: AmqpChannel;
    try {
      ch = await model.createChannel();
    } catch (error) {
      throw amqpError(error, 'reading the dead letters');
    }
    ch.on('error', () => undefined);
    try {
      await ch.prefetch(1000);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new ParleyError('UNAVAILABLE', 'RabbitMQ: reading the dead letters timed out')),
          10_000,
        );
        ch.on('close', () =>
          reject(new ParleyError('UNAVAILABLE', 'RabbitMQ: the channel closed while reading dead letters')),
        );
        ch.consume(
          this.broker.dlq,
          (m) => {
            if (m === null)
              return reject(new ParleyError('UNAVAILABLE', 'RabbitMQ: the dead-letter stream went away'));
            ch.ack(m);
            const offset = Number(m.properties.headers?.['x-stream-offset']);
            if (!Number.isFinite(offset) || offset < this.next) return;
            this.next = offset + 1;
            this.apply(offset, m);
            if (header(m, RECORD) === 'mark' && header(m, MARK) === token) {
              clearTimeout(timer);
              resolve();
            }
          },
          { noAck: false, arguments: { 'x-stream-offset': this.next } },
        ).catch(reject);
      });
    } catch (error) {
      throw amqpError(error, 'reading the dead letters');
    } finally {
      await ch.close().catch(() => undefined);
    }
  }

  private apply(offset: number, m: ConsumeMessage): void {
    const record = header(m, RECORD);
    try {
      if (record === 'letter') {
        const letter = this.codec.decode(m.content) as Letter;
        this.index.set(offset, { ...letter, id: offset });
      } else if (record === 'gone') {
        for (const id of this.codec.decode(m.content) as number[]) this.index.delete(id);
      }
    } catch {
      this.broker.log(`skipped an unreadable record at ${offset} of ${this.broker.dlq}`);
    }
  }

  private async matching(filter: DeadLetterFilter = {}): Promise<(DeadLetter & { key?: string })[]> {
    await this.sync();
    const ids = filter.ids === undefined ? undefined : new Set(filter.ids);
    return [...this.index.values()]
      .filter(
        (l) =>
          (ids === undefined || ids.has(l.id)) &&
          (filter.topic === undefined || l.topic === filter.topic) &&
          (filter.group === undefined || l.group === filter.group) &&
          (filter.code === undefined || l.code === filter.code),
      )
      .sort((a, b) => a.id - b.id);
  }

  async list(filter?: DeadLetterFilter, limit = 100): Promise<DeadLetter[]> {
    return (await this.matching(filter)).slice(0, limit);
  }

  async get(id: number): Promise<DeadLetter | undefined> {
    await this.sync();
    return this.index.get(id);
  }

  async replay(filter?: DeadLetterFilter): Promise<number> {
    let n = 0;
    for (const letter of await this.matching(filter)) {
      // To its group only, as a new message; then the tombstone (a crash between replays it twice).
      await this.broker.sendToGroup(letter.topic, letter.group, letter.envelope, letter.key);
      await this.append('gone', [letter.id]);
      this.index.delete(letter.id);
      n++;
    }
    return n;
  }

  async purge(filter?: DeadLetterFilter): Promise<number> {
    const ids = (await this.matching(filter)).map((l) => l.id);
    if (ids.length === 0) return 0;
    await this.append('gone', ids);
    for (const id of ids) this.index.delete(id);
    return ids.length;
  }
}

export function createAmqpBroker(options: AmqpBrokerOptions): Promise<AmqpBroker> {
  return AmqpBroker.connect(options);
}
