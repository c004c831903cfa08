/**
 * Tracing: the spans `tracing()` makes through the OpenTelemetry API, recorded by the SDK's
 * in-memory exporter: client and server spans linked across nodes and through a handler's own
 * calls, the span active in the handler, failures with their code, publishes and notifications as
 * producer spans (a refused one with its code), event handlers as consumer spans under them (a
 * redelivery too), and the API without an SDK.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { context, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  AlwaysOffSampler,
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { startServices, tracingFromEnv } from '../src/cli/start.ts';
import {
  createEmbeddedBroker,
  createFakeClock,
  createMemoryNetwork,
  defineContract,
  defineServiceModule,
  implement,
  type Middleware,
  ParleyError,
  subscribe,
  tracing,
  z,
} from '../src/index.ts';
import { silent, tempDir, testNode, waitFor } from './helpers.ts';

const calc = defineContract({
  name: 'calc',
  version: '1.0.0',
  actions: {
    add: {
      input: z.object({ a: z.number(), b: z.number() }),
      output: z.object({ sum: z.number() }),
      errors: { TOO_BIG: 'OUT_OF_RANGE' },
    },
  },
  events: { 'calc.added': { version: 1, schema: z.object({ sum: z.number() }) } },
});

const front = defineContract({
  name: 'front',
  version: '1.0.0',
  actions: {
    total: { input: z.object({ a: z.number(), b: z.number() }), output: z.object({ sum: z.number() }) },
  },
});

const spanIdOf = (traceparent: string) => traceparent.split('-')[2];

describe('tracing', () => {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const tracer = provider.getTracer('test');
  const contextManager = new AsyncLocalStorageContextManager();
  before(() => {
    context.setGlobalContextManager(contextManager.enable());
  });
  after(() => {
    context.disable();
  });

  const spans = (): ReadableSpan[] => exporter.getFinishedSpans();
  const one = (name: string, kind: SpanKind): ReadableSpan => {
    const found = spans().filter((s) => s.name === name && s.kind === kind);
    assert.equal(found.length, 1, `${found.length} ${SpanKind[kind]} spans named ${name}`);
    return found[0] as ReadableSpan;
  };
  const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;

  it('links client and server spans across nodes, through a handler’s own call, under the active span', async (t) => {
    exporter.reset();
    const net = createMemoryNetwork();
    const seen: { traceparent: string; active: string | undefined }[] = [];
    const calcNode = testNode({
      transport: net.transport(),
      middleware: [tracing({ tracer })],
      services: [
        implement(calc, {
          actions: {
            add: ({ a, b }, ctx) => {
              seen.push({
                traceparent: ctx.traceparent,
                active: trace.getActiveSpan()?.spanContext().spanId,
              });
              return { sum: a + b };
            },
          },
        }),
      ],
    });
    const frontNode = testNode({
      transport: net.transport(),
      middleware: [tracing({ tracer })],
      services: [
        implement(front, {
          actions: {
            // A span of the handler's own: the call it makes inside hangs under it.
            total: (input, ctx) =>
              tracer.startActiveSpan('front.work', (work) =>
                ctx.call(calc, 'add', input).finally(() => work.end()),
              ),
          },
        }),
      ],
    });
    const client = testNode({ transport: net.transport(), middleware: [tracing({ tracer })] });
    t.after(async () => {
      await client.stop();
      await frontNode.stop();
      await calcNode.stop();
    });
    await calcNode.start();
    await frontNode.start();
    await client.start();
    await waitFor(() => client.registry.endpoints('front').length > 0, 5000, 'front in the registry');
    await waitFor(() => frontNode.registry.endpoints('calc').length > 0, 5000, 'calc in the registry');

    // Outside any handler, as an HTTP edge would call: under the request's span.
    const result = await tracer.startActiveSpan('GET /total', (request) =>
      client
        .client(front)
        .total({ a: 2, b: 3 })
        .finally(() => request.end()),
    );
    assert.deepEqual(result, { sum: 5 });

    const request = one('GET /total', SpanKind.INTERNAL);
    const frontClient = one('front.total', SpanKind.CLIENT);
    const frontServer = one('front.total', SpanKind.SERVER);
    const work = one('front.work', SpanKind.INTERNAL);
    const calcClient = one('calc.add', SpanKind.CLIENT);
    const calcServer = one('calc.add', SpanKind.SERVER);
    const traceId = request.spanContext().traceId;
    for (const s of [frontClient, frontServer, work, calcClient, calcServer]) {
      assert.equal(s.spanContext().traceId, traceId, `${s.name} is in the request's trace`);
    }
    assert.equal(parentOf(frontClient), request.spanContext().spanId);
    assert.equal(parentOf(frontServer), frontClient.spanContext().spanId);
    assert.equal(parentOf(work), frontServer.spanContext().spanId);
    assert.equal(parentOf(calcClient), work.spanContext().spanId);
    assert.equal(parentOf(calcServer), calcClient.spanContext().spanId);
    assert.equal(calcServer.attributes['rpc.system'], 'parley');
    assert.equal(calcServer.attributes['rpc.service'], 'calc');
    assert.equal(calcServer.attributes['rpc.method'], 'add');
    assert.equal(calcServer.status.code, SpanStatusCode.UNSET);

    // The handler's context is its server span: what it sends continues it, and it is active.
    assert.equal(seen.length, 1);
    assert.equal(spanIdOf(seen[0]?.traceparent as string), calcServer.spanContext().spanId);
    assert.equal(seen[0]?.active, calcServer.spanContext().spanId);
  });

  it('marks failures with their code, and links a local call made outside any span', async (t) => {
    exporter.reset();
    const node = testNode({
      middleware: [tracing({ tracer })],
      services: [
        implement(calc, {
          actions: {
            add: ({ a, b }, ctx) => {
              if (a + b > 100) throw ctx.fail('TOO_BIG', 'too big');
              return { sum: a + b };
            },
          },
        }),
      ],
    });
    t.after(() => node.stop());
    await node.start();
    await assert.rejects(
      node.client(calc).add({ a: 100, b: 1 }),
      (e: ParleyError) => e.code === 'OUT_OF_RANGE',
    );
    const client = one('calc.add', SpanKind.CLIENT);
    const server = one('calc.add', SpanKind.SERVER);
    assert.equal(client.parentSpanContext, undefined, 'a call outside any span starts the trace');
    assert.equal(parentOf(server), client.spanContext().spanId);
    assert.equal(server.attributes['parley.local'], true);
    for (const s of [client, server]) {
      assert.equal(s.status.code, SpanStatusCode.ERROR);
      assert.equal(s.status.message, 'too big');
      assert.equal(s.attributes['parley.code'], 'OUT_OF_RANGE');
    }
  });

  it('makes a producer span per publish, child of the publishing handler’s span, and a consumer span per delivery under it', async (t) => {
    exporter.reset();
    const clock = createFakeClock();
    const broker = createEmbeddedBroker({ path: ':memory:', clock, random: () => 0.5 });
    const handled: number[] = [];
    let failNext = true;
    const node = testNode({
      clock,
      broker,
      middleware: [tracing({ tracer })],
      services: [
        implement(calc, {
          actions: {
            add: async ({ a, b }, ctx) => {
              await ctx.publish(calc, 'calc.added', { sum: a + b });
              return { sum: a + b };
            },
          },
          on: [
            subscribe(
              calc,
              'calc.added',
              (p) => {
                if (failNext) {
                  failNext = false;
                  throw new ParleyError('UNAVAILABLE', 'the database is away');
                }
                handled.push(p.sum);
              },
              { backoff: { initial: 100, max: 100, multiplier: 1 } },
            ),
          ],
        }),
      ],
    });
    t.after(async () => {
      await node.stop();
      await broker.close();
    });
    await node.start();
    await node.client(calc).add({ a: 3, b: 4 });
    const until = Date.now() + 5000;
    while (handled.length === 0 && Date.now() < until) await clock.tick(50);
    assert.deepEqual(handled, [7]);

    const server = one('calc.add', SpanKind.SERVER);
    const producer = one('send calc.added', SpanKind.PRODUCER);
    assert.equal(parentOf(producer), server.spanContext().spanId);
    assert.equal(producer.attributes['messaging.destination.name'], 'calc.added');
    assert.equal(producer.attributes['parley.service'], 'calc');
    assert.equal(producer.attributes['parley.durable'], true);
    const deliveries = spans()
      .filter((s) => s.kind === SpanKind.CONSUMER)
      .sort(
        (a, b) =>
          Number(a.attributes['parley.delivery.attempt']) - Number(b.attributes['parley.delivery.attempt']),
      );
    assert.equal(deliveries.length, 2);
    for (const [i, d] of deliveries.entries()) {
      assert.equal(d.name, 'process calc.added');
      assert.equal(d.spanContext().traceId, server.spanContext().traceId);
      assert.equal(parentOf(d), producer.spanContext().spanId);
      assert.equal(d.attributes['messaging.system'], 'parley');
      assert.equal(d.attributes['messaging.destination.name'], 'calc.added');
      assert.equal(d.attributes['parley.durable'], true);
      assert.equal(d.attributes['parley.delivery.attempt'], i + 1);
    }
    assert.equal(deliveries[0]?.status.code, SpanStatusCode.ERROR);
    assert.equal(deliveries[0]?.attributes['parley.code'], 'UNAVAILABLE');
    assert.equal(deliveries[1]?.status.code, SpanStatusCode.UNSET);
  });

  it('traces a notification sent outside any handler, under the active span; a refused publish is an ERROR producer span', async (t) => {
    exporter.reset();
    const heard: string[] = [];
    const broker = createEmbeddedBroker({ path: ':memory:' });
    const node = testNode({
      broker,
      middleware: [tracing({ tracer })],
      services: [
        implement(calc, {
          actions: { add: ({ a, b }) => ({ sum: a + b }) },
          on: [
            subscribe(calc, 'calc.added', (_p, ctx) => void heard.push(ctx.traceparent), { ephemeral: true }),
          ],
        }),
      ],
    });
    t.after(async () => {
      await node.stop();
      await broker.close();
    });
    await node.start();
    await tracer.startActiveSpan('job', async (job) => {
      await node.notify(calc, 'calc.added', { sum: 1 });
      job.end();
    });
    await waitFor(() => heard.length === 1);
    const job = one('job', SpanKind.INTERNAL);
    const producer = one('send calc.added', SpanKind.PRODUCER);
    const consumer = one('process calc.added', SpanKind.CONSUMER);
    assert.equal(parentOf(producer), job.spanContext().spanId);
    assert.equal(producer.attributes['parley.durable'], false);
    assert.equal(parentOf(consumer), producer.spanContext().spanId);
    assert.equal(spanIdOf(heard[0] as string), consumer.spanContext().spanId);

    // The broker refuses the publish: its span ends with the code.
    await assert.rejects(node.publish(calc, 'calc.added', { sum: 2 }, { delay: -5 }), {
      code: 'INVALID_ARGUMENT',
    });
    const refused = spans().filter(
      (s) => s.kind === SpanKind.PRODUCER && s.attributes['parley.durable'] === true,
    );
    assert.equal(refused.length, 1);
    assert.equal(refused[0]?.status.code, SpanStatusCode.ERROR);
    assert.equal(refused[0]?.attributes['parley.code'], 'INVALID_ARGUMENT');
    assert.equal(parentOf(refused[0] as ReadableSpan), undefined, 'no handler, no active span: a root');
  });
});

describe('tracing from parley start', () => {
  it('is on with PARLEY_TRACING=1 or true, off when unset, 0 or false, and refuses anything else', () => {
    assert.equal(tracingFromEnv({}), false);
    assert.equal(tracingFromEnv({ PARLEY_TRACING: '' }), false);
    assert.equal(tracingFromEnv({ PARLEY_TRACING: '0' }), false);
    assert.equal(tracingFromEnv({ PARLEY_TRACING: 'false' }), false);
    assert.equal(tracingFromEnv({ PARLEY_TRACING: '1' }), true);
    assert.equal(tracingFromEnv({ PARLEY_TRACING: 'TRUE' }), true);
    assert.throws(
      () => tracingFromEnv({ PARLEY_TRACING: 'yes please' }),
      (e: ParleyError) => e.code === 'INVALID_ARGUMENT' && e.message.includes('yes please'),
    );
  });

  it('puts the middleware on the node it starts', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const module = defineServiceModule({
      name: 'calc',
      setup: () => ({
        services: [implement(calc, { actions: { add: ({ a, b }) => ({ sum: a + b }) } })],
      }),
    });
    const running = await startServices({
      modules: [module],
      transport: 'memory:',
      dataDir: tempDir('tracing').path,
      logger: silent,
      metrics: false,
      tracing: { tracer: provider.getTracer('test') },
    });
    try {
      assert.deepEqual(await running.node.client(calc).add({ a: 2, b: 3 }), { sum: 5 });
    } finally {
      await running.stop();
    }
    assert.deepEqual(
      exporter
        .getFinishedSpans()
        .map((s) => `${SpanKind[s.kind]} ${s.name}`)
        .sort(),
      ['CLIENT calc.add', 'SERVER calc.add'],
    );
  });
});

/**
 * `front.total` on one node calling `calc.add` on another, both with `middleware`; gives each
 * handler's `ctx.traceparent` after one call.
 */
