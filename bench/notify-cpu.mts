/**
 * What a notification costs in CPU, sender and receiver in one process on the memory network
 * (every frame through the codec as on a wire, no socket): sent outside any handler, and sent by
 * a handler (so it carries the handler's trace, correlation and causation), 1,000 a turn and
 * each turn's received before the next. Medians of 5 rounds of 200,000 after one of warm-up.
 *   node --import tsx bench/notify-cpu.mts
 */
import { createMemoryNetwork, createNode, defineContract, implement, subscribe, z } from '../src/index.ts';

const contract = defineContract({
  name: 'bench',
  version: '1.0.0',
  actions: { burst: { input: z.object({ n: z.number() }), output: z.object({ n: z.number() }) } },
  events: { 'bench.tick': { schema: z.object({ seq: z.number(), note: z.string() }), version: 1 } },
});
const data = { seq: 0, note: 'x'.repeat(80) };
const PER_TURN = 1000;
const N = 200_000;

let received = 0;
const network = createMemoryNetwork();
const sender = createNode({
  logLevel: 'silent',
  transport: network.transport(),
  services: [
    implement(contract, {
      actions: {
        burst: async ({ n }, ctx) => {
          for (let i = 0; i < n; i++) await ctx.notify(contract, 'bench.tick', data);
          return { n };
        },
      },
    }),
  ],
});
const receiver = createNode({
  logLevel: 'silent',
  transport: network.transport(),
  services: [
    implement(contract, {
      actions: { burst: ({ n }) => ({ n }) },
      on: [subscribe(contract, 'bench.tick', () => void received++, { ephemeral: true })],
    }),
  ],
});
await sender.start();
await receiver.start();
const client = sender.client(contract);
const tick = () => new Promise((r) => setImmediate(r));

async function round(inside: boolean): Promise<number> {
  received = 0;
  const start = process.cpuUsage();
  for (let turn = 0; turn < N / PER_TURN; turn++) {
    if (inside) await client.burst({ n: PER_TURN });
    else for (let i = 0; i < PER_TURN; i++) await sender.notify(contract, 'bench.tick', data);
    while (received < (turn + 1) * PER_TURN) await tick();
  }
  const used = process.cpuUsage(start);
  return (used.user + used.system) / N;
}

process.stdout.write('| sent | µs of CPU per notification, both sides |\n| --- | --- |\n');
for (const inside of [false, true]) {
  await round(inside);
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) rounds.push(await round(inside));
  const median = rounds.sort((a, b) => a - b)[2] as number;
  process.stdout.write(`| ${inside ? 'by a handler' : 'outside a handler'} | ${median.toFixed(2)} |\n`);
}
await sender.stop();
await receiver.stop();
