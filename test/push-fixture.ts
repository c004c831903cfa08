/**
 * A gateway's push routes on a real Fastify server (port 0), fed by a real Parley node over the
 * memory transport; events come from a second node, as from the shop's notifications service.
 * Everything it opens is closed when the calling test ends.
 */
import type { TestContext } from 'node:test';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { catalog, notifications, orders } from '../examples/shop/contracts.ts';
import { createPush, type Push, type PushOptions, pushSource } from '../src/gateway/push/index.ts';
import { createMemoryNetwork, type ParleyNode, type Principal } from '../src/index.ts';
import { testNode } from './helpers.ts';

export const ORDER_STATUS = 'notifications.order-status';

/** The order status `status()` sends: what a push client must receive as its data. */
export function orderStatus(
  customer: string,
  orderId: string,
  status: 'PENDING' | 'CONFIRMED' = 'CONFIRMED',
  text = `${orderId} is ${status}`,
) {
  return { customer, orderId, status, text, reason: null, at: 1 };
}

const principal = (subject: string, roles: string[] = []): Principal => ({
  kind: 'user',
  subject,
  roles,
  scopes: [],
});

/** Bearer tokens the fixture's `principalOf` knows. */
export const TOKENS: Record<string, Principal> = {
  alice: principal('alice'),
  bob: principal('bob'),
  staff: principal('staff-1', ['staff']),
};

export const auth = (token: string) => ({ authorization: `Bearer ${token}` });

export interface PushFixture {
  push: Push;
  app: FastifyInstance;
  gateway: ParleyNode;
  sender: ParleyNode;
  /** `http://127.0.0.1:PORT` */
  base: string;
  logs: string[];
  /** Sends an order status the way the notifications service does, and lets it arrive. */
  status(customer: string, orderId: string, status?: 'PENDING' | 'CONFIRMED', text?: string): Promise<void>;
}

export async function startPush(
  t: TestContext,
  options: Partial<PushOptions> = {},
  more: (app: FastifyInstance) => void = () => undefined,
  /** Awaited by `principalOf` before it answers: authentication that takes a while (a JWKS fetch). */
  gate?: () => Promise<void>,
): Promise<PushFixture> {
  const logs: string[] = [];
  const push = createPush({
    sources: [
      pushSource(notifications, ORDER_STATUS, { audience: (e) => e.customer }),
      pushSource(catalog, 'catalog.price-changed'),
      pushSource(orders, 'order.placed', {
        allow: (viewer) => viewer.principal?.roles.includes('staff') === true,
      }),
    ],
    logger: {
      warn: (obj: unknown, msg?: string) => void logs.push(`${msg ?? obj} ${JSON.stringify(obj)}`),
      info: () => undefined,
    },
    ...options,
  });
  const network = createMemoryNetwork();
  const gateway = testNode({ id: 'gateway', transport: network.transport(), services: [push.service] });
  const sender = testNode({ id: 'notifications', transport: network.transport() });
  const app = Fastify({ logger: false });
  t.after(async () => {
    await push.close();
    await app.close();
    await sender.stop();
    await gateway.stop();
  });
  await gateway.start();
  await sender.start();
  await push.register(app, {
    principalOf: async (request: FastifyRequest) => {
      await gate?.();
      const token = /^Bearer (\w+)$/.exec(request.headers.authorization ?? '')?.[1];
      return token === undefined ? undefined : TOKENS[token];
    },
  });
  more(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    push,
    app,
    gateway,
    sender,
    base: `http://127.0.0.1:${port}`,
    logs,
    status: (customer, orderId, status, text) =>
      sender.notify(notifications, ORDER_STATUS, orderStatus(customer, orderId, status, text)),
  };
}
