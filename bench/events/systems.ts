/**
 * Event systems under test: a publisher sends N messages of about 100 bytes; each of G consumer
 * groups must receive every one. The raw clients do what a durable consumer must (confirms, manual
 * acks), so they are the floor Parley's adapters are measured against.
 */

export interface Subscriber {
  /** Resolves when every group has received `expected` messages. */
  done: Promise<void>;
  received(): number;
  close(): Promise<void>;
}

export interface EventSystem {
  /**
   * `mosquitto`: the bench's own Mosquitto (`bench/lib/mosquitto.ts`), not the machine's;
   * `kafka-mock`: librdkafka's mock cluster, which the bench starts (`bench/lib/kafka-mock.ts`).
   */
  needs: 'nats' | 'redis' | 'rabbitmq' | 'mosquitto' | 'kafka-mock' | 'none';
  /**
   * Messages per run when not 100,000: the ephemeral rows run at half a million a second, so
   * 100,000 would be a fifth of a second, mostly start-up and JIT warm-up.
   */
  messages?: number;
  /** Sets up G groups on `topic` and starts consuming. */
  subscribe(topic: string, groups: number, expected: number): Promise<Subscriber>;
  /**
   * Sends `count` messages; calls `started` once it is connected and set up, right before the first
   * one, so that a rate measures the traffic and not a process's imports and connection set-up.
   */
  publish(topic: string, count: number, payload: Uint8Array, started: () => void): Promise<void>;
  /** Removes what `subscribe` created on the broker. */
  cleanup(topic: string, groups: number): Promise<void>;
}

import { rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connected } from '../lib/kafka-mock.ts';

const NATS = { servers: '127.0.0.1:4222' };
const AMQP = 'amqp://guest:guest@127.0.0.1:5672';
const REDIS = { host: '127.0.0.1', port: 6379 };
/**
 * Where a server the bench starts for itself listens (its own Mosquitto, the Kafka mock cluster):
 * `run.ts` names it in the environment of its children.
 */
function ownServer(variable: 'PARLEY_BENCH_MOSQUITTO' | 'PARLEY_BENCH_KAFKA'): string {
  const value = process.env[variable];
  if (value === undefined) throw new Error(`${variable} is not set (run.ts starts that server)`);
  return value;
}
const mosquittoUrl = () => ownServer('PARLEY_BENCH_MOSQUITTO');
const kafkaMockBrokers = () => ownServer('PARLEY_BENCH_KAFKA');

/** Calls `send` `count` times with at most `window` calls awaiting their result at once. */
async function windowed(count: number, window: number, send: () => Promise<unknown>): Promise<void> {
  let inflight: Promise<unknown>[] = [];
  for (let i = 0; i < count; i++) {
    inflight.push(send());
    if (inflight.length === window) {
      await Promise.all(inflight);
      inflight = [];
    }
  }
  await Promise.all(inflight);
}

/** Counts deliveries per group and resolves when all groups have all messages. */
function counter(groups: number, expected: number) {
  const counts = new Array<number>(groups).fill(0);
  let complete = 0;
  let resolve: () => void = () => undefined;
  const done = new Promise<void>((r) => {
    resolve = r;
  });
  return {
    done,
    hit(group: number, n = 1) {
      const before = counts[group] as number;
      counts[group] = before + n;
      if (before < expected && before + n >= expected && ++complete === groups) resolve();
    },
    total: () => counts.reduce((a, b) => a + b, 0),
  };
}

/**
 * Raw NATS pub/sub: `json: false` publishes one pre-made buffer and counts deliveries without
 * reading them (opaque bytes, the floor); `json: true` does what an application does with a JSON
 * event, serialising the object per publish and parsing each delivery (`msg.json()`, nats.js's own
 * way), to show how much of the distance to opaque bytes is the JSON itself.
 */
