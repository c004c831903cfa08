/**
 * @module adapters/kafka
 * A Parley broker on Apache Kafka, through `@confluentinc/kafka-javascript` (librdkafka), an
 * optional peer dependency loaded with `import()` when a `kafka://host:port` URL is opened.
 *
 * Mapping: one Kafka topic per Parley topic (`<namespace>.<escaped topic>`); the ordering key is
 * the record key, so a key stays in one partition; a Parley group is a Kafka consumer group
 * (`<namespace>.<group>`), each consumer one member, partitions split cooperatively. Offsets are
 * committed by hand only past messages that were acked or dead-lettered. The producer is
 * idempotent (`enable.idempotence`: no duplicates or reordering from the driver's own resends).
 *
 * Choices (see `consumer.ts` and `rebalance.ts` for the consumer side):
 * - Retries and `details.deferMs` are in-consumer: the message waits in memory at the head of its
 *   key's queue, so only that key pauses; nothing is re-published and attempt counts live in the
 *   member (a member that dies restarts them at 1 for what it had not settled).
 * - Delayed publish (`delay`) writes the record at once with a `parley-not-before` header; a
 *   consumer holds it (and its key) until then. The partition's commit stays behind it, so keep
 *   delays short (seconds to minutes), not a scheduler.
 * - Publisher dedupe: Kafka's idempotent producer only removes its own network resends, not an
 *   application publishing the same envelope twice. This broker remembers `idempotencykey`s it
 *   published for `idempotencyWindow` ms, at most `dedupeMaxKeys` of them (in this process only,
 *   `dedupe.ts`); across processes, consumers dedupe with the inbox.
 * - Dead letters live in the `<namespace>._dead-letters` topic (see `dead-letters.ts`); replay
 *   re-publishes to the topic with a `parley-group` header that other groups skip.
 * - Topics are created with the admin API (`createTopics: 'admin'`, default), or left to the
 *   cluster's auto-creation through a metadata request (`'metadata'`: librdkafka's mock cluster,
 *   which has no CreateTopics).
 * - Time is the wall clock: Kafka's does not follow a fake clock.
 */
import { randomUUID } from 'node:crypto';
import type {
  Broker,
  BrokerPublishOptions,
  Consumer,
  ConsumerHandler,
  ConsumerSpec,
  PublishReceipt,
} from '../../broker/broker.ts';
import { checkLetterRoom, checkPublish, checkSpec } from '../../broker/check.ts';
import { letterBodyRoom } from '../../broker/outcome.ts';
import { encodeJsonText } from '../../codec/json.ts';
import type { Envelope } from '../../envelope/envelope.ts';
import { ParleyError } from '../../errors.ts';
import { DedupeWindow } from '../dedupe.ts';
import { KafkaGroupConsumer } from './consumer.ts';
import { KafkaDeadLetters } from './dead-letters.ts';
import {
  type Admin,
  type Config,
  call,
  connect,
  type Driver,
  type Consumer as DriverConsumer,
  type DriverError,
  disconnect,
  type Headers,
  loadDriver,
  type Metadata,
  type Producer,
} from './driver.ts';
import { kafkaError } from './errors.ts';
import { KafkaHistory } from './history.ts';
import { type DeadRecord, fittingLetter, headers, kafkaTopicName } from './protocol.ts';

export interface KafkaBrokerOptions {
  /** Bootstrap servers, `host:port`. */
  brokers: string | string[];
  /** Prefix of every topic and group this broker uses. Default `parley`. */
  namespace?: string;
  /** How topics come to exist. Default `admin`. */
  createTopics?: 'admin' | 'metadata';
  /** Partitions of a topic created with the admin API. Default 6. */
  partitions?: number;
  /** Replication factor for created topics; -1 is the cluster's default. Default -1. */
  replicationFactor?: number;
  /** Publisher dedupe window for `idempotencykey`, ms. Default 10 minutes. */
  idempotencyWindow?: number;
  /** Most keys the dedupe window remembers. Default 100 000. */
  dedupeMaxKeys?: number;
  /** librdkafka properties for every client (security, timeouts), then per role. */
  config?: Config;
  producerConfig?: Config;
  consumerConfig?: Config;
  /** How long one poll of a consumer may block the driver, ms. Default 25. */
  pollMs?: number;
  /** Random numbers for backoff jitter and hand-over partitions. */
  random?: () => number;
}

