/**
 * What a notification costs in CPU on the memory network (every frame through the codec as on a
 * wire, no socket): the sender alone (a node with nobody to hear it), and sender and receiver in
 * one process, sent outside any handler and sent by a handler (so it carries the handler's trace,
 * correlation and causation); 1,000 a turn, each turn's received before the next. Medians of 5
 * rounds of 200,000 after one of warm-up.
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
// A node alone on a network of its own: what sending costs, with nothing received.
const alone = createNode({ logLevel: 'silent', transport: createMemoryNetwork().transport() });
await alone.start();
await sender.start();
await receiver.start();
const client = sender.client(contract);
const tick = () => new Promise((r) => setImmediate(r));

type Way = 'sender alone' | 'outside a handler' | 'by a handler';

async function round(way: Way): Promise<number> {
  received = 0;
  const start = process.cpuUsage();
  for (let turn = 0; turn < N / PER_TURN; turn++) {
    if (way === 'sender alone') {
      for (let i = 0; i < PER_TURN; i++) await alone.notify(contract, 'bench.tick', data);
      await tick();
      continue;
    }
    if (way === 'by a handler') await client.burst({ n: PER_TURN });
    else for (let i = 0; i < PER_TURN; i++) await sender.notify(contract, 'bench.tick', data);
    while (received < (turn + 1) * PER_TURN) await tick();
  }
  const used = process.cpuUsage(start);
  return (used.user + used.system) / N;
}

process.stdout.write('| sent | µs of CPU per notification |\n| --- | --- |\n');
for (const way of ['sender alone', 'outside a handler', 'by a handler'] as const) {
  await round(way);
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) rounds.push(await round(way));
  const median = rounds.sort((a, b) => a - b)[2] as number;
  const who = way === 'sender alone' ? 'outside a handler, the sender alone' : `${way}, both sides`;
  process.stdout.write(`| ${who} | ${median.toFixed(2)} |\n`);
}
await alone.stop();
await sender.stop();
await receiver.stop();
