/**
 * @module adapters/kafka/driver
 * The slice of `@confluentinc/kafka-javascript` (librdkafka bindings, node-rdkafka style API) the
 * Kafka broker uses, typed structurally so that this package's types never name the optional
 * driver, and loaded with `import()` only when a Kafka broker is opened.
 */
import { ParleyError } from '../../errors.ts';
import { kafkaError } from './errors.ts';

export const DRIVER_PACKAGE = '@confluentinc/kafka-javascript';

export interface DriverError {
  message: string;
  code: number;
  isRetriable?: boolean;
  isFatal?: boolean;
}
type Callback<T> = (err: DriverError | null | undefined, value: T) => void;
export type Config = Record<string, string | number | boolean | ((...args: never[]) => void)>;
export interface TopicPartition {
  topic: string;
  partition: number;
}
export interface TopicPartitionOffset extends TopicPartition {
  offset: number;
}
export interface Metadata {
  brokers: { id: number; host: string; port: number }[];
  topics: { name: string; partitions: { id: number }[] }[];
}
export type Headers = Record<string, string | Buffer>[];
export interface Message extends TopicPartitionOffset {
  value: Buffer | null;
  /** The record's timestamp, epoch ms (the producer's, unless the topic stamps append time). */
  timestamp?: number;
  key?: Buffer | string | null;
  headers?: Headers;
}

interface Client {
  connect(options: Record<string, unknown>, cb: Callback<unknown>): void;
  disconnect(cb: Callback<unknown>): void;
  getMetadata(options: { topic?: string; timeout?: number }, cb: Callback<Metadata>): void;
  queryWatermarkOffsets(
    topic: string,
    partition: number,
    timeout: number,
    cb: Callback<{ lowOffset: number; highOffset: number }>,
  ): void;
  on(event: string, listener: (...args: never[]) => void): void;
}

export interface Producer extends Client {
  produce(
    topic: string,
    partition: number | null,
    value: Buffer,
    key: string | null,
    timestamp: number,
    opaque: unknown,
    headers: Headers,
  ): void;
  setPollInterval(ms: number): void;
  flush(timeout: number, cb: Callback<unknown>): void;
}

export interface Consumer extends Client {
  subscribe(topics: string[]): void;
  unsubscribe(): void;
  assign(assignments: TopicPartitionOffset[]): void;
  unassign(): void;
  /** The offset after the last message handed out per partition (past control records). */
  position(partitions: TopicPartition[]): Partial<TopicPartitionOffset>[];
  incrementalAssign(assignments: TopicPartition[]): void;
  incrementalUnassign(assignments: TopicPartition[]): void;
  assignments(): TopicPartition[];
  consume(count: number, cb: Callback<Message[]>): void;
  setDefaultConsumeTimeout(ms: number): void;
  /** true: `consume(n)` waits only for the first message, then takes what is already fetched. */
  setDefaultIsTimeoutOnlyForFirstMessage?(only: boolean): void;
  commitSync(offsets: TopicPartitionOffset[]): void;
  commit(offsets: TopicPartitionOffset[]): void;
  committed(
    partitions: TopicPartition[],
    timeout: number,
    cb: Callback<Partial<TopicPartitionOffset>[]>,
  ): void;
  pause(partitions: TopicPartition[]): void;
  resume(partitions: TopicPartition[]): void;
}

export interface Admin {
  createTopic(
    topic: { topic: string; num_partitions: number; replication_factor: number },
    timeout: number,
    cb: (err: DriverError | null | undefined) => void,
  ): void;
  disconnect(): void;
}

export interface Driver {
  Producer: new (config: Config) => Producer;
  AdminClient: { createFrom(client: Producer): Admin };
  KafkaConsumer: new (config: Config, topicConfig?: Config) => Consumer;
  CODES: { ERRORS: Record<string, number> };
}

/** Loads the driver, or says how to install it. */
export async function loadDriver(): Promise<Driver> {
  let mod: { default?: unknown };
  try {
    mod = (await import(DRIVER_PACKAGE)) as { default?: unknown };
  } catch (error) {
    throw new ParleyError(
      'FAILED_PRECONDITION',
      `kafka:// needs the optional package ${DRIVER_PACKAGE}: npm install ${DRIVER_PACKAGE} ` +
        '(it builds librdkafka; set CKJS_LINKING=dynamic to link the system libssl, zlib, zstd, lz4 and sasl)',
      { cause: error, details: { package: DRIVER_PACKAGE } },
    );
  }
  const driver = (mod.default ?? mod) as Partial<Driver>;
  if (typeof driver.Producer !== 'function' || typeof driver.KafkaConsumer !== 'function')
    throw new ParleyError(
      'FAILED_PRECONDITION',
      `${DRIVER_PACKAGE} does not export Producer and KafkaConsumer`,
    );
  return driver as Driver;
}

/** A driver callback as a promise; failures become ParleyErrors. */
export function call<T>(what: string, fn: (cb: Callback<T>) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    fn((err, value) => (err ? reject(kafkaError(err, what)) : resolve(value)));
  });
}

export function connect(client: Producer | Consumer, what: string): Promise<unknown> {
  return call(what, (cb) => client.connect({ timeout: 10_000 }, cb));
}

export function disconnect(client: Producer | Consumer): Promise<void> {
  return new Promise<void>((resolve) => client.disconnect(() => resolve()));
}

/** Header value as text (the driver gives Buffers). */
export function header(headers: Headers | undefined, name: string): string | undefined {
  for (const h of headers ?? []) {
    const v = h[name];
    if (v !== undefined) return typeof v === 'string' ? v : v.toString('utf8');
  }
  return undefined;
}
