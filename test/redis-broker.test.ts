/**
 * The Redis Streams broker passes the broker conformance suite against the machine's Redis server
 * (real time: `advance` waits). Every broker of the run has its own key prefix; its keys are
 * deleted at the end.
 */
import assert from 'node:assert/strict';
import { after, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisBroker, type RedisBroker } from '../src/adapters/redis/redis-broker.ts';
import { createEnvelope, systemClock } from '../src/index.ts';
import { BROKERS, needBroker } from './brokers.ts';
import { brokerConformance } from './conformance/broker.ts';
import { letterRoomCase } from './letter-room.ts';
import { cleanupPrivateServers, needBinary, privateRedis } from './private-server.ts';

const skip = await needBroker('redis');
let n = 0;
const made: string[] = [];

if (skip === false) {
  brokerConformance({
    name: 'redis streams',
    clock: systemClock,
    create: async () => {
      const prefix = `ptest${process.pid}r${++n}`;
      made.push(prefix);
      return createRedisBroker({ url: BROKERS.redis.url, prefix, log: () => {} });
    },
    advance: (ms) => sleep(ms),
    inject: async (broker, topic, body) => {
      const b = broker as RedisBroker;
      await b.redis.xadd(b.streamOf(topic), '*', 'body', body);
    },
    injectLetter: async (broker, body) => {
      const b = broker as RedisBroker;
      const id = await b.redis.incr(b.key('dlq:seq'));
      await b.redis.hset(b.key('dlq'), String(id), body);
    },
  });

  it('a history reader behind entries the stream trimmed is told it has a gap; one ahead of it is not', async () => {
    const prefix = `ptest${process.pid}r${++n}`;
    made.push(prefix);
    const b = await createRedisBroker({ url: BROKERS.redis.url, prefix, maxLength: 1, log: () => {} });
    try {
      const topic = 'history.trim';
      const start = await b.history.latest(topic);
      for (let i = 0; i < 300; i++) await b.publish(createEnvelope({ source: '/t', type: topic, data: i }));
      // MAXLEN ~ trims whole radix-tree nodes (100 entries by default): the oldest are gone.
      const behind = await b.history.read(topic, start, { limit: 1000 });
      assert.equal(behind.gap, true);
      assert.ok(behind.entries.length < 300, `${behind.entries.length} kept`);
      const last = behind.entries.at(-1);
      assert.equal(last?.envelope.data, 299);
      const kept = behind.entries.at(-2)?.position ?? '';
      const ahead = await b.history.read(topic, kept);
      assert.equal(ahead.gap, false);
      assert.deepEqual(
        ahead.entries.map((e) => e.envelope.data),
        [299],
      );
    } finally {
      await b.close();
    }
  });
  it('a message over proto-max-bulk-len (read from the server) is refused alone; one within the room fails into a dead letter', {
    skip: needBinary('redis-server', '--version'),
  }, async () => {
    const limit = 1024 * 1024; // the least proto-max-bulk-len Redis allows
    const server = await privateRedis('redis-bulk', ['--proto-max-bulk-len', String(limit)]);
    await server.start();
    const b = await createRedisBroker({ url: `redis://127.0.0.1:${server.port}`, log: () => {} });
    try {
      // Before: Redis answered the turn's call with a protocol error and dropped the connection,
      // failing the small publish beside it too, both as INTERNAL (an outbox would retry for ever).
      const big = createEnvelope({ source: '/t', type: 'bulk.t', data: 'x'.repeat(limit) });
      const small = createEnvelope({ source: '/t', type: 'bulk.t', data: 'small' });
      const [bigResult, smallResult] = await Promise.allSettled([b.publish(big), b.publish(small)]);
      assert.equal(bigResult.status, 'rejected');
      assert.equal((bigResult as PromiseRejectedResult).reason.code, 'INVALID_ARGUMENT');
      assert.equal(smallResult.status, 'fulfilled');
      await letterRoomCase(b, 'room.t', limit, 'proto-max-bulk-len');
    } finally {
      await b.close();
      await server.dispose();
      cleanupPrivateServers();
    }
  });

  after(async () => {
    for (const prefix of made) {
      const b: RedisBroker = await createRedisBroker({ url: BROKERS.redis.url, prefix, log: () => {} });
      await b.destroyAll();
      await b.close();
    }
  });
} else {
  it('broker conformance: redis streams', { skip }, () => {});
}
