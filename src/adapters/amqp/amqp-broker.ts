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
 * - **Publish** goes through a confirm channel (`confirms.ts`) as a persistent message and
 *   resolves on the server's confirm (for a quorum queue: written to a majority). A topic no
 *   group listens to drops the message, as every topic broker does. A first publish carries no
 *   `x-parley-*` header unless it has a key or a delay (an absent attempt count is 0); its
 *   message id is a random prefix per broker instance and a counter.
 * - **Dedupe** (`dedupe.ts`): RabbitMQ has none. The idempotency key is remembered for
 *   `dedupeWindowMs` (default 2 min, at most `dedupeMaxKeys`) **in this publisher process**
 *   (a publish without a key is stored as it is): two processes publishing the same key both
 *   store it, and a restart forgets. A shared record would need a store with an atomic insert,
 *   which RabbitMQ does not offer (queue declares race).
 * - **Delivery** (attempts, leases, per-key order, backpressure): see `amqp-consumer.ts`.
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
 * - **Dead letters**: a stream `<prefix>.dlq`; see `dead-letters.ts`.
 *
 * Queue, header and delay-bucket names are in `names.ts`.
 *
 * Reconnects (`connect.ts`): the connection is dialled again with backoff; consumers open new
 * channels and consume again (RabbitMQ requeued what the old ones held; their late acks are
 * ignored). A publish while the connection is down waits for it up to `publishTimeoutMs` and
 * then fails with UNAVAILABLE; a publish whose confirm is lost with the connection fails too
 * (UNAVAILABLE, retryable: it may have been stored).
 */
import { randomBytes } from 'node:crypto';
import type { Options } from 'amqplib';
import type {
  Broker,
  BrokerPublishOptions,
  Consumer,
  ConsumerHandler,
  ConsumerSpec,
  DeadLetterStore,
  PublishReceipt,
} from '../../broker/broker.ts';
import { checkLetterRoom, checkPublish, checkSpec } from '../../broker/check.ts';
import { letterBodyRoom } from '../../broker/outcome.ts';
import type { Codec } from '../../codec/codec.ts';
import { createJsonCodec } from '../../codec/json.ts';
import type { Envelope } from '../../envelope/envelope.ts';
import { ParleyError } from '../../errors.ts';
import { DedupeWindow } from '../dedupe.ts';
import { AmqpConsumer } from './amqp-consumer.ts';
import { ConfirmPublisher } from './confirms.ts';
import { type AmqpChannel, AmqpLink, type ChannelModel } from './connect.ts';
import { AmqpDeadLetters, type Letter } from './dead-letters.ts';
import { amqpError } from './errors.ts';
import { bucketOf, checkTopic, DELAY, groupQueueName, KEY, NOT_BEFORE } from './names.ts';

export { bucketOf } from './names.ts';

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
  /**
   * The server's `max_message_size` (RabbitMQ does not announce it): a larger message is refused
   * before it is sent. Default 134 217 728 (128 MiB, RabbitMQ's default since 3.8).
   */
  maxMessageBytes?: number;
  log?: (message: string) => void;
}