async function traceparentsOfOneCall(
  t: { after(fn: () => Promise<void>): void },
  middleware: Middleware[],
): Promise<{ front: string; calc: string }> {
  const net = createMemoryNetwork();
  const seen: Record<string, string> = {};
  const calcNode = testNode({
    transport: net.transport(),
    middleware,
    services: [
      implement(calc, {
        actions: {
          add: ({ a, b }, ctx) => {
            seen.calc = ctx.traceparent;
            return { sum: a + b };
          },
        },
      }),
    ],
  });
  const frontNode = testNode({
    transport: net.transport(),
    middleware,
    services: [
      implement(front, {
        actions: {
          total: (input, ctx) => {
            seen.front = ctx.traceparent;
            return ctx.call(calc, 'add', input);
          },
        },
      }),
    ],
  });
  t.after(async () => {
    await frontNode.stop();
    await calcNode.stop();
  });
  await calcNode.start();
  await frontNode.start();
  await waitFor(() => frontNode.registry.endpoints('calc').length > 0, 5000, 'calc in the registry');
  assert.deepEqual(await frontNode.client(front).total({ a: 1, b: 1 }), { sum: 2 });
  return { front: seen.front as string, calc: seen.calc as string };
}

describe('tracing, sampled out', () => {
  it('records nothing and carries the decision on: not-sampled flags from caller to callee', async (t) => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({
      sampler: new AlwaysOffSampler(),
      spanProcessors: [new SimpleSpanProcessor(exporter)],
    });
    const seen = await traceparentsOfOneCall(t, [tracing({ tracer: provider.getTracer('test') })]);
    assert.equal(exporter.getFinishedSpans().length, 0);
    assert.match(seen.front, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    assert.match(seen.calc, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    assert.equal(seen.calc.split('-')[1], seen.front.split('-')[1]);
  });
});

describe('tracing without an SDK', () => {
  it('leaves Parley’s own trace context as it was: one trace from caller to callee', async (t) => {
    // No tracer provider is registered in this file's process: the API's tracer records nothing.
    const seen = await traceparentsOfOneCall(t, [tracing()]);
    const [, frontTrace, frontSpan] = seen.front.split('-');
    const [, calcTrace, calcSpan] = seen.calc.split('-');
    assert.match(frontTrace as string, /^[0-9a-f]{32}$/);
    assert.notEqual(frontTrace, '0'.repeat(32));
    assert.equal(calcTrace, frontTrace);
    assert.notEqual(calcSpan, frontSpan);
    assert.notEqual(calcSpan, '0'.repeat(16));
  });

  it('leaves an event’s trace context as it was: its handler continues the publishing handler’s trace', async (t) => {
    const seen: Record<string, string> = {};
    const node = testNode({
      middleware: [tracing()],
      services: [
        implement(calc, {
          actions: {
            add: async ({ a, b }, ctx) => {
              seen.add = ctx.traceparent;
              await ctx.notify(calc, 'calc.added', { sum: a + b });
              return { sum: a + b };
            },
          },
          on: [
            subscribe(
              calc,
              'calc.added',
              (_p, ctx) => {
                seen.heard = ctx.traceparent;
              },
              {
                ephemeral: true,
              },
            ),
          ],
        }),
      ],
    });
    t.after(() => node.stop());
    await node.start();
    await node.client(calc).add({ a: 1, b: 2 });
    await waitFor(() => seen.heard !== undefined);
    const [, addTrace] = (seen.add as string).split('-');
    const [, heardTrace, heardSpan] = (seen.heard as string).split('-');
    assert.match(addTrace as string, /^[0-9a-f]{32}$/);
    assert.equal(heardTrace, addTrace);
    assert.notEqual(heardSpan, '0'.repeat(16));
  });
});
