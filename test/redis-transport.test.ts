/**
 * The Redis pub/sub transport passes the transport conformance suite against the machine's Redis
 * server. Every run has its own channel prefix.
 */
import type { BusTransport } from '../src/adapters/bus-transport.ts';
import { createRedisTransport } from '../src/adapters/redis/redis-transport.ts';
import { BROKERS, needBroker } from './brokers.ts';
import { transportConformance } from './conformance/transport.ts';

const skip = await needBroker('redis');
const prefix = `parley-test-${process.pid}`;

if (skip === false) {
  transportConformance({
    name: 'redis',
    create: ({ maxPayload }) =>
      createRedisTransport({
        url: BROKERS.redis.url,
        prefix,
        maxPayload,
        heartbeatMs: 100,
        heartbeatTimeoutMs: 600,
      }),
    crash: (transport) => (transport as BusTransport).destroy(),
  });
} else {
  const { it } = await import('node:test');
  it('transport conformance: redis', { skip }, () => {});
}
