/**
 * gateway: the shop's HTTP edge. REST for the storefront from the contracts' public actions
 * (`GET /api/products`, `POST /api/orders`, `GET /api/orders/:id`), the storefront page at `/`,
 * live order status over Server-Sent Events (`/events`) and WebSocket (`/ws`), OpenAPI at
 * `/openapi.json` and its docs at `/docs`.
 *
 * Settings: `PARLEY_GATEWAY_PORT` (default 3000; 0 picks a free port), `PARLEY_GATEWAY_HOST`
 * (default 127.0.0.1); with `PARLEY_METRICS_PORT`, requests and push connections are counted on
 * the process's metrics (served on that port). The shop has no login: the storefront names its
 * customer, and the push endpoints take `?customer=` (the push module's demo switch, off by default
 * elsewhere).
 */
import { fileURLToPath } from 'node:url';
import { createPush, pushSource, registerStorefront } from '../../../src/gateway/push/index.ts';
import { createGateway, defineServiceModule, type Gateway, instrumentPush } from '../../../src/index.ts';
import { catalog, notifications, orders } from '../contracts.ts';

export default defineServiceModule({
  name: 'gateway',
  setup({ env, logger, metrics }) {
    const push = createPush({
      sources: [pushSource(notifications, 'notifications.order-status', { audience: (p) => p.customer })],
      allowAnonymousAudience: true,
    });
    let gateway: Gateway | undefined;
    if (metrics !== undefined) instrumentPush(push, metrics);
    return {
      services: [push.service],
      async started(node) {
        gateway = createGateway({
          node,
          contracts: [catalog, orders],
          host: env.PARLEY_GATEWAY_HOST ?? '127.0.0.1',
          port: Number(env.PARLEY_GATEWAY_PORT ?? 3000),
          // With PARLEY_METRICS_PORT set, requests are counted on the node's registry, which
          // the metrics port serves; the public port does not.
          ...(metrics === undefined ? {} : { metrics, metricsEndpoint: 'none' as const }),
        });
        // Where the broker keeps a log, push follows it: a browser resumes where it left off on
        // any gateway, even after a restart. Else the notifications, resumed from this gateway's memory.
        const history = node.broker?.history;
        if (history !== undefined) await push.follow(history);
        await push.register(gateway.fastify, { principalOf: async () => undefined });
        registerStorefront(gateway.fastify, { root: fileURLToPath(new URL('../web/', import.meta.url)) });
        gateway.onClose(() => push.close());
        const { url } = await gateway.listen();
        logger.info({ url }, `storefront at ${url}/ (API docs at ${url}/docs)`);
      },
      async stopping() {
        await gateway?.close();
      },
    };
  },
});
