/**
 * What the Kafka tests on librdkafka's mock cluster share: a broker set up for the mock, and a
 * record written as another producer would write it.
 */
import { createKafkaBroker } from '../src/adapters/kafka/kafka-broker.ts';
import type { Broker } from '../src/index.ts';

/**
 * A broker on the mock cluster at `brokers` under `namespace` (one per case). Quick heartbeats and
 * fetches against the in-process cluster; the session cannot be shorter: the mock holds a new
 * group's first JoinGroup for 3 s.
 */
export function mockKafkaBroker(brokers: string, namespace: string) {
  return createKafkaBroker({
    brokers: brokers.split(','),
    namespace,
    createTopics: 'metadata',
    pollMs: 20,
    consumerConfig: { 'session.timeout.ms': 6_000, 'heartbeat.interval.ms': 100, 'fetch.wait.max.ms': 10 },
  });
}

/** Writes a record as another producer would: the value (and what `options` adds), nothing of Parley's. */
export async function writeRecord(
  broker: Broker,
  topic: string,
  body: Buffer,
  options: object = {},
): Promise<void> {
  const b = broker as unknown as {
    kafkaTopic(topic: string): string;
    ensureTopic(name: string): Promise<number>;
    produce(name: string, value: Buffer, options: object): Promise<unknown>;
  };
  await b.ensureTopic(b.kafkaTopic(topic));
  await b.produce(b.kafkaTopic(topic), body, options);
}