function rawNatsSystem(json: boolean): EventSystem {
  return {
    needs: 'nats',
    messages: 500_000,
    async subscribe(topic, groups, expected) {
      const { connect } = await import('nats');
      const nc = await connect(NATS);
      const c = counter(groups, expected);
      for (let g = 0; g < groups; g++) {
        nc.subscribe(topic, {
          queue: `g${g}`,
          callback: (_error, m) => {
            if (json) m.json();
            c.hit(g);
          },
        });
      }
      await nc.flush();
      return { done: c.done, received: c.total, close: () => nc.drain() };
    },
    async publish(topic, count, payload, started) {
      const { connect } = await import('nats');
      const nc = await connect(NATS);
      const data = payloadData(payload);
      started();
      for (let i = 0; i < count; i++) {
        nc.publish(topic, json ? JSON.stringify(data) : payload);
        // Let the socket drain now and then so the client never holds the whole run in memory.
        if (i % 1000 === 999) await nc.flush();
      }
      await nc.flush();
      await nc.drain();
    },
    async cleanup() {},
  };
}

const jetstream: EventSystem = {
  needs: 'nats',
  async subscribe(topic, groups, expected) {
    const { connect, AckPolicy } = await import('nats');
    const nc = await connect(NATS);
    const jsm = await nc.jetstreamManager();
    const stream = streamName(topic);
    await jsm.streams.add({ name: stream, subjects: [topic] });
    const js = nc.jetstream();
    const c = counter(groups, expected);
    const loops: Promise<void>[] = [];
    const stops: (() => void)[] = [];
    for (let g = 0; g < groups; g++) {
      await jsm.consumers.add(stream, { durable_name: `g${g}`, ack_policy: AckPolicy.Explicit });
      const consumer = await js.consumers.get(stream, `g${g}`);
      const messages = await consumer.consume({ max_messages: 1000 });
      stops.push(() => void messages.stop());
      loops.push(
        (async () => {
          for await (const m of messages) {
            m.ack();
            c.hit(g);
          }
        })(),
      );
    }
    return {
      done: c.done,
      received: c.total,
      close: async () => {
        for (const s of stops) s();
        await nc.drain();
      },
    };
  },
  async publish(topic, count, payload, started) {
    const { connect } = await import('nats');
    const nc = await connect(NATS);
    const js = nc.jetstream();
    // Up to 256 publishes awaiting their ack at once.
    started();
    await windowed(count, 256, () => js.publish(topic, payload));
    await nc.drain();
  },
  async cleanup(topic) {
    const { connect } = await import('nats');
    const nc = await connect(NATS);
    const jsm = await nc.jetstreamManager();
    await jsm.streams.delete(streamName(topic)).catch(() => undefined);
    await nc.drain();
  },
};

function streamName(topic: string): string {
  return topic.replace(/[^A-Za-z0-9_-]/g, '_');
}

/**
 * amqplib: durable queues, persistent messages, publisher confirms, manual acks, prefetch. `classic`
 * is the long-standing row (a fanout exchange, classic queues); `quorum` does what Parley's RabbitMQ
 * broker does by default (a topic exchange, the topic as routing key, quorum queues);
 * `envelopeSized` publishes bodies as long as Parley's envelope of the same payload.
 */
