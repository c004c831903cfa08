/**
 * Metrics: calls made and served counted by outcome code with their durations (fake clock), the
 * in-flight gauge, events sent and handled (durable with a redelivery, and notifications), the gateway's
 * HTTP series and its `/metrics` access rules, push gauges, and the stand-alone scrape server.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { metricsFromEnv, startServices } from '../src/cli/start.ts';
import {
  createEmbeddedBroker,
  createFakeClock,
  createMemoryNetwork,
  createPush,
  defineContract,
  defineServiceModule,
  implement,
  instrumentPush,
  metrics,
  ParleyError,
  pushSource,
  serveMetrics,
  subscribe,
  z,
} from '../src/index.ts';
import type { MetricsServerOptions } from '../src/observe/metrics-server.ts';
import { raw, startGateway } from './gateway-fixture.ts';
import { silent, tempDir, testNode, waitFor } from './helpers.ts';
import { openSse } from './push-clients.ts';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of Prometheus' text format (no escaped quotes in our label values). */
function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="([^"]*)"/g))
      labels[pair[1] as string] = pair[2] as string;
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample named `name` whose labels include `labels`; undefined when none. */
function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const found = parse(text).filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  assert.ok(found.length <= 1, `${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

const calc = defineContract({
  name: 'calc',
  version: '1.0.0',
  actions: {
    add: {
      input: z.object({ a: z.number(), b: z.number() }),
      output: z.object({ sum: z.number() }),
      errors: { TOO_BIG: 'OUT_OF_RANGE' },
    },
    hold: { input: z.object({}), output: z.object({}) },
  },
  events: {
    'calc.added': { version: 1, schema: z.object({ sum: z.number() }) },
  },
});

describe('node metrics', () => {
  it('counts a middleware that throws before returning a promise, and leaves nothing in flight', async (t) => {
    const observed = metrics({ defaultMetrics: false });
    const refuse = {
      name: 'refuse',
      inbound: () => () => {
        throw new ParleyError('PERMISSION_DENIED', 'refused before any promise');
      },
    };
    const node = testNode({
      middleware: [observed, refuse],
      services: [implement(calc, { actions: { add: ({ a, b }) => ({ sum: a + b }), hold: () => ({}) } })],
    });
    t.after(() => node.stop());
    await node.start();
    await assert.rejects(
      node.client(calc).add({ a: 1, b: 2 }),
      (e: ParleyError) => e.code === 'PERMISSION_DENIED',
    );
    const text = await observed.registry.metrics();
    const key = { service: 'calc', action: 'add' };
    assert.equal(value(text, 'parley_server_calls_total', { ...key, code: 'PERMISSION_DENIED' }), 1);
    assert.equal(value(text, 'parley_server_calls_total', { ...key, code: 'OK' }), undefined);
    assert.equal(value(text, 'parley_server_calls_in_flight', key), 0);
    assert.equal(value(text, 'parley_client_calls_total', { ...key, code: 'PERMISSION_DENIED' }), 1);
  });

  it('counts calls made and served by outcome code, with durations on the given clock', async (t) => {
    const clock = createFakeClock();
    const net = createMemoryNetwork();
    let release: () => void = () => undefined;
    const served = metrics({ clock, defaultMetrics: false, labels: { node: 'server' } });
    const server = testNode({
      transport: net.transport(),
      middleware: [served],
      services: [
        implement(calc, {
          actions: {
            add: ({ a, b }, ctx) => {
              clock.advance(30); // the handler takes 30 ms
              if (a + b > 100) throw ctx.fail('TOO_BIG', 'too big');
              return { sum: a + b };
            },
            hold: () => new Promise<Record<string, never>>((resolve) => (release = () => resolve({}))),
          },
        }),
      ],
    });
    const made = metrics({ clock, defaultMetrics: false });
    const client = testNode({ transport: net.transport(), middleware: [made] });
    t.after(async () => {
      release();
      await client.stop();
      await server.stop();
    });
    await server.start();
    await client.start();
    await waitFor(() => client.registry.endpoints('calc').length > 0, 5000, 'calc in the registry');
    const c = client.client(calc);

    assert.deepEqual(await c.add({ a: 1, b: 2 }), { sum: 3 });
    assert.deepEqual(await c.add({ a: 2, b: 2 }), { sum: 4 });
    await assert.rejects(c.add({ a: 100, b: 1 }), (e: ParleyError) => e.code === 'OUT_OF_RANGE');
    // Refused by validation on the server: the inbound middleware sees it (it runs first).
    await assert.rejects(c.add({ a: 'x' } as never), (e: ParleyError) => e.code === 'INVALID_ARGUMENT');

    const mine = await made.registry.metrics();
    const key = { service: 'calc', action: 'add' };
    assert.equal(value(mine, 'parley_client_calls_total', { ...key, code: 'OK' }), 2);
    assert.equal(value(mine, 'parley_client_calls_total', { ...key, code: 'OUT_OF_RANGE' }), 1);
    assert.equal(value(mine, 'parley_client_calls_total', { ...key, code: 'INVALID_ARGUMENT' }), 1);
    assert.equal(value(mine, 'parley_client_call_duration_seconds_count', key), 4);
    // Three handlers ran 30 ms each on the fake clock; the invalid one ran none.
    assert.equal(value(mine, 'parley_client_call_duration_seconds_sum', key), 0.09);
    assert.equal(value(mine, 'parley_client_call_duration_seconds_bucket', { ...key, le: '0.025' }), 1);
    assert.equal(value(mine, 'parley_client_call_duration_seconds_bucket', { ...key, le: '0.05' }), 4);
    assert.equal(value(mine, 'parley_client_call_duration_seconds_bucket', { ...key, le: '+Inf' }), 4);
    // Buckets are cumulative and non-decreasing, as Prometheus reads them.
    const buckets = parse(mine).filter((x) => x.name === 'parley_client_call_duration_seconds_bucket');
    assert.equal(buckets.length, 15);
    for (let i = 1; i < buckets.length; i++) {
      assert.ok((buckets[i]?.value ?? 0) >= (buckets[i - 1]?.value ?? 0), 'cumulative buckets');
    }
    assert.match(mine, /# TYPE parley_client_calls_total counter\n/);
    assert.match(mine, /# TYPE parley_client_call_duration_seconds histogram\n/);
    assert.equal(value(mine, 'parley_server_calls_total', { ...key, code: 'OK' }), undefined);
    assert.equal(value(mine, 'process_cpu_seconds_total'), undefined, 'default metrics were turned off');

    const theirs = await served.registry.metrics();
    const at = { ...key, node: 'server' };
    assert.equal(value(theirs, 'parley_server_calls_total', { ...at, code: 'OK' }), 2);
    assert.equal(value(theirs, 'parley_server_calls_total', { ...at, code: 'OUT_OF_RANGE' }), 1);
    assert.equal(value(theirs, 'parley_server_calls_total', { ...at, code: 'INVALID_ARGUMENT' }), 1);
    assert.equal(value(theirs, 'parley_server_call_duration_seconds_sum', at), 0.09);
    assert.equal(value(theirs, 'parley_server_calls_in_flight', at), 0);

    // A call in progress is in flight on the server until it answers.
    const held = c.hold({});
    let inFlight: number | undefined;
    await waitFor(
      () => {
        void served.registry.metrics().then((text) => {
          inFlight = value(text, 'parley_server_calls_in_flight', { service: 'calc', action: 'hold' });
        });
        return inFlight === 1;
      },
      5000,
      'the held call in flight',
    );
    assert.equal(inFlight, 1);
    release();
    await held;
    const after = await served.registry.metrics();
    assert.equal(value(after, 'parley_server_calls_in_flight', { service: 'calc', action: 'hold' }), 0);
    assert.equal(
      value(after, 'parley_server_calls_total', { service: 'calc', action: 'hold', code: 'OK' }),
      1,
    );

    // The registry's reset empties Parley's series like prom-client's own.
    served.registry.resetMetrics();
    assert.equal(
      value(await served.registry.metrics(), 'parley_server_calls_total', { ...at, code: 'OK' }),
      undefined,
    );
  });

  it('counts events sent and handled by outcome, durable deliveries with their redeliveries, and notifications', async (t) => {
    const clock = createFakeClock();
    const broker = createEmbeddedBroker({ path: ':memory:', clock, random: () => 0.5 });
    const observed = metrics({ clock, defaultMetrics: false });
    const seen: number[] = [];
    let failNext = true;
    const node = testNode({
      clock,
      broker,
      middleware: [observed],
      services: [
        implement(calc, {
          actions: { add: ({ a, b }) => ({ sum: a + b }), hold: () => ({}) },
          on: [
            subscribe(
              calc,
              'calc.added',
              (p) => {
                clock.advance(5);
                if (failNext) {
                  failNext = false;
                  throw new ParleyError('UNAVAILABLE', 'the database is away');
                }
                seen.push(p.sum);
              },
              { backoff: { initial: 100, max: 100, multiplier: 1 } },
            ),
            subscribe(calc, 'calc.added', (p) => void seen.push(-p.sum), { ephemeral: true }),
          ],
        }),
      ],
    });
    t.after(async () => {
      await node.stop();
      await broker.close();
    });
    await node.start();
    await node.publish(calc, 'calc.added', { sum: 7 });
    await node.notify(calc, 'calc.added', { sum: 8 });
    await assert.rejects(node.publish(calc, 'calc.added', { sum: 9 }, { delay: -5 }), {
      code: 'INVALID_ARGUMENT',
    });
    const until = Date.now() + 5000;
    while (!(seen.includes(7) && seen.includes(-8)) && Date.now() < until) await clock.tick(50);
    assert.deepEqual(
      seen.sort((a, b) => a - b),
      [-8, 7],
    );

    const text = await observed.registry.metrics();
    const durable = { service: 'calc', event: 'calc.added', durable: 'true' };
    assert.equal(value(text, 'parley_events_handled_total', { ...durable, code: 'UNAVAILABLE' }), 1);
    assert.equal(value(text, 'parley_events_handled_total', { ...durable, code: 'OK' }), 1);
    assert.equal(value(text, 'parley_event_redeliveries_total', { service: 'calc', event: 'calc.added' }), 1);
    assert.equal(value(text, 'parley_event_handler_duration_seconds_sum', durable), 0.01);
    const notified = { service: 'calc', event: 'calc.added', durable: 'false' };
    assert.equal(value(text, 'parley_events_handled_total', { ...notified, code: 'OK' }), 1);
    assert.equal(value(text, 'parley_event_handler_duration_seconds_count', notified), 1);

    // Sent: the two handed over, the refused publish with the broker's code.
    assert.equal(value(text, 'parley_events_published_total', { ...durable, code: 'OK' }), 1);
    assert.equal(value(text, 'parley_events_published_total', { ...durable, code: 'INVALID_ARGUMENT' }), 1);
    assert.equal(value(text, 'parley_events_published_total', { ...notified, code: 'OK' }), 1);
    assert.equal(value(text, 'parley_event_publish_duration_seconds_count', durable), 2);
    assert.equal(value(text, 'parley_event_publish_duration_seconds_count', notified), 1);
  });
});

describe('gateway metrics', () => {
  it('counts requests by route pattern and status, and serves /metrics to service-token holders only', async () => {
    // A clock that moves 10 ms each time it is read: a request reads it twice (seen, answered).
    let now = 0;
    const observed = metrics({ clock: { now: () => (now += 10) }, defaultMetrics: false });
    const { url } = await startGateway({ metrics: observed, internal: { tokens: ['scrape-token'] } });
    assert.equal((await fetch(`${url}/api/items/a-1`)).status, 200);
    assert.equal((await fetch(`${url}/api/items/b-2`)).status, 200);
    assert.equal((await fetch(`${url}/api/items/missing`)).status, 404);
    assert.equal((await fetch(`${url}/api/no/such/path/x-1234`)).status, 404);
    assert.equal((await raw(url, { path: '/api/items/%2e%2e' })).status, 400);

    const refused = await fetch(`${url}/metrics`);
    assert.equal(refused.status, 401);
    assert.match(refused.headers.get('content-type') ?? '', /problem\+json/);
    assert.equal(
      (await fetch(`${url}/metrics`, { headers: { authorization: 'Bearer scrape-tokeN' } })).status,
      401,
    );

    const scraped = await fetch(`${url}/metrics`, { headers: { authorization: 'Bearer scrape-token' } });
    assert.equal(scraped.status, 200);
    assert.match(scraped.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await scraped.text();
    const get = { method: 'GET', route: '/api/items/:id' };
    assert.equal(value(text, 'parley_http_requests_total', { ...get, status: '200' }), 2);
    assert.equal(value(text, 'parley_http_requests_total', { ...get, status: '404' }), 1);
    // The route pattern, never the path a client typed.
    assert.equal(
      value(text, 'parley_http_requests_total', { method: 'GET', route: 'unmatched', status: '404' }),
      1,
    );
    assert.doesNotMatch(text, /x-1234|%2e|a-1/);
    assert.equal(value(text, 'parley_http_requests_total', { route: '/metrics', status: '401' }), 2);
    // The path trick matched the route's pattern and was refused by the gateway's checks.
    assert.equal(value(text, 'parley_http_requests_total', { ...get, status: '400' }), 1);
    assert.equal(value(text, 'parley_http_request_duration_seconds_count', get), 4);
    assert.equal(value(text, 'parley_http_request_duration_seconds_sum', get), 0.04);
  });

  it('serves /metrics to anyone when public, and not at all without service tokens by default', async () => {
    const open = await startGateway({
      metrics: metrics({ defaultMetrics: false }),
      metricsEndpoint: 'public',
    });
    const scraped = await fetch(`${open.url}/metrics`);
    assert.equal(scraped.status, 200);
    assert.match(await scraped.text(), /# TYPE parley_http_requests_total counter/);

    const closed = await startGateway({ metrics: metrics({ defaultMetrics: false }) });
    assert.equal((await fetch(`${closed.url}/metrics`)).status, 404);
    const none = await startGateway({
      metrics: metrics({ defaultMetrics: false }),
      metricsEndpoint: 'none',
      internal: { tokens: ['t'] },
    });
    assert.equal(
      (await fetch(`${none.url}/metrics`, { headers: { authorization: 'Bearer t' } })).status,
      404,
    );
  });

  it('reports open push connections by protocol when scraped', async (t) => {
    const notices = defineContract({
      name: 'notices',
      version: '1.0.0',
      actions: {},
      events: { 'notices.posted': { version: 1, schema: z.object({ text: z.string() }) } },
    });
    const push = createPush({ sources: [pushSource(notices, 'notices.posted')] });
    const observed = metrics({ defaultMetrics: false });
    instrumentPush(push, observed);
    const { gateway, url } = await startGateway(
      { metrics: observed, metricsEndpoint: 'public' },
      {
        prepare: (g) =>
          void push.register(g.fastify, {
            principalOf: async () => ({ kind: 'user', subject: 'u-1', roles: [], scopes: [] }),
          }),
      },
    );
    t.after(() => push.close());
    void gateway;
    const scrape = async () => (await fetch(`${url}/metrics`)).text();
    assert.equal(value(await scrape(), 'parley_push_connections', { protocol: 'sse' }), 0);
    const sse = await openSse(`${url}/events?types=notices.posted`);
    t.after(() => sse.close());
    assert.equal(sse.status, 200);
    assert.equal(value(await scrape(), 'parley_push_connections', { protocol: 'sse' }), 1);
    assert.equal(value(await scrape(), 'parley_push_connections', { protocol: 'ws' }), 0);
    sse.close();
    await waitFor(() => push.stats().connections === 0, 5000, 'the connection to close');
    assert.equal(value(await scrape(), 'parley_push_connections', { protocol: 'sse' }), 0);
  });
});

describe('serveMetrics', () => {
  it('answers GET /metrics, refuses other paths and methods, and checks its token', async (t) => {
    const observed = metrics({ defaultMetrics: true });
    const server = await serveMetrics(observed.registry, { token: 'secret' });
    t.after(() => server.close());
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const base = server.url.replace(/\/metrics$/, '');
    assert.equal((await fetch(server.url)).status, 401);
    assert.equal((await fetch(server.url, { headers: { authorization: 'Bearer secreT' } })).status, 401);
    const auth = { authorization: 'Bearer secret' };
    assert.equal((await fetch(`${base}/other`, { headers: auth })).status, 404);
    const post = await fetch(server.url, { method: 'POST', headers: auth });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    const ok = await fetch(server.url, { headers: auth });
    assert.equal(ok.status, 200);
    const text = await ok.text();
    // Node's process metrics, under the same prefix.
    assert.ok((value(text, 'parley_process_cpu_seconds_total') ?? -1) >= 0);
    assert.match(text, /# TYPE parley_client_calls_total counter/);
    const head = await fetch(server.url, { method: 'HEAD', headers: auth });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
  });
});

describe('metrics endpoint host', () => {
  it('a blank host, given or from PARLEY_METRICS_HOST, stays on 127.0.0.1 instead of every interface', async () => {
    assert.deepEqual(metricsFromEnv({ PARLEY_METRICS_PORT: '0', PARLEY_METRICS_HOST: '' }), { port: 0 });
    assert.deepEqual(metricsFromEnv({ PARLEY_METRICS_PORT: '0', PARLEY_METRICS_HOST: ' ::1 ' }), {
      port: 0,
      host: '::1',
    });
    for (const host of ['', '  ']) {
      const server = await serveMetrics(metrics().registry, { host });
      try {
        // The URL names the address given to listen (an empty one printed `http://:port`).
        assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
        assert.equal((await fetch(server.url)).status, 200);
      } finally {
        await server.close();
      }
    }
  });
});

