/**
 * Gateways whose push follows a broker's log (`push.follow(broker.history)`), for the push-log
 * tests on each broker: real Fastify servers (port 0), SSE clients, and events published to the
 * broker as a service's `ctx.publish` would. Everything it opens, and the broker, is closed when
 * the calling test ends.
 */
import type { TestContext } from 'node:test';
import Fastify from 'fastify';
import { catalog, notifications } from '../examples/shop/contracts.ts';
import { createPush, type PushOptions, pushSource } from '../src/gateway/push/index.ts';
import { type Broker, type BrokerHistory, createEnvelope, type FakeClock } from '../src/index.ts';
import { openSse, type SseClient } from './push-clients.ts';
import { ORDER_STATUS, orderStatus } from './push-fixture.ts';

export const PRICE = 'catalog.price-changed';

/** The order ids of the order-status events among `events`, in order. */
export const orderIds = (events: { event: string; data: string }[]) =>
  events
    .filter((e) => e.event === ORDER_STATUS)
    .map((e) => (JSON.parse(e.data) as { orderId: string }).orderId);

export function pushLogSetup<B extends Broker & { readonly history: BrokerHistory }>(
  t: TestContext,
  broker: B,
  clock: FakeClock,
) {
  const clients: SseClient[] = [];
  const closers: (() => Promise<void>)[] = [];
  t.after(async () => {
    for (const c of clients) c.close();
    for (const close of closers.reverse()) await close();
    await broker.close();
  });
  /** A gateway instance that follows the broker's log; `stop` takes it down as a restart would. */
  const gateway = async (options: Partial<PushOptions> = {}, history: BrokerHistory = broker.history) => {
    const push = createPush({
      sources: [
        pushSource(notifications, ORDER_STATUS, { audience: (e) => e.customer }),
        pushSource(catalog, PRICE),
      ],
      clock,
      allowAnonymousAudience: true,
      logger: { warn: () => undefined, info: () => undefined },
      ...options,
    });
    await push.follow(history);
    const app = Fastify({ logger: false });
    await push.register(app, { principalOf: async () => undefined });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const address = app.server.address();
    const port = typeof address === 'object' && address !== null ? address.port : 0;
    let stopped = false;
    const stop = async () => {
      if (stopped) return;
      stopped = true;
      await push.close();
      await app.close();
    };
    closers.push(stop);
    const connect = async (customer: string, lastEventId?: string) => {
      const client = await openSse(
        `http://127.0.0.1:${port}/events?types=${ORDER_STATUS},${PRICE}&customer=${customer}`,
        lastEventId === undefined ? {} : { 'last-event-id': lastEventId },
      );
      clients.push(client);
      return client;
    };
    return { push, connect, stop, port };
  };
  const status = (customer: string, orderId: string) =>
    broker.publish(
      createEnvelope({ source: '/notifications', type: ORDER_STATUS, data: orderStatus(customer, orderId) }),
    );
  const price = (sku: string) =>
    broker.publish(createEnvelope({ source: '/catalog', type: PRICE, data: { sku, price: 100 } }));
  return { clock, broker, gateway, status, price };
}

/**
 * Alice sees a1 on gateway `one`, is away while a2, bob's b1, a price change and a3 are published,
 * and reconnects to gateway `two` (which never saw her) with her last id; a4 then comes live.
 */
export async function resumeOnAnotherInstance(setup: ReturnType<typeof pushLogSetup>) {
  const { gateway, status, price } = setup;
  const one = await gateway();
  const two = await gateway();
  const alice = await one.connect('alice');
  await status('alice', 'a1');
  const [first] = await alice.waitForEvents(1);
  const last = alice.lastEventId;
  alice.close();
  await status('alice', 'a2');
  await status('bob', 'b1');
  await price('sku-1');
  await status('alice', 'a3');
  const again = await two.connect('alice', last);
  await again.waitForEvents(3);
  await status('alice', 'a4');
  await again.waitForEvents(4);
  return { one, two, first, last, again };
}