function amqpRaw(queueType: 'classic' | 'quorum', envelopeSized = false): EventSystem {
  const quorum = queueType === 'quorum';
  const routingKey = quorum ? 'bench.tick' : '';
  return {
    needs: 'rabbitmq',
    async subscribe(topic, groups, expected) {
      const amqplib = await import('amqplib');
      const conn = await amqplib.connect(AMQP);
      const ch = await conn.createChannel();
      await ch.prefetch(500);
      await ch.assertExchange(topic, quorum ? 'topic' : 'fanout', { durable: true });
      const c = counter(groups, expected);
      for (let g = 0; g < groups; g++) {
        const q = `${topic}.g${g}`;
        await ch.assertQueue(q, {
          durable: true,
          ...(quorum ? { arguments: { 'x-queue-type': 'quorum' } } : {}),
        });
        await ch.bindQueue(q, topic, routingKey);
        await ch.consume(q, (m) => {
          if (m === null) return;
          ch.ack(m);
          c.hit(g);
        });
      }
      return { done: c.done, received: c.total, close: () => conn.close() };
    },
    async publish(topic, count, payload, started) {
      const amqplib = await import('amqplib');
      const conn = await amqplib.connect(AMQP);
      const ch = await conn.createConfirmChannel();
      const body = envelopeSized ? await asLongAsEnvelope(payload) : Buffer.from(payload);
      started();
      for (let i = 0; i < count; i++) {
        const ok = ch.publish(topic, routingKey, body, { persistent: true });
        if (!ok) await new Promise((r) => ch.once('drain', r));
        if (i % 1000 === 999) await ch.waitForConfirms();
      }
      await ch.waitForConfirms();
      await conn.close();
    },
    async cleanup(topic, groups) {
      const amqplib = await import('amqplib');
      const conn = await amqplib.connect(AMQP);
      const ch = await conn.createChannel();
      for (let g = 0; g < groups; g++) await ch.deleteQueue(`${topic}.g${g}`);
      await ch.deleteExchange(topic);
      await conn.close();
    },
  };
}

/**
 * ioredis Streams: XADD pipelined, a consumer group per group, XREADGROUP batches, XACK. `json:
 * false` adds one pre-made buffer and counts entries without reading them (the floor); `json:
 * true` serialises the object per publish and parses each entry's body per group, as an
 * application does with a JSON event (as `raw nats json` does for NATS).
 */
const redisStreams = (json: boolean): EventSystem => ({
  needs: 'redis',
  async subscribe(topic, groups, expected) {
    const { Redis } = await import('ioredis');
    const admin = new Redis(REDIS);
    const c = counter(groups, expected);
    const clients: InstanceType<typeof Redis>[] = [admin];
    let stopped = false;
    for (let g = 0; g < groups; g++) {
      await admin.xgroup('CREATE', topic, `g${g}`, '$', 'MKSTREAM');
      const r = new Redis(REDIS);
      clients.push(r);
      void (async () => {
        while (!stopped) {
          const res = (await r.xreadgroup(
            'GROUP',
            `g${g}`,
            'c1',
            'COUNT',
            500,
            'BLOCK',
            100,
            'STREAMS',
            topic,
            '>',
          )) as [string, [string, string[]][]][] | null;
          const entries = res?.[0]?.[1] ?? [];
          if (entries.length === 0) continue;
          if (json) for (const [, fields] of entries) JSON.parse(fields[1] ?? '');
          await r.xack(topic, `g${g}`, ...entries.map((e) => e[0]));
          c.hit(g, entries.length);
        }
      })().catch(() => undefined);
    }
    return {
      done: c.done,
      received: c.total,
      close: async () => {
        stopped = true;
        await sleep(150);
        for (const r of clients) r.disconnect();
      },
    };
  },
  async publish(topic, count, payload, started) {
    const { Redis } = await import('ioredis');
    const r = new Redis(REDIS);
    const body = Buffer.from(payload);
    const data = payloadData(payload);
    await r.ping();
    started();
    for (let i = 0; i < count; i += 500) {
      const p = r.pipeline();
      for (let j = i; j < Math.min(count, i + 500); j++)
        p.xadd(topic, '*', 'd', json ? JSON.stringify(data) : body);
      await p.exec();
    }
    r.disconnect();
  },
  async cleanup(topic) {
    const { Redis } = await import('ioredis');
    const r = new Redis(REDIS);
    await r.del(topic);
    r.disconnect();
  },
});

/**
 * mqtt.js at QoS 1, used as Parley's MQTT broker uses the server: each group a shared subscription
 * (`$share/g<n>/<topic>`) held by a persistent session on a connection of its own, with a Receive
 * Maximum of 500 (the other rows' prefetch); mqtt.js sends each PUBACK after the message handler.
 * Publishes await their PUBACK, 1,000 at a time. The sessions are named after the topic, so that
 * `cleanup` can end them.
 */
