/**
 * The RabbitMQ transport passes the transport conformance suite against the machine's RabbitMQ,
 * shrugs off garbage published on its exchange, and comes back after its connection is cut.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createAmqpTransport } from '../src/adapters/amqp/amqp-transport.ts';
import { safeId } from '../src/adapters/bus-transport.ts';
import type { ParleyNode } from '../src/index.ts';
import { BROKERS, busConformance, calcPair, cuttableProxy, needBroker } from './brokers.ts';
import { calc, calcService, testNode, waitFor } from './helpers.ts';

const skip = await needBroker('rabbitmq');
const prefix = `parley-test-${process.pid}`;

/** Deletes the durable bus exchanges the run declared (the inbox topic exchange and the two fanouts). */
async function dropExchanges(...prefixes: string[]): Promise<void> {
  const amqp = await import('amqplib');
  const conn = await amqp.connect(BROKERS.rabbitmq.url);
  try {
    const ch = await conn.createChannel();
    for (const p of prefixes)
      for (const x of ['bus', 'presence', 'broadcast']) await ch.deleteExchange(`${p}.${x}`);
  } finally {
    await conn.close();
  }
}

busConformance(
  'rabbitmq',
  skip,
  (options) => createAmqpTransport({ url: BROKERS.rabbitmq.url, ...options }),
  prefix,
  () => dropExchanges(prefix),
);

describe('rabbitmq transport: bad input and reconnects', { skip }, () => {
  const nodes: ParleyNode[] = [];
  const own = `${prefix}-x`;
  after(async () => {
    await Promise.allSettled(nodes.map((n) => n.stop()));
    await dropExchanges(own, `${own}-reply`);
  });

  it('drops malformed messages on the inbox and presence subjects, and keeps serving', async () => {
    const logs: string[] = [];
    const server = testNode({
      transport: createAmqpTransport({ url: BROKERS.rabbitmq.url, prefix: own, log: (m) => logs.push(m) }),
      services: [calcService()],
      stopTimeout: 200,
    });
    const client = testNode({ transport: createAmqpTransport({ url: BROKERS.rabbitmq.url, prefix: own }) });
    nodes.push(server, client);
    await server.start();
    await client.start();
    await waitFor(() => client.registry.endpoints('calc').length > 0, 5000, 'discovery');
    const amqp = await import('amqplib');
    const conn = await amqp.connect(BROKERS.rabbitmq.url);
    try {
      const ch = await conn.createConfirmChannel();
      const inbox = `${own}.node.${safeId(server.id)}`;
      for (const payload of [Buffer.from([1, 2]), Buffer.from([99, 0, 0, 0, 1, 0])]) {
        ch.publish(`${own}.bus`, inbox, payload);
        ch.publish(`${own}.presence`, '', payload); // a fanout exchange: no key
      }
      await ch.waitForConfirms();
    } finally {
      await conn.close();
    }
    await waitFor(
      () => logs.filter((l) => l.startsWith('dropped')).length >= 4,
      5000,
      'the drops to be logged',
    );
    assert.deepEqual(await client.client(calc).add({ a: 2, b: 3 }), { sum: 5 });
  });

  it('requests carry a direct reply-to address and replies come back through it, not the exchange', async () => {
    const reply = `${own}-reply`;
    const { server, client } = await calcPair(
      () => createAmqpTransport({ url: BROKERS.rabbitmq.url, prefix: reply }),
      nodes,
    );
    // A listener on every node subject of the bus exchange: it sees requests, and would see
    // replies if they went back through the exchange to the caller's inbox.
    const amqp = await import('amqplib');
    const conn = await amqp.connect(BROKERS.rabbitmq.url);
    const seen: { key: string; replyTo: unknown }[] = [];
    try {
      const ch = await conn.createChannel();
      const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
      await ch.bindQueue(queue, `${reply}.bus`, `${reply}.node.*`);
      await ch.consume(
        queue,
        (m) => m && seen.push({ key: m.fields.routingKey, replyTo: m.properties.replyTo }),
        {
          noAck: true,
        },
      );
      const sums = await Promise.all([1, 2, 3].map((a) => client.client(calc).add({ a, b: 1 })));
      assert.deepEqual(
        sums.map((s) => s.sum),
        [2, 3, 4],
      );
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      await conn.close();
    }
    const serverInbox = `${reply}.node.${safeId(server.id)}`;
    assert.ok(seen.length > 0, 'the requests went through the exchange');
    for (const m of seen) {
      assert.equal(m.key, serverInbox, 'only requests travel through the exchange');
      assert.match(String(m.replyTo), /^amq\.rabbitmq\.reply-to\./, 'RabbitMQ filled in the address');
    }
  });

  it('reconnects after the connection drops, resubscribes, and serves again', async () => {
    // A proxy whose connections the test cuts, as a network failure would.
    const proxy = await cuttableProxy(BROKERS.rabbitmq.port);
    const { port } = proxy;
    try {
      const logs: string[] = [];
      const server = testNode({
        transport: createAmqpTransport({
          url: `amqp://guest:guest@127.0.0.1:${port}`,
          prefix: own,
          log: (m) => logs.push(m),
        }),
        services: [calcService()],
        stopTimeout: 200,
      });
      const client = testNode({ transport: createAmqpTransport({ url: BROKERS.rabbitmq.url, prefix: own }) });
      nodes.push(server, client);
      await server.start();
      await client.start();
      await waitFor(
        () => client.registry.endpoints('calc').some((e) => e.nodeId === server.id),
        5000,
        'discovery',
      );
      assert.deepEqual(await client.client(calc).add({ a: 1, b: 2 }), { sum: 3 });

      proxy.cut();
      await waitFor(() => logs.some((l) => l.includes('reconnected')), 10_000, 'the reconnect');
      assert.ok(
        logs.some((l) => l.includes('lost the connection')),
        logs.join('\n'),
      );
      let out: { sum: number } | undefined;
      for (let i = 0; i < 10 && out === undefined; i++) {
        out = await client
          .client(calc)
          .add({ a: 2, b: 3 }, { timeout: 300 })
          .catch(() => undefined);
      }
      assert.deepEqual(out, { sum: 5 });
    } finally {
      await Promise.allSettled(nodes.splice(0).map((n) => n.stop()));
      await proxy.close();
    }
  });
});
