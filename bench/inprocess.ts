/**
 * In-process calls, one system per process: a call to a service in the same process, with and
 * without input validation, awaited one at a time and with 100 in flight.
 *   inprocess.ts <parley|parley + policies|parley + metrics|moleculer|moleculer + metrics>
 *     <validate: 0|1> <sync|async> <calls>
 * `+ metrics`: each framework's own metrics collected (Parley's `metrics()`, Moleculer's
 * `metrics: { enabled: true }`), nothing scraping them.
 */
import { say } from './lib/proc.ts';

type Add = (input: { a: number; b: number; note: string }) => Promise<unknown>;

async function parley(
  validate: boolean,
  asyncHandler: boolean,
  extra: 'policies' | 'metrics' | undefined,
): Promise<{ add: Add; stop(): Promise<void> }> {
  const { createNode, defineContract, implement, metrics, resilience, z } = await import('parley');
  const calc = defineContract({
    name: 'calc',
    version: '1.0.0',
    actions: {
      add: {
        input: z.object({ a: z.number(), b: z.number(), note: z.string().max(200) }),
        output: z.object({ sum: z.number() }),
      },
    },
  });
  const node = createNode({
    logLevel: 'silent',
    validateInput: validate,
    // The default policy stack: budgeted retries of safe calls, a breaker per instance.
    ...(extra === 'policies' ? { middleware: resilience() } : {}),
    ...(extra === 'metrics' ? { middleware: [metrics()] } : {}),
    services: [
      implement(calc, {
        actions: {
          add: asyncHandler ? async ({ a, b }) => ({ sum: a + b }) : ({ a, b }) => ({ sum: a + b }),
        },
      }),
    ],
  });
  await node.start();
  const client = node.client(calc);
  return { add: (input) => client.add(input), stop: () => node.stop() };
}

async function moleculer(
  validate: boolean,
  asyncHandler: boolean,
  withMetrics: boolean,
): Promise<{ add: Add; stop(): Promise<void> }> {
  const { ServiceBroker } = await import('moleculer');
  const broker = new ServiceBroker({
    logger: false,
    validator: validate,
    ...(withMetrics ? { metrics: { enabled: true } } : {}),
  } as never);
  broker.createService({
    name: 'calc',
    actions: {
      add: {
        params: { a: 'number', b: 'number', note: { type: 'string', max: 200 } },
        handler: asyncHandler
          ? async (ctx: { params: { a: number; b: number } }) => ({ sum: ctx.params.a + ctx.params.b })
          : (ctx: { params: { a: number; b: number } }) => ({ sum: ctx.params.a + ctx.params.b }),
      },
    },
  });
  await broker.start();
  return { add: (input) => broker.call('calc.add', input), stop: () => broker.stop() };
}

const [system, validateArg, handlerKind, callsArg] = process.argv.slice(2);
const validate = validateArg === '1';
const asyncHandler = handlerKind === 'async';
const calls = Number(callsArg ?? 1_000_000);
const extra = system?.endsWith(' + policies')
  ? 'policies'
  : system?.endsWith(' + metrics')
    ? 'metrics'
    : undefined;
const target = system?.startsWith('moleculer')
  ? await moleculer(validate, asyncHandler, extra === 'metrics')
  : await parley(validate, asyncHandler, extra);
const input = { a: 1, b: 2, note: 'a note of about twenty' };

for (let i = 0; i < Math.min(50_000, calls); i++) await target.add(input);

let t = performance.now();
for (let i = 0; i < calls; i++) await target.add(input);
say({ case: 'sequential', perSecond: calls / ((performance.now() - t) / 1000) });

const batch = 100;
const pending: Promise<unknown>[] = new Array(batch);
t = performance.now();
for (let i = 0; i < calls; i += batch) {
  for (let j = 0; j < batch; j++) pending[j] = target.add(input);
  await Promise.all(pending);
}
say({ case: '100 in flight', perSecond: calls / ((performance.now() - t) / 1000) });
await target.stop();
process.exit(0);
