/**
 * @module gateway/metrics
 * The gateway's HTTP series on a node's metrics registry, and its scrape endpoint. Requests are
 * counted by method, route pattern and status (a path that matched no route is `unmatched`: what a
 * client types never becomes a label), with their duration from the first hook to the answer.
 * `GET /metrics` answers the registry to holders of the internal service tokens, or to anyone when
 * made public (for a gateway only reachable from inside).
 */
import type { FastifyInstance } from 'fastify';
import { Gauge } from 'prom-client';
import type { MetricsMiddleware } from '../observe/metrics.ts';
import { durationHistogram, outcomeCounter, SlotTable } from '../observe/series.ts';
import { internalTokenGuard } from './internal.ts';
import type { GatewayOptions } from './options.ts';
import type { Push } from './push/push.ts';

export interface GatewayMetricsInit {
  fastify: FastifyInstance;
  metrics: MetricsMiddleware;
  /** Who may scrape `/metrics`: holders of these tokens, everyone (`public`), or nobody (`none`). */
  endpoint: { tokens: readonly string[]; rateLimit?: GatewayOptions['rateLimit'] } | 'public' | 'none';
}

declare module 'fastify' {
  interface FastifyRequest {
    /** When the gateway's first hook saw the request, on the metrics clock (ms). */
    parleyStarted: number;
  }
}

export function registerGatewayMetrics({ fastify, metrics, endpoint }: GatewayMetricsInit): void {
  const { registry, prefix, buckets, clock } = metrics;
  const requests = new SlotTable(buckets);
  const source = { table: requests, labels: (method: string, route: string) => ({ method, route }) };
  outcomeCounter(
    {
      registry,
      name: `${prefix}http_requests_total`,
      help: 'Requests the gateway answered, by method, route pattern and status',
      sources: [source],
    },
    'status',
  );
  durationHistogram({
    registry,
    name: `${prefix}http_request_duration_seconds`,
    help: 'Time from the gateway seeing a request to its answer being written',
    sources: [source],
  });
  fastify.decorateRequest('parleyStarted', 0);
  fastify.addHook('onRequest', (request, _reply, done) => {
    request.parleyStarted = clock.now();
    done();
  });
  fastify.addHook('onResponse', (request, reply, done) => {
    const slot = requests.get(request.method, request.routeOptions.url ?? 'unmatched');
    slot.outcome(String(reply.statusCode));
    slot.observe((clock.now() - request.parleyStarted) / 1000);
    done();
  });

  if (endpoint === 'none') return;
  // Refused tokens spend from the gateway's rate limit, in the same bucket as on /rpc.
  const guard =
    endpoint === 'public'
      ? undefined
      : internalTokenGuard(
          endpoint.tokens,
          endpoint.rateLimit,
          'a valid service token is required to read metrics',
        );
  fastify.get('/metrics', guard === undefined ? {} : { onRequest: guard }, async (_request, reply) => {
    const text = await registry.metrics();
    return reply.header('cache-control', 'no-store').type(registry.contentType).send(text);
  });
}

/**
 * Push connections as gauges, read from the push module when scraped: open connections by
 * protocol, and the bytes held for slow clients.
 */
export function instrumentPush(push: Push, metrics: MetricsMiddleware): void {
  const { registry, prefix } = metrics;
  new Gauge({
    name: `${prefix}push_connections`,
    help: 'Open push connections, by protocol',
    labelNames: ['protocol'],
    registers: [registry],
    collect() {
      const stats = push.stats();
      this.set({ protocol: 'sse' }, stats.sse);
      this.set({ protocol: 'ws' }, stats.ws);
    },
  });
  new Gauge({
    name: `${prefix}push_buffered_bytes`,
    help: 'Unsent bytes held for all open push connections',
    registers: [registry],
    collect() {
      this.set(push.stats().buffered);
    },
  });
}