const mqttSession = (topic: string, group: number) => `${topic}-g${group}`;

const mqttRaw: EventSystem = {
  needs: 'mosquitto',
  async subscribe(topic, groups, expected) {
    const { connectAsync } = await import('mqtt');
    const c = counter(groups, expected);
    const clients: Awaited<ReturnType<typeof connectAsync>>[] = [];
    for (let g = 0; g < groups; g++) {
      const client = await connectAsync(mosquittoUrl(), {
        protocolVersion: 5,
        clientId: mqttSession(topic, g),
        clean: false,
        properties: { sessionExpiryInterval: 600, receiveMaximum: 500 },
      });
      client.on('message', () => c.hit(g));
      await client.subscribeAsync(`$share/g${g}/${topic}`, { qos: 1 });
      clients.push(client);
    }
    return {
      done: c.done,
      received: c.total,
      close: async () => {
        for (const client of clients) await client.endAsync();
      },
    };
  },
  async publish(topic, count, payload, started) {
    const { connectAsync } = await import('mqtt');
    const client = await connectAsync(mosquittoUrl(), { protocolVersion: 5 });
    const body = Buffer.from(payload);
    started();
    await windowed(count, 1000, () => client.publishAsync(topic, body, { qos: 1 }));
    await client.endAsync();
  },
  async cleanup(topic, groups) {
    const { connectAsync } = await import('mqtt');
    for (let g = 0; g < groups; g++) {
      // A clean start discards the stored session; expiry 0 keeps none after this connection.
      const client = await connectAsync(mosquittoUrl(), {
        protocolVersion: 5,
        clientId: mqttSession(topic, g),
        clean: true,
        properties: { sessionExpiryInterval: 0 },
      });
      await client.endAsync();
    }
  },
};

type Metadata = (
  options: { topic: string; timeout: number },
  cb: (err: unknown, md: { topics: { name: string; partitions: unknown[] }[] }) => void,
) => void;

/** The slice of `@confluentinc/kafka-javascript` (node-rdkafka style) the raw Kafka row uses. */
interface RdKafka {
  Producer: new (
    config: Record<string, unknown>,
  ) => {
    connect(options: object, cb: (err: unknown) => void): void;
    disconnect(cb: () => void): void;
    setPollInterval(ms: number): void;
    getMetadata: Metadata;
    on(event: 'delivery-report', listener: (err: unknown, report: { opaque: unknown }) => void): void;
    on(event: 'event.error', listener: () => void): void;
    produce(
      topic: string,
      partition: null,
      value: Buffer,
      key: null,
      timestamp: number,
      opaque: unknown,
    ): void;
  };
  KafkaConsumer: new (
    config: Record<string, unknown>,
    topicConfig: object,
  ) => {
    connect(options: object, cb: (err: unknown) => void): void;
    disconnect(cb: () => void): void;
    subscribe(topics: string[]): void;
    assignments(): unknown[];
    setDefaultConsumeTimeout(ms: number): void;
    consume(
      count: number,
      cb: (err: unknown, messages: { topic: string; partition: number; offset: number }[]) => void,
    ): void;
    commit(offsets: { topic: string; partition: number; offset: number }[]): void;
    on(event: 'event.error', listener: () => void): void;
  };
}

async function rdkafka(): Promise<RdKafka> {
  return ((await import('@confluentinc/kafka-javascript')) as unknown as { default: RdKafka }).default;
}

/**
 * The Kafka client Parley's Kafka broker uses (librdkafka), used the same way against the same
 * mock cluster: an idempotent producer (`acks=all`, `linger.ms` 2, delivery reports), each publish
 * awaiting its report, 1,000 at a time; one consumer group per group, manual commits of what was
 * handled, at most every 20 ms (as Parley's), `consume(100)` with a 25 ms wait, `fetch.wait.max.ms`
 * 100. The topic is created by asking for its metadata (the mock has no CreateTopics).
 */
