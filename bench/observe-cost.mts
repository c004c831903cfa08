/**
 * What observing a call costs in one process, 100 calls in flight, each counted by the client and
 * the server side (no validation, a synchronous handler): Parley without middleware, with
 * `metrics()`, with `tracing()` and no OpenTelemetry SDK registered, and with the SDK's
 * `BasicTracerProvider` recording every span (a simple processor handing each to an exporter
 * that drops it: the SDK's own cost, not an exporter's); beside Moleculer without and with its
 * metrics and its tracing (no exporter). Nanoseconds per call, medians of 5 rounds of 200,000
 * after one of warm-up, the variants taking turns round by round.
 *   node --import tsx bench/observe-cost.mts
 */

import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { Middleware } from '../src/index.ts';
import { createNode, defineContract, implement, metrics, tracing, z } from '../src/index.ts';

const N = 200_000;
const ROUNDS = 5;
const calc = defineContract({
  name: 'calc',
  version: '1.0.0',
  actions: {
    add: { input: z.object({ a: z.number(), b: z.number() }), output: z.object({ sum: z.number() }) },
  },
});
const input = { a: 1, b: 2 };

let exported = 0;
const provider = new BasicTracerProvider({
  spanProcessors: [
    new SimpleSpanProcessor({
      export(spans, done) {
        exported += spans.length;
        done({ code: 0 });
      },
      shutdown: async () => undefined,
    }),
  ],
});

type Add = () => Promise<unknown>;
interface Target {
  add: Add;
  stop(): Promise<void>;
}

async function parley(middleware: Middleware[]): Promise<Target> {
  const node = createNode({
    logLevel: 'silent',
    validateInput: false,
    middleware,
    services: [implement(calc, { actions: { add: ({ a, b }) => ({ sum: a + b }) } })],
  });
  await node.start();
  const client = node.client(calc);
  return { add: () => client.add(input), stop: () => node.stop() };
}

async function moleculer(options: Record<string, unknown>): Promise<Target> {
  const { ServiceBroker } = await import('moleculer');
  const broker = new ServiceBroker({ logger: false, ...options } as never);
  broker.createService({
    name: 'calc',
    actions: { add: (ctx: { params: typeof input }) => ({ sum: ctx.params.a + ctx.params.b }) },
  } as never);
  await broker.start();
  return { add: () => broker.call('calc.add', input), stop: () => broker.stop() };
}

const variants: [string, () => Promise<Target>][] = [
  ['parley', () => parley([])],
  ['parley + metrics()', () => parley([metrics({ defaultMetrics: false })])],
  ['parley + tracing(), no SDK', () => parley([tracing()])],
  ['parley + tracing(), SDK recording', () => parley([tracing({ tracer: provider.getTracer('bench') })])],
  ['moleculer', () => moleculer({})],
  ['moleculer + metrics', () => moleculer({ metrics: { enabled: true } })],
  ['moleculer + tracing', () => moleculer({ tracing: { enabled: true, exporter: [] } })],
];

async function round(target: Target, calls: number): Promise<number> {
  const lane = async () => {
    for (let i = 0; i < calls / 100; i++) await target.add();
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: 100 }, lane));
  return ((performance.now() - started) * 1e6) / calls;
}

const targets = new Map<string, Target>();
for (const [name, make] of variants) {
  const target = await make();
  await round(target, N / 4);
  targets.set(name, target);
}
const samples = new Map<string, number[]>(variants.map(([name]) => [name, []]));
for (let r = 0; r < ROUNDS; r++) {
  for (const [name] of variants) samples.get(name)?.push(await round(targets.get(name) as Target, N));
}
for (const target of targets.values()) await target.stop();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const base = {
  parley: median(samples.get('parley') ?? []),
  moleculer: median(samples.get('moleculer') ?? []),
};
console.log('| variant | ns per call (median) | min–max | added to its framework without |');
console.log('| --- | --- | --- | --- |');
for (const [name, xs] of samples) {
  const m = median(xs);
  const own = name.startsWith('parley') ? base.parley : base.moleculer;
  const added = name === 'parley' || name === 'moleculer' ? '' : `+${(m - own).toFixed(0)} ns`;
  console.log(
    `| ${name} | ${m.toFixed(0)} | ${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)} | ${added} |`,
  );
}
console.log(`(spans handed to the exporter: ${exported})`);
