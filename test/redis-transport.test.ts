/**
 * The Redis pub/sub transport passes the transport conformance suite against the machine's Redis
 * server, and keeps its frames within a server's smaller `proto-max-bulk-len`. Every run has its
 * own channel prefix.
 */
import { describe, it } from 'node:test';
import { createRedisTransport } from '../src/adapters/redis/redis-transport.ts';
import { BROKERS, busConformance, needBroker, serverLimitCase } from './brokers.ts';
import { needBinary, privateRedis, privateServerScope } from './private-server.ts';

const skip = await needBroker('redis');
const prefix = `parley-test-${process.pid}`;

busConformance(
  'redis',
  skip,
  (options) => createRedisTransport({ url: BROKERS.redis.url, ...options }),
  prefix,
);

describe('redis transport: a server with a small proto-max-bulk-len', {
  skip: skip || needBinary('redis-server', '--version'),
}, () => {
  const { nodes, use } = privateServerScope();

  it('lowers a larger maxPayload to it: a call over it fails at once instead of costing the connection', async () => {
    const limit = 1024 * 1024; // the least Redis allows
    const server = use(await privateRedis('redis-transport-bulk', ['--proto-max-bulk-len', String(limit)]));
    await server.start();
    const url = `redis://127.0.0.1:${server.port}`;
    const configured = 2 * limit;
    await serverLimitCase(
      (log) => createRedisTransport({ url, prefix, maxPayload: configured, log }),
      limit,
      configured,
      nodes,
      400,
    );
  });
});