const kafkaRaw: EventSystem = {
  needs: 'kafka-mock',
  async subscribe(topic, groups, expected) {
    const kafka = await rdkafka();
    const c = counter(groups, expected);
    const consumers: InstanceType<RdKafka['KafkaConsumer']>[] = [];
    let closed = false;
    const loops: Promise<void>[] = [];
    // A consumer's metadata request creates no topic (librdkafka's `allow.auto.create.topics` is
    // off for consumers): a producer's does.
    const creator = new kafka.Producer({ 'bootstrap.servers': kafkaMockBrokers() });
    await connected(creator);
    await kafkaTopic(creator, topic).finally(
      () => new Promise<void>((resolve) => creator.disconnect(() => resolve())),
    );
    for (let g = 0; g < groups; g++) {
      const consumer = new kafka.KafkaConsumer(
        {
          'bootstrap.servers': kafkaMockBrokers(),
          'group.id': `${topic}.g${g}`,
          'enable.auto.commit': false,
          'enable.auto.offset.store': false,
          'auto.offset.reset': 'earliest',
          'fetch.wait.max.ms': 100,
        },
        {},
      );
      consumer.on('event.error', () => undefined);
      await connected(consumer);
      consumer.setDefaultConsumeTimeout(25);
      consumers.push(consumer);
      consumer.subscribe([topic]);
      const next = new Map<number, number>();
      let commit: NodeJS.Timeout | undefined;
      loops.push(
        (async () => {
          while (!closed) {
            const batch = await new Promise<{ topic: string; partition: number; offset: number }[]>(
              (resolve) => consumer.consume(100, (err, messages) => resolve(err ? [] : messages)),
            );
            for (const m of batch) {
              next.set(m.partition, m.offset + 1);
              c.hit(g);
            }
            if (batch.length > 0 && commit === undefined) {
              commit = setTimeout(() => {
                commit = undefined;
                if (!closed)
                  consumer.commit([...next].map(([partition, offset]) => ({ topic, partition, offset })));
              }, 20);
            }
          }
        })(),
      );
    }
    // Ready once every group owns its partitions (the mock holds a new group's first join ~3 s).
    while (consumers.some((consumer) => consumer.assignments().length === 0)) await sleep(20);
    return {
      done: c.done,
      received: c.total,
      close: async () => {
        closed = true;
        await Promise.all(loops);
        for (const consumer of consumers)
          await new Promise<void>((resolve) => consumer.disconnect(() => resolve()));
      },
    };
  },
  async publish(topic, count, payload, started) {
    const kafka = await rdkafka();
    const producer = new kafka.Producer({
      'bootstrap.servers': kafkaMockBrokers(),
      'enable.idempotence': true,
      acks: 'all',
      dr_cb: true,
      'linger.ms': 2,
    });
    producer.on('event.error', () => undefined);
    const waiting = new Map<number, { resolve(): void; reject(err: unknown): void }>();
    producer.on('delivery-report', (err, report) => {
      const w = waiting.get(report.opaque as number);
      waiting.delete(report.opaque as number);
      if (err) w?.reject(err);
      else w?.resolve();
    });
    await connected(producer);
    producer.setPollInterval(5);
    await kafkaTopic(producer, topic);
    const body = Buffer.from(payload);
    let seq = 0;
    started();
    await windowed(
      count,
      1000,
      () =>
        new Promise<void>((resolve, reject) => {
          const id = ++seq;
          waiting.set(id, { resolve, reject });
          producer.produce(topic, null, body, null, Date.now(), id);
        }),
    );
    await new Promise<void>((resolve) => producer.disconnect(() => resolve()));
  },
  async cleanup() {
    // Topics live in the mock cluster, which ends with the run.
  },
};

