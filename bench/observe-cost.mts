/**
 * What observing a call costs in one process, 100 calls in flight, each counted by the client and
 * the server side (no validation, a synchronous handler): Parley without middleware, with
 * `metrics()`, with `tracing()` and no OpenTelemetry SDK registered, and with the SDK's
 * `BasicTracerProvider` recording every span (a simple processor handing each to an exporter
 * that drops it: the SDK's own cost, not an exporter's); beside Moleculer without and with its
 * metrics and its tracing (no exporter). Each variant runs in a process of its own, as the
 * in-process suite of `npm run bench` does, so no variant's shapes reach another's call paths.
 * Nanoseconds per call, medians of 5 rounds, each a fresh process making 200,000 calls after
 * 50,000 of warm-up, the variants taking turns round by round. Parley is the build in `dist/`:
 * the same code run from `src/` through tsx takes about 3× as long per call (tsx's esbuild keeps
 * function names by wrapping each named arrow function, an `Object.defineProperty` per closure).
 *   npm run build && node --import tsx bench/observe-cost.mts
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { Middleware } from '../dist/index.js';
import { createNode, defineContract, implement, metrics, tracing, z } from '../dist/index.js';

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

const provider = new BasicTracerProvider({
  spanProcessors: [
    new SimpleSpanProcessor({
      export(_spans, done) {
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

const only = process.argv[2];
if (only !== undefined) {
  // A child: one variant, one round; prints nanoseconds per call.
  const make = variants.find(([name]) => name === only)?.[1];
  if (make === undefined) throw new Error(`no variant ${only}`);
  const target = await make();
  await round(target, N / 4);
  const ns = await round(target, N);
  await target.stop();
  process.stdout.write(`${ns}\n`);
  process.exit(0);
}

const self = fileURLToPath(import.meta.url);
const samples = new Map<string, number[]>(variants.map(([name]) => [name, []]));
for (let r = 0; r < ROUNDS; r++) {
  for (const [name] of variants) {
    const out = execFileSync(process.execPath, ['--import', 'tsx', self, name], { encoding: 'utf8' });
    samples.get(name)?.push(Number(out.trim()));
  }
}

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
