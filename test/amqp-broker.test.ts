/**
 * The RabbitMQ broker passes the broker conformance suite against the machine's RabbitMQ (real
 * time: `advance` waits). Every broker of the run has its own prefix; its queues, exchanges and
 * dead-letter stream are deleted at the end.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type AmqpBroker, createAmqpBroker } from '../src/adapters/amqp/amqp-broker.ts';
import { createEnvelope, systemClock } from '../src/index.ts';
import { BROKERS, cuttableProxy, needBroker } from './brokers.ts';
import { brokerConformance } from './conformance/broker.ts';
import { waitFor } from './helpers.ts';

const skip = await needBroker('rabbitmq');
let n = 0;
const made: AmqpBroker[] = [];

if (skip === false) {
  brokerConformance({
    name: 'rabbitmq',
    clock: systemClock,
    create: async () => {
      const broker = await createAmqpBroker({
        url: BROKERS.rabbitmq.url,
        prefix: `ptest${process.pid}r${++n}`,
        log: () => {},
      });
      made.push(broker);
      return broker;
    },
    advance: (ms) => sleep(ms),
    skip: {
      'a new group starts from now, or from the beginning when asked':
        'RabbitMQ: a queue holds only what arrived after it was bound; a group created later cannot start from the beginning (only a stream could)',
    },
  });
  after(async () => {
    for (const broker of made) await broker.destroyAll();
  });
} else {
  it('broker conformance: rabbitmq', { skip }, () => {});
}

describe('rabbitmq broker: reconnects', { skip }, () => {
  it('consumers come back after the connection drops; a message held at the cut is redelivered', async () => {
    // A proxy whose connections the test cuts, as a network failure would.
    const proxy = await cuttableProxy(BROKERS.rabbitmq.port);
    const { port } = proxy;
    const logs: string[] = [];
    const broker = await createAmqpBroker({
      url: `amqp://guest:guest@127.0.0.1:${port}`,
      prefix: `ptest${process.pid}cut`,
      log: (m) => logs.push(m),
    });
    try {
      const seen: string[] = [];
      let hold: (() => void) | undefined;
      await broker.subscribe({ topic: 'cut.t', group: 'g' }, async (d) => {
        seen.push(`${d.envelope.data}#${d.attempt}`);
        if (d.envelope.data === 'held' && d.attempt === 1) await new Promise<void>((r) => (hold = r));
      });
      await broker.publish(createEnvelope({ source: '/t', type: 'cut.t', data: 'held' }));
      await waitFor(() => seen.length === 1, 5000, 'the first delivery');
      proxy.cut();
      await waitFor(() => logs.some((l) => l.includes('reconnected')), 10_000, 'the reconnect');
      hold?.(); // its ack is ignored: the message went back with the connection
      await broker.publish(createEnvelope({ source: '/t', type: 'cut.t', data: 'after' }));
      await waitFor(() => seen.includes('after#1') && seen.includes('held#2'), 10_000, 'both handled');
      assert.ok(
        logs.some((l) => l.includes('lost the connection')),
        logs.join('\n'),
      );
    } finally {
      await broker.destroyAll().catch(() => undefined);
      await broker.close();
      await proxy.close();
    }
  });
});
