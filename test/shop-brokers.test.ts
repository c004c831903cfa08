/**
 * The shop end to end, unchanged, on the brokers' own transports and brokers: only the two URLs
 * differ (see test/shop-scenario.ts). Each run has its own prefix on the server.
 */

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createAmqpTransport } from '../src/adapters/amqp/amqp-transport.ts';
import { connectNats } from '../src/adapters/nats/connect.ts';
import { tokenOf } from '../src/adapters/nats/nats-broker.ts';
import { createNatsTransport } from '../src/adapters/nats/nats-transport.ts';
import { connectRedis } from '../src/adapters/redis/connect.ts';
import { createRedisTransport } from '../src/adapters/redis/redis-transport.ts';
import { BROKERS, needBroker } from './brokers.ts';
import { shopScenario } from './shop-scenario.ts';

const natsSkip = await needBroker('nats');
if (natsSkip === false) {
  const prefix = `shop${process.pid}`;
  const url = `${BROKERS.nats.url}?prefix=${prefix}`;
  let jsm: Awaited<ReturnType<typeof import('@nats-io/jetstream')['jetstreamManager']>> | undefined;
  let probe: Awaited<ReturnType<typeof connectNats>>['nc'] | undefined;
  shopScenario({
    name: 'NATS + JetStream',
    pushLog: true,
    transport: url,
    broker: url,
    testTransport: () => createNatsTransport({ url: BROKERS.nats.url, prefix }),
    orders: 60,
    held: async () => {
      if (jsm === undefined) {
        probe = (await connectNats(BROKERS.nats.url, 'shop-test-probe')).nc;
        jsm = await (await import('@nats-io/jetstream')).jetstreamManager(probe);
      }
      const stream = `${prefix.toUpperCase()}_${tokenOf('inventory.reserved')}`;
      const info = await jsm.consumers.info(stream, tokenOf('payments')).catch(() => undefined);
      return info?.num_ack_pending ?? 0;
    },
    cleanup: async () => {
      if (jsm !== undefined) {
        for await (const info of jsm.streams.list()) {
          if (info.config.name.startsWith(`${prefix.toUpperCase()}_`))
            await jsm.streams.delete(info.config.name);
        }
      }
      await probe?.close();
    },
  });
} else {
  const { it } = await import('node:test');
  it('the shop on NATS', { skip: natsSkip }, () => {});
}

const redisSkip = await needBroker('redis');
if (redisSkip === false) {
  const prefix = `shop${process.pid}`;
  const url = `${BROKERS.redis.url}?prefix=${prefix}`;
  let redis: Awaited<ReturnType<typeof connectRedis>>['redis'] | undefined;
  shopScenario({
    name: 'Redis Streams',
    pushLog: true,
    transport: url,
    broker: url,
    testTransport: () => createRedisTransport({ url: BROKERS.redis.url, prefix }),
    orders: 60,
    held: async () => {
      redis ??= (await connectRedis(BROKERS.redis.url, 'shop-test-probe')).redis;
      const summary = (await redis
        .xpending(`${prefix}:t:inventory.reserved`, 'payments')
        .catch(() => [0])) as [number];
      return Number(summary[0] ?? 0);
    },
    cleanup: async () => {
      if (redis === undefined) return;
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    },
  });
} else {
  const { it } = await import('node:test');
  it('the shop on Redis', { skip: redisSkip }, () => {});
}

const rabbitSkip = await needBroker('rabbitmq');
if (rabbitSkip === false) {
  const prefix = `shop${process.pid}`;
  const url = `${BROKERS.rabbitmq.url}?prefix=${prefix}`;
  const run = promisify(execFile);
  const names = async (what: 'list_queues' | 'list_exchanges', columns: string) =>
    (await run('rabbitmqctl', ['-q', what, ...columns.split(' ')])).stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((cols) => cols[0]?.startsWith(`${prefix}.`));
  shopScenario({
    name: 'RabbitMQ',
    pushLog: false,
    transport: url,
    broker: url,
    testTransport: () => createAmqpTransport({ url: BROKERS.rabbitmq.url, prefix }),
    orders: 60,
    // rabbitmqctl answers from statistics a few seconds old (quorum queues: about 5 s here):
    // charges are held longer than that so that it sees them.
    slowChargeMs: 6000,
    // Deliveries the payments group holds, from the server's own count.
    held: async () => {
      const rows = await names('list_queues', 'name messages_unacknowledged');
      const row = rows.find((cols) => cols[0] === `${prefix}.inventory.reserved.payments`);
      return Number(row?.[1] ?? 0);
    },
    cleanup: async () => {
      const amqp = await import('amqplib');
      const conn = await amqp.connect(BROKERS.rabbitmq.url);
      const ch = await conn.createChannel();
      for (const [q] of await names('list_queues', 'name')) if (q !== undefined) await ch.deleteQueue(q);
      for (const [x] of await names('list_exchanges', 'name'))
        if (x !== undefined) await ch.deleteExchange(x);
      await conn.close();
    },
  });
} else {
  const { it } = await import('node:test');
  it('the shop on RabbitMQ', { skip: rabbitSkip }, () => {});
}