/** Asks for `topic`'s metadata until it has partitions (the mock creates it on the first ask). */
async function kafkaTopic(client: { getMetadata: Metadata }, topic: string): Promise<void> {
  for (let tries = 0; tries < 100; tries++) {
    const md = await new Promise<{ topics: { name: string; partitions: unknown[] }[] }>((resolve, reject) =>
      client.getMetadata({ topic, timeout: 10_000 }, (err, m) => (err ? reject(err) : resolve(m))),
    );
    if ((md.topics.find((t) => t.name === topic)?.partitions.length ?? 0) > 0) return;
    await sleep(50);
  }
  throw new Error(`kafka mock: topic ${topic} has no partitions`);
}

/** Moleculer 0.14 events over NATS: one service per group, balanced events. */
const moleculerNats: EventSystem = {
  needs: 'nats',
  async subscribe(topic, groups, expected) {
    const { ServiceBroker } = await import('moleculer');
    const broker = new ServiceBroker({
      nodeID: `sub-${process.pid}`,
      transporter: 'nats://127.0.0.1:4222',
      logger: false,
    });
    const c = counter(groups, expected);
    for (let g = 0; g < groups; g++) {
      broker.createService({ name: `g${g}`, events: { [topic]: () => c.hit(g) } });
    }
    await broker.start();
    return { done: c.done, received: c.total, close: () => broker.stop() };
  },
  async publish(topic, count, payload, started) {
    const { ServiceBroker } = await import('moleculer');
    const broker = new ServiceBroker({
      nodeID: `pub-${process.pid}`,
      transporter: 'nats://127.0.0.1:4222',
      logger: false,
    });
    await broker.start();
    await broker.waitForServices(['g0'], 10_000);
    const data = { note: Buffer.from(payload).toString('utf8') };
    // emit is fire-and-forget in Moleculer; wait for the transporter now and then so the client
    // never buffers the whole run.
    started();
    await windowed(count, 1000, () => broker.emit(topic, data));
    await broker.stop();
  },
  async cleanup() {},
};

/**
 * Parley's embedded broker: publisher and subscriber processes share one SQLite file in WAL mode.
 * `process` durability (`synchronous=NORMAL`, the default): a confirmed publish survives a process
 * crash, not a power loss. `power` (`synchronous=FULL`): each commit is fsynced.
 */
function embeddedPath(topic: string): string {
  return join(tmpdir(), `${topic}.db`);
}

function parleyEmbedded(durability: 'process' | 'power'): EventSystem {
  return {
    needs: 'none',
    async subscribe(topic, groups, expected) {
      const { createEmbeddedBroker } = await import('parley');
      const broker = createEmbeddedBroker({ path: embeddedPath(topic), durability, pollInterval: 5 });
      const c = counter(groups, expected);
      for (let g = 0; g < groups; g++) {
        await broker.subscribe(
          { topic, group: `g${g}`, maxInFlight: Number(process.env.MIF ?? 256) },
          async () => c.hit(g),
        );
      }
      return { done: c.done, received: c.total, close: () => broker.close() };
    },
    async publish(topic, count, payload, started) {
      const { createEmbeddedBroker, createEnvelope } = await import('parley');
      const broker = createEmbeddedBroker({ path: embeddedPath(topic), durability });
      const data = JSON.parse(Buffer.from(payload).toString('utf8')) as unknown;
      // Confirmed publishes, up to 1,000 awaiting their confirmation at once.
      started();
      await windowed(count, 1000, () =>
        broker.publish(createEnvelope({ source: '/bench', type: topic, data })),
      );
      await broker.close();
    },
    async cleanup(topic) {
      for (const suffix of ['', '-wal', '-shm']) rmSync(`${embeddedPath(topic)}${suffix}`, { force: true });
    },
  };
}

/** The event Parley's broker rows publish: `{seq, note}`, validated by the node like any event. */
async function parleyEvents() {
  const parley = await import('parley');
  const { z } = parley;
  const contract = parley.defineContract({
    name: 'bench',
    version: '1.0.0',
    actions: {},
    events: { 'bench.tick': { schema: z.object({ seq: z.number(), note: z.string() }), version: 1 } },
  });
  return { parley, contract };
}

