/**
 * The shop's notifications service, in process on an embedded broker: each step of an order is
 * stored as before and announced as `notifications.order-status` (notified, and published to the
 * broker's log) for the gateway to push;
 * PENDING is announced but not stored (the stored notifications stay about how orders ended).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { notifications, orders } from '../examples/shop/contracts.ts';
import module from '../examples/shop/services/notifications.ts';
import {
  createEmbeddedBroker,
  createMemoryNetwork,
  defineContract,
  implement,
  type PayloadOf,
  subscribe,
} from '../src/index.ts';
import { silent, tempDir, testNode, waitFor } from './helpers.ts';

type Step = PayloadOf<typeof notifications, 'notifications.order-status'>;

describe('shop notifications', { timeout: 20_000 }, () => {
  it('announces PENDING, then CONFIRMED or REJECTED with the reason; stores only the outcomes', async (t) => {
    const dir = tempDir('notifications');
    const parts = await module.setup({ dataDir: dir.path, env: {}, logger: silent });
    const heard: Step[] = [];
    // The gateway's side: any service with an ephemeral subscription hears every announcement.
    const listener = implement(defineContract({ name: 'listener', version: '1.0.0', actions: {} }), {
      actions: {},
      on: [
        subscribe(notifications, 'notifications.order-status', (s) => void heard.push(s), {
          ephemeral: true,
        }),
      ],
    });
    const network = createMemoryNetwork();
    const broker = createEmbeddedBroker({ path: ':memory:', pollInterval: 5 });
    const node = testNode({ id: 'shop', transport: network.transport(), broker, services: parts.services });
    const gateway = testNode({ id: 'gateway', transport: network.transport(), services: [listener] });
    t.after(async () => {
      await gateway.stop();
      await node.stop();
      await broker.close();
      await parts.close?.();
    });
    await node.start();
    await gateway.start();
    const line = [{ sku: 'mouse', quantity: 1 }];
    await node.publish(orders, 'order.placed', {
      orderId: 'o1',
      customer: 'alice',
      card: 'c',
      total: 1999,
      lines: line,
    });
    await node.publish(orders, 'order.placed', {
      orderId: 'o2',
      customer: 'bob',
      card: 'c',
      total: 999,
      lines: line,
    });
    await waitFor(() => heard.length === 2, 5000, 'two PENDING announcements');
    await node.publish(orders, 'order.confirmed', { orderId: 'o1', customer: 'alice', total: 1999 });
    await node.publish(orders, 'order.rejected', {
      orderId: 'o2',
      customer: 'bob',
      reason: 'out of stock: mouse',
    });
    await waitFor(() => heard.length === 4, 5000, 'two outcomes');
    const of = (id: string) =>
      heard.filter((s) => s.orderId === id).map((s) => [s.customer, s.status, s.reason]);
    assert.deepEqual(of('o1'), [
      ['alice', 'PENDING', null],
      ['alice', 'CONFIRMED', null],
    ]);
    assert.deepEqual(of('o2'), [
      ['bob', 'PENDING', null],
      ['bob', 'REJECTED', 'out of stock: mouse'],
    ]);
    assert.match(heard.find((s) => s.status === 'CONFIRMED')?.text ?? '', /€19\.99 charged/);
    const { notifications: stored } = await node.client(notifications).list({});
    assert.deepEqual(stored.map((n) => n.orderId).sort(), ['o1', 'o2'], 'outcomes only, as before');
    // Published too: the broker's log holds every announcement, for gateways that resume from it.
    // The service starts the publish before the notification, but does not wait for the broker's
    // confirmation: the last one may still be on its way when the notification is heard.
    const read = () => broker.history.read('notifications.order-status', '0');
    let log = await read();
    for (const until = Date.now() + 5000; log.entries.length < heard.length && Date.now() < until; ) {
      await new Promise((r) => setTimeout(r, 5));
      log = await read();
    }
    assert.deepEqual(
      log.entries
        .map((e) => `${(e.envelope.data as Step).orderId} ${(e.envelope.data as Step).status}`)
        .sort(),
      heard.map((s) => `${s.orderId} ${s.status}`).sort(),
    );
  });
});
