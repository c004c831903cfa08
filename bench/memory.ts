/**
 * An idle node, for its resident memory: a Parley node or a Moleculer broker hosting one small
 * service, no transport to the outside. `memory.ts <parley|moleculer>` → {ready}, then waits.
 */
import { say } from './lib/proc.ts';

const system = process.argv[2];
if (system === 'moleculer') {
  const { ServiceBroker } = await import('moleculer');
  const broker = new ServiceBroker({ logger: false });
  broker.createService({
    name: 'calc',
    actions: { add: (ctx: { params: { a: number; b: number } }) => ctx.params.a + ctx.params.b },
  });
  await broker.start();
} else {
  const { createNode, defineContract, implement, z } = await import('parley');
  const calc = defineContract({
    name: 'calc',
    version: '1.0.0',
    actions: { add: { input: z.object({ a: z.number(), b: z.number() }), output: z.number() } },
  });
  const node = createNode({
    logLevel: 'silent',
    services: [implement(calc, { actions: { add: ({ a, b }) => a + b } })],
  });
  await node.start();
  await node.client(calc).add({ a: 1, b: 2 });
}
say({ ready: true });
process.once('SIGTERM', () => process.exit(0));
setInterval(() => undefined, 60_000);
