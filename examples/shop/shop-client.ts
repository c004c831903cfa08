/** What the scenario and the end-to-end test share: waiting for the shop, following orders. */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Client, ParleyNode } from '../../src/index.ts';
import type { Order, orders } from './contracts.ts';

export const SERVICES = ['catalog', 'inventory', 'notifications', 'orders', 'payments', 'shipping'];

/** Resolves once every shop service has an instance that is up. */
export async function waitForShop(node: ParleyNode, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const missing = SERVICES.filter(
      (s) => !node.registry.endpoints(s).some((e) => node.registry.node(e.nodeId)?.status === 'up'),
    );
    if (missing.length === 0) return;
    if (Date.now() > until)
      throw new Error(`shop services not up after ${timeoutMs} ms: ${missing.join(', ')}`);
    await sleep(50);
  }
}

/** Polls until each order has left PENDING; returns them in the order asked. */
export async function waitForFinal(
  client: Client<typeof orders>,
  ids: readonly string[],
  timeoutMs = 30_000,
): Promise<Order[]> {
  const until = Date.now() + timeoutMs;
  const done = new Map<string, Order>();
  for (;;) {
    for (const id of ids) {
      if (done.has(id)) continue;
      const order = await client.get({ id });
      if (order.status !== 'PENDING') done.set(id, order);
    }
    if (done.size === ids.length) return ids.map((id) => done.get(id) as Order);
    if (Date.now() > until) {
      throw new Error(`${ids.length - done.size} order(s) still PENDING after ${timeoutMs} ms`);
    }
    await sleep(100);
  }
}