type PayloadData = { seq: number; note: string };

function payloadData(payload: Uint8Array): PayloadData {
  return JSON.parse(Buffer.from(payload).toString('utf8')) as PayloadData;
}

/**
 * The payload padded to the length of the envelope Parley publishes it in (the CloudEvents
 * attributes: id, source, type, time, dataschema), so that a raw row can carry as many bytes per
 * message as Parley's row does: what is left between the two is Parley's own cost.
 */
async function asLongAsEnvelope(payload: Uint8Array): Promise<Buffer> {
  const { parley } = await parleyEvents();
  const data = payloadData(payload);
  const envelope = parley.createEnvelope({
    source: `/parley/${hostname()}-${process.pid}-${'0'.repeat(6)}`,
    type: 'bench.tick',
    dataschema: 'urn:parley:bench:bench.tick:v1',
    data,
  });
  const pad = Buffer.byteLength(JSON.stringify(envelope)) - payload.byteLength;
  return Buffer.from(JSON.stringify({ ...data, note: data.note + 'x'.repeat(pad) }));
}

/**
 * Parley on a real broker, from its URL (`?prefix=` the run's topic, so runs share nothing): the
 * publisher is a node that `publish`es durable events, each awaiting the broker's confirmation
 * with at most `window` in flight (the raw row's window); the subscriber is a node whose service
 * has one durable subscription per group, holding at most `maxInFlight` deliveries (the raw row's
 * prefetch). `cleanup` removes what the adapter made, with the raw client.
 */
function parleyBroker(
  needs: EventSystem['needs'],
  /** The broker's URL for a run on `topic` (read when first used: the bench's own servers are started later). */
  url: (topic: string) => string,
  window: number,
  maxInFlight: number,
  cleanup: (prefix: string, groups: number) => Promise<void>,
  /** What the subscriber removes itself once it is done (MQTT: its sessions, which only it can name). */
  destroy?: (broker: { destroyAll?: () => Promise<void> }) => Promise<void>,
): EventSystem {
  return {
    needs,
    async subscribe(topic, groups, expected) {
      const { parley, contract } = await parleyEvents();
      const broker = await new parley.BrokerRegistry().open(url(topic));
      const c = counter(groups, expected);
      const on = Array.from({ length: groups }, (_, g) =>
        parley.subscribe(contract, 'bench.tick', () => c.hit(g), { group: `g${g}`, maxInFlight }),
      );
      const node = parley.createNode({
        logLevel: 'silent',
        broker,
        services: [parley.implement(contract, { actions: {}, on })],
      });
      await node.start();
      const close = async () => {
        await node.stop();
        await destroy?.(broker as { destroyAll?: () => Promise<void> });
      };
      return { done: c.done, received: c.total, close };
    },
    async publish(topic, count, payload, started) {
      const { parley, contract } = await parleyEvents();
      const broker = await new parley.BrokerRegistry().open(url(topic));
      const node = parley.createNode({ logLevel: 'silent', broker });
      await node.start();
      const data = payloadData(payload);
      started();
      await windowed(count, window, () => node.publish(contract, 'bench.tick', data));
      await node.stop();
    },
    cleanup: (topic, groups) => cleanup(topic, groups),
  };
}