export interface KafkaBroker extends Broker {
  /** The Kafka topic that carries a Parley topic. */
  kafkaTopic(topic: string): string;
}

/** Opens a Kafka broker: loads the driver and connects the producer. */
export async function createKafkaBroker(options: KafkaBrokerOptions): Promise<KafkaBroker> {
  const driver = await loadDriver();
  const broker = new KafkaBrokerImpl(driver, options);
  await broker.open();
  return broker;
}

/** `kafka://host:port[,host:port…][?namespace=…&createTopics=admin|metadata&partitions=N]`. */
export function kafkaBrokerFromUrl(url: string): Promise<KafkaBroker> {
  return createKafkaBroker(parseKafkaUrl(url));
}

export function parseKafkaUrl(url: string): KafkaBrokerOptions {
  const m = /^kafka:\/\/([^/?#]+)\/?(?:\?([^#]*))?$/.exec(url);
  if (m === null || m[1] === undefined)
    throw new ParleyError('INVALID_ARGUMENT', `not a kafka URL (kafka://host:port): ${url}`);
  const brokers = m[1].split(',').filter((b) => b !== '');
  for (const b of brokers)
    if (!/^[^:]+:\d+$/.test(b) && !/^\[[^\]]+\]:\d+$/.test(b))
      throw new ParleyError('INVALID_ARGUMENT', `kafka URL needs host:port, got ${b}`);
  const query = new URLSearchParams(m[2] ?? '');
  const options: KafkaBrokerOptions = { brokers };
  const namespace = query.get('namespace');
  if (namespace !== null) options.namespace = namespace;
  const create = query.get('createTopics');
  if (create === 'admin' || create === 'metadata') options.createTopics = create;
  else if (create !== null)
    throw new ParleyError('INVALID_ARGUMENT', `createTopics must be admin or metadata`);
  const partitions = query.get('partitions');
  if (partitions !== null) options.partitions = Number(partitions);
  return options;
}

interface PendingDelivery {
  resolve(report: { partition: number; offset: number }): void;
  reject(error: unknown): void;
}

class KafkaBrokerImpl implements KafkaBroker {
  readonly namespace: string;
  readonly random: () => number;
  readonly pollMs: number;
  readonly deadLetters: KafkaDeadLetters;
  readonly history: KafkaHistory;
  private readonly bootstrap: string;
  private readonly producer: Producer;
  /** The producer's `message.max.bytes` (librdkafka's default 1 000 000): the largest record. */
  private readonly maxRecordBytes: number;
  private admin: Admin | undefined;
  private readonly topics = new Map<string, Promise<number>>();
  /** Topics known to exist: a publish to one goes straight to the producer. */
  private readonly ready = new Set<string>();
  /** Parley topic → Kafka topic name. */
  private readonly names = new Map<string, string>();
  private readonly deliveries = new Map<number, PendingDelivery>();
  private readonly dedupe: DedupeWindow;
  private readonly consumers = new Set<KafkaGroupConsumer>();
  private deliverySeq = 0;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(
    readonly driver: Driver,
    private readonly options: KafkaBrokerOptions,
  ) {
    const brokers = Array.isArray(options.brokers) ? options.brokers : [options.brokers];
    if (brokers.length === 0)
      throw new ParleyError('INVALID_ARGUMENT', 'kafka broker needs bootstrap servers');
    this.bootstrap = brokers.join(',');
    this.namespace = options.namespace ?? 'parley';
    this.random = options.random ?? Math.random;
    this.pollMs = options.pollMs ?? 25;
    this.dedupe = new DedupeWindow(
      options.idempotencyWindow ?? 10 * 60_000,
      options.dedupeMaxKeys ?? 100_000,
    );
    this.producer = new driver.Producer({
      'bootstrap.servers': this.bootstrap,
      'enable.idempotence': true,
      acks: 'all',
      dr_cb: true,
      'linger.ms': 2,
      // Unkeyed messages go to a random partition each, so competing members share them.
      partitioner: 'murmur2_random',
      'sticky.partitioning.linger.ms': 0,
      ...options.config,
      ...options.producerConfig,
    });
    const max = Number(
      options.producerConfig?.['message.max.bytes'] ?? options.config?.['message.max.bytes'] ?? 1_000_000,
    );
    this.maxRecordBytes = Number.isFinite(max) && max > 0 ? max : 1_000_000;
    this.deadLetters = new KafkaDeadLetters(this);
    this.history = new KafkaHistory(this);
  }

  async open(): Promise<void> {
    this.producer.on('event.error', () => undefined); // connection trouble: librdkafka retries
    this.producer.on('delivery-report', ((
      err: DriverError | null,
      report: { opaque: number; partition: number; offset: number },
    ) => {
      const pending = this.deliveries.get(report.opaque);
      this.deliveries.delete(report.opaque);
      if (err) pending?.reject(kafkaError(err, 'publish'));
      else pending?.resolve(report);
    }) as (...args: never[]) => void);
    await connect(this.producer, 'connect producer');
    this.producer.setPollInterval(5);
    if ((this.options.createTopics ?? 'admin') === 'admin')
      this.admin = this.driver.AdminClient.createFrom(this.producer);
  }

  kafkaTopic(topic: string): string {
    // Escaping a name byte by byte is a few percent of a publish: each is worked out once.
    let name = this.names.get(topic);
    if (name === undefined) {
      if (this.names.size >= 10_000) this.names.clear();
      name = kafkaTopicName(this.namespace, topic);
      this.names.set(topic, name);
    }
    return name;
  }

  topicName(topic: string): string {
    return this.kafkaTopic(topic);
  }

  async publish(envelope: Envelope, options: BrokerPublishOptions = {}): Promise<PublishReceipt> {
    if (this.closed) throw new ParleyError('UNAVAILABLE', 'broker is closed');
    checkPublish(envelope, options);
    const now = Date.now();
    return this.dedupe.publish(envelope.idempotencykey, envelope.id, now, async () => {
      const topic = this.kafkaTopic(envelope.type);
      if (!this.ready.has(topic)) await this.ensureTopic(topic);
      const delay = Math.max(0, options.delay ?? 0);
      // Data with no JSON form (a BigInt, a cycle) is INVALID_ARGUMENT, as on every broker.
      const value = Buffer.from(encodeJsonText(envelope));
      // Its dead letter (value, key and the letter's fields) must fit a record too.
      checkLetterRoom(value.byteLength, this.maxRecordBytes, 'Kafka', 'message.max.bytes', options.key);
      await this.produce(topic, value, {
        key: options.key ?? null,
        headers: headers({ notBefore: delay > 0 ? now + delay : undefined }),
      });
    });
  }

  produce(
    topic: string,
    value: Buffer,
    options: { key?: string | null; partition?: number | null; headers?: Headers },
  ): Promise<{ partition: number; offset: number }> {
    if (this.closed) return Promise.reject(new ParleyError('UNAVAILABLE', 'broker is closed'));
    return new Promise((resolve, reject) => {
      const opaque = ++this.deliverySeq;
      this.deliveries.set(opaque, { resolve, reject });
      try {
        this.producer.produce(
          topic,
          options.partition ?? null,
          value,
          options.key ?? null,
          Date.now(),
          opaque,
          options.headers ?? [],
        );
      } catch (error) {
        this.deliveries.delete(opaque);
        reject(kafkaError(error, `publish to ${topic}`));
      }
    });
  }

  /** Makes sure the topic exists; resolves with its partition count. */
  ensureTopic(topic: string): Promise<number> {
    let known = this.topics.get(topic);
    if (known === undefined) {
      known = this.createTopic(topic);
      known.then(
        () => this.ready.add(topic),
        () => this.topics.delete(topic),
      );
      this.topics.set(topic, known);
    }
    return known;
  }

  private async createTopic(topic: string): Promise<number> {
    const admin = this.admin;
    if (admin !== undefined) {
      await new Promise<void>((resolve, reject) =>
        admin.createTopic(
          {
            topic,
            num_partitions: this.options.partitions ?? 6,
            replication_factor: this.options.replicationFactor ?? -1,
          },
          10_000,
          (err) => (err && err.code !== 36 ? reject(kafkaError(err, `create topic ${topic}`)) : resolve()),
        ),
      );
    }
    // Metadata propagates after creation (and auto-creation happens on this request): ask until
    // the topic has partitions.
    for (let tries = 0; ; tries++) {
      const md = await call<Metadata>(`metadata of ${topic}`, (cb) =>
        this.producer.getMetadata({ topic, timeout: 10_000 }, cb),
      );
      const count = md.topics.find((t) => t.name === topic)?.partitions.length ?? 0;
      if (count > 0) return count;
      if (tries >= 50) throw new ParleyError('UNAVAILABLE', `kafka: topic ${topic} has no partitions`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  consumerConfig(group: string): Config {
    return {
      'bootstrap.servers': this.bootstrap,
      'group.id': `${this.namespace}.${group}`,
      'enable.auto.commit': false,
      'enable.auto.offset.store': false,
      'auto.offset.reset': 'earliest',
      'partition.assignment.strategy': 'cooperative-sticky',
      'session.timeout.ms': 10_000,
      'heartbeat.interval.ms': 1_000,
      'fetch.wait.max.ms': 100,
      ...this.options.config,
      ...this.options.consumerConfig,
    };
  }

  /** A consumer for partitions assigned by hand (it never joins its group nor commits). */
  async reader(): Promise<DriverConsumer> {
    const reader = new this.driver.KafkaConsumer({
      ...this.consumerConfig(`_reader.${randomUUID()}`),
      'enable.partition.eof': false,
    });
    reader.on('event.error', () => undefined);
    await connect(reader, 'connect reader');
    reader.setDefaultConsumeTimeout(this.pollMs * 4);
    return reader;
  }

  watermarks(topic: string, partition: number): Promise<{ lowOffset: number; highOffset: number }> {
    return call(`watermarks of ${topic}`, (cb) =>
      this.producer.queryWatermarkOffsets(topic, partition, 10_000, cb),
    );
  }

  isClosed(): boolean {
    return this.closed;
  }

  letterBodyRoom(): number {
    return letterBodyRoom(this.maxRecordBytes);
  }

  deadLetter(record: DeadRecord): Promise<number> {
    return this.deadLetters.write(fittingLetter(record, this.maxRecordBytes, this.letterBodyRoom()));
  }

  async subscribe(spec: ConsumerSpec, handler: ConsumerHandler): Promise<Consumer> {
    if (this.closing !== undefined) throw new ParleyError('UNAVAILABLE', 'broker is closed');
    checkSpec(spec);
    const consumer = new KafkaGroupConsumer(this, spec, handler);
    this.consumers.add(consumer);
    try {
      await consumer.start();
    } catch (error) {
      this.consumers.delete(consumer);
      await consumer.close().catch(() => undefined);
      throw kafkaError(error, `subscribe ${spec.group} to ${spec.topic}`);
    }
    return {
      close: async () => {
        await consumer.close();
        this.consumers.delete(consumer);
      },
    };
  }

  /**
   * Closes the consumers, the stores and the producer. Idempotent: a second call (even while the
   * first runs) gets the first's promise; from the first call on, `subscribe` is refused. Until
   * 2026-12-03 two closes at once never ended (the second disconnected the producer again), and a
   * `subscribe` during a close started a consumer no one closed, which kept the process alive.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    await Promise.all([...this.consumers].map((c) => c.close()));
    this.consumers.clear();
    await this.deadLetters.close();
    await this.history.close();
    await new Promise<void>((resolve) => this.producer.flush(5_000, () => resolve()));
    this.closed = true;
    for (const d of this.deliveries.values()) d.reject(new ParleyError('UNAVAILABLE', 'broker is closed'));
    this.deliveries.clear();
    this.admin?.disconnect();
    await disconnect(this.producer);
  }
}
