/**
 * The Redis pub/sub transport passes the transport conformance suite against the machine's Redis
 * server. Every run has its own channel prefix.
 */
import { createRedisTransport } from '../src/adapters/redis/redis-transport.ts';
import { BROKERS, busConformance, needBroker } from './brokers.ts';

const skip = await needBroker('redis');
const prefix = `parley-test-${process.pid}`;

busConformance(
  'redis',
  skip,
  (options) => createRedisTransport({ url: BROKERS.redis.url, ...options }),
  prefix,
);