/** Parley's ephemeral `notify` over its NATS transport: every live subscription gets each one. */
const parleyNatsNotify: EventSystem = {
  needs: 'nats',
  messages: 500_000,
  async subscribe(topic, groups, expected) {
    const { parley, contract } = await parleyEvents();
    const c = counter(groups, expected);
    const on = Array.from({ length: groups }, (_, g) =>
      parley.subscribe(contract, 'bench.tick', () => c.hit(g), { ephemeral: true }),
    );
    const node = parley.createNode({
      logLevel: 'silent',
      transport: new parley.TransportRegistry().open(`nats://${NATS.servers}?prefix=${topic}`),
      services: [parley.implement(contract, { actions: {}, on })],
    });
    await node.start();
    return { done: c.done, received: c.total, close: () => node.stop() };
  },
  async publish(topic, count, payload, started) {
    const { parley, contract } = await parleyEvents();
    const node = parley.createNode({
      logLevel: 'silent',
      transport: new parley.TransportRegistry().open(`nats://${NATS.servers}?prefix=${topic}`),
    });
    await node.start();
    const data = payloadData(payload);
    started();
    for (let i = 0; i < count; i++) {
      await node.notify(contract, 'bench.tick', data);
      // As the raw row flushes: let the socket drain now and then.
      if (i % 1000 === 999) await new Promise((r) => setImmediate(r));
    }
    await node.stop();
  },
  async cleanup() {},
};

async function cleanupJetStream(prefix: string): Promise<void> {
  const { connect } = await import('nats');
  const nc = await connect(NATS);
  const jsm = await nc.jetstreamManager();
  const names: string[] = [];
  for await (const info of jsm.streams.list()) {
    if (info.config.name.startsWith(`${prefix.toUpperCase()}_`)) names.push(info.config.name);
  }
  for (const name of names) await jsm.streams.delete(name).catch(() => undefined);
  await nc.drain();
}

async function cleanupRedis(prefix: string): Promise<void> {
  const { Redis } = await import('ioredis');
  const r = new Redis(REDIS);
  let cursor = '0';
  do {
    const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await r.unlink(...keys);
  } while (cursor !== '0');
  r.disconnect();
}

async function cleanupRabbit(prefix: string, groups: number): Promise<void> {
  const amqplib = await import('amqplib');
  const conn = await amqplib.connect(AMQP);
  const ch = await conn.createChannel();
  for (let g = 0; g < groups; g++) await ch.deleteQueue(`${prefix}.bench.tick.g${g}`);
  await ch.deleteExchange(`${prefix}.topics`);
  await conn.close();
}

export const eventSystems: Record<string, EventSystem> = {
  'parley embedded': parleyEmbedded('process'),
  'parley embedded, fsync': parleyEmbedded('power'),
  'parley nats notify': parleyNatsNotify,
  'parley nats jetstream': parleyBroker(
    'nats',
    (topic) => `nats://${NATS.servers}?prefix=${topic}`,
    256,
    1000,
    cleanupJetStream,
  ),
  'parley redis streams': parleyBroker(
    'redis',
    (topic) => `redis://${REDIS.host}:${REDIS.port}?prefix=${topic}`,
    500,
    500,
    cleanupRedis,
  ),
  'parley rabbitmq': parleyBroker('rabbitmq', (topic) => `${AMQP}?prefix=${topic}`, 1000, 500, cleanupRabbit),
  'parley mqtt': parleyBroker(
    'mosquitto',
    (topic) => `${mosquittoUrl()}?prefix=${topic}`,
    1000,
    500,
    async () => undefined,
    async (broker) => broker.destroyAll?.(),
  ),
  // Topics live in the mock cluster, which ends with the run: nothing to clean up.
  'parley kafka (mock cluster)': parleyBroker(
    'kafka-mock',
    (topic) => `kafka://${kafkaMockBrokers()}?namespace=${topic}&createTopics=metadata`,
    1000,
    500,
    async () => undefined,
  ),
  'raw nats': rawNatsSystem(false),
  'raw nats json': rawNatsSystem(true),
  'raw jetstream': jetstream,
  'raw amqplib': amqpRaw('classic'),
  'raw amqplib quorum': amqpRaw('quorum'),
  'raw amqplib quorum, envelope-sized': amqpRaw('quorum', true),
  'raw ioredis streams': redisStreams(false),
  'raw ioredis streams json': redisStreams(true),
  'raw mqtt': mqttRaw,
  'raw kafka (mock cluster)': kafkaRaw,
  'moleculer nats': moleculerNats,
};