export class AmqpBroker implements Broker {
  readonly deadLetters: DeadLetterStore;
  private readonly letters: AmqpDeadLetters;
  /** @internal */ readonly prefix: string;
  /** @internal */ readonly quorum: boolean;
  /** @internal */ readonly log: (message: string) => void;
  private readonly codec: Codec = createJsonCodec();
  private readonly declared = new Map<string, Promise<void>>();
  /** Every queue and exchange this instance declared (for `destroyAll`). */
  private readonly names = { queues: new Set<string>(), exchanges: new Set<string>() };
  private readonly consumers = new Set<AmqpConsumer>();
  private readonly dedupe: DedupeWindow;
  private readonly publisher: ConfirmPublisher;
  /** The server's `max_message_size` (`maxMessageBytes`). */
  private readonly maxMessageBytes: number;
  /** Topics already checked (bounded; cleared when full). */
  private readonly topicsChecked = new Set<string>();
  /** `true` once the topic exchange is declared (until `destroyAll`): publishes skip the await. */
  private topicsReady = false;
  /** Message ids: a random prefix per instance and a counter (cheaper than a UUID per message). */
  private readonly idPrefix = `${randomBytes(9).toString('base64url')}.`;
  private idSeq = 0;
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
    this.dedupe = new DedupeWindow(options.dedupeWindowMs ?? 120_000, options.dedupeMaxKeys ?? 100_000);
    this.maxMessageBytes = options.maxMessageBytes ?? 128 * 1024 * 1024;
    this.publisher = new ConfirmPublisher(
      link,
      options.publishTimeoutMs ?? 10_000,
      log,
      this.maxMessageBytes,
    );
    this.letters = new AmqpDeadLetters(this);
    this.deadLetters = this.letters;
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
    return groupQueueName(this.prefix, topic, group);
  }

  // --- channels ---

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

  /** @internal Publishes (persistent unless `options` says otherwise) and waits for the server's confirm. */
  publishConfirmed(
    exchange: string,
    routingKey: string,
    body: Uint8Array,
    options: Options.Publish,
  ): Promise<void> {
    return this.publisher.publish(exchange, routingKey, body, options);
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
        this.topicsReady = true;
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
    options: Options.Publish,
  ): Promise<void> {
    const bucket = bucketOf(delay);
    await this.ensureDelay(bucket, via);
    await this.publishConfirmed(this.delayExchange, routingKey, body, {
      ...options,
      headers: { ...options.headers, [DELAY]: `${via}.${bucket}` },
    });
  }

  // --- publish ---

  publish(envelope: Envelope, options: BrokerPublishOptions = {}): Promise<PublishReceipt> {
    if (this.closed) return Promise.reject(new ParleyError('UNAVAILABLE', 'the broker is closed'));
    try {
      checkPublish(envelope, options); // before the turn's corked writes: refused alone
      this.checkTopicOnce(envelope.type);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.dedupe.publish(envelope.idempotencykey, envelope.id, Date.now(), () =>
      this.store(envelope, options),
    );
  }

  private checkTopicOnce(topic: string): void {
    if (this.topicsChecked.has(topic)) return;
    checkTopic(topic);
    if (this.topicsChecked.size >= 10_000) this.topicsChecked.clear();
    this.topicsChecked.add(topic);
  }

  /** @internal A message id unique to this publish. */
  nextMessageId(): string {
    return this.idPrefix + (++this.idSeq).toString(36);
  }

  private store(envelope: Envelope, options: BrokerPublishOptions): Promise<void> {
    const body = this.codec.encode(envelope);
    // Its dead letter (the body, its key and the letter's fields) must fit max_message_size too.
    try {
      checkLetterRoom(body.byteLength, this.maxMessageBytes, 'RabbitMQ', 'max_message_size', options.key);
    } catch (error) {
      return Promise.reject(error);
    }
    const delay = options.delay ?? 0;
    // No `x-parley-attempt` header on a first publish: absent counts as 0, and every header
    // costs encoding here, parsing in RabbitMQ and decoding in the consumer.
    const props: Options.Publish = {
      persistent: true,
      messageId: this.nextMessageId(),
      contentType: this.codec.contentType,
    };
    if (options.key !== undefined || delay > 0) {
      const headers: Record<string, unknown> = {};
      if (options.key !== undefined) headers[KEY] = options.key;
      if (delay > 0) headers[NOT_BEFORE] = Date.now() + delay;
      props.headers = headers;
    }
    if (delay > 0) return this.publishDelayed('topic', envelope.type, delay, body, props);
    if (this.topicsReady) return this.publishConfirmed(this.topicsExchange, envelope.type, body, props);
    return this.ensureTopics().then(() =>
      this.publishConfirmed(this.topicsExchange, envelope.type, body, props),
    );
  }

  /** @internal Puts an envelope straight into one group's queue (a replayed dead letter). */
  async sendToGroup(
    topic: string,
    group: string,
    envelope: Envelope,
    key: string | undefined,
  ): Promise<void> {
    const queue = await this.ensureGroup(topic, group);
    await this.publishConfirmed('', queue, this.codec.encode(envelope), {
      messageId: this.nextMessageId(),
      contentType: this.codec.contentType,
      ...(key === undefined ? {} : { headers: { [KEY]: key } }),
    });
  }

  // --- consume ---

  /** @internal Stores a consumer's dead letter. */
  letterBodyRoom(): number {
    return letterBodyRoom(this.maxMessageBytes);
  }

  deadLetter(letter: Letter): Promise<void> {
    return this.letters.add(letter);
  }

  async subscribe(spec: ConsumerSpec, handler: ConsumerHandler): Promise<Consumer> {
    if (this.closed) throw new ParleyError('UNAVAILABLE', 'the broker is closed');
    checkSpec(spec);
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
      this.topicsReady = false;
    }
  }
}

export function createAmqpBroker(options: AmqpBrokerOptions): Promise<AmqpBroker> {
  return AmqpBroker.connect(options);
}