describe('parley start with metrics', () => {
  it("serves the node's metrics on PARLEY_METRICS_PORT, labelled with the node id, until it stops", async () => {
    const data = tempDir('metrics').path;
    const module = defineServiceModule({
      name: 'calc',
      setup: ({ metrics: given }) => {
        assert.ok(given, "the module is given the node's metrics");
        return {
          services: [implement(calc, { actions: { add: ({ a, b }) => ({ sum: a + b }), hold: () => ({}) } })],
        };
      },
    });
    const running = await startServices({
      modules: [module],
      transport: 'memory:',
      dataDir: data,
      id: 'calc-1',
      logger: silent,
      metrics: metricsFromEnv({
        PARLEY_METRICS_PORT: '0',
        PARLEY_METRICS_TOKEN: 'tok',
      }) as MetricsServerOptions,
    });
    try {
      assert.deepEqual(await running.node.client(calc).add({ a: 2, b: 3 }), { sum: 5 });
      const url = running.metricsUrl as string;
      assert.equal((await fetch(url)).status, 401);
      const text = await (await fetch(url, { headers: { authorization: 'Bearer tok' } })).text();
      assert.equal(
        value(text, 'parley_server_calls_total', {
          service: 'calc',
          action: 'add',
          code: 'OK',
          node: 'calc-1',
        }),
        1,
      );
      assert.ok((value(text, 'parley_process_resident_memory_bytes', { node: 'calc-1' }) ?? 0) > 0);
    } finally {
      await running.stop();
    }
    await assert.rejects(fetch(running.metricsUrl as string), 'the metrics port is closed with the node');
  });

  it('is off without PARLEY_METRICS_PORT, and refuses a port that is not one', () => {
    assert.equal(metricsFromEnv({}), false);
    assert.deepEqual(metricsFromEnv({ PARLEY_METRICS_PORT: '9464', PARLEY_METRICS_HOST: '::1' }), {
      port: 9464,
      host: '::1',
    });
    for (const bad of ['x', '-1', '70000', '9464 ']) {
      assert.throws(
        () => metricsFromEnv({ PARLEY_METRICS_PORT: bad }),
        (e: ParleyError) => e.code === 'INVALID_ARGUMENT' && e.message.includes('PARLEY_METRICS_PORT'),
      );
    }
  });

  it('refuses a blank PARLEY_METRICS_TOKEN, which no scrape could present', async () => {
    // Until 2026-12-03 the endpoint came up and answered every scrape 401.
    for (const blank of ['', ' ']) {
      assert.throws(
        () => metricsFromEnv({ PARLEY_METRICS_PORT: '0', PARLEY_METRICS_TOKEN: blank }),
        (e: ParleyError) => e.code === 'INVALID_ARGUMENT' && e.message.includes('PARLEY_METRICS_TOKEN'),
      );
      await assert.rejects(
        serveMetrics(metrics({ defaultMetrics: false }).registry, { port: 0, token: blank }),
        (e: ParleyError) => e.code === 'INVALID_ARGUMENT',
      );
    }
  });
});
