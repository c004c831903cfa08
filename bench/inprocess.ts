/**
 * In-process call rate: a call to a service on the same node (the fast path), with and without
 * input validation, awaited one at a time and with 100 in flight.
 */
import { createNode, defineContract, implement, z } from 'parley';

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

export interface Sample {
  case: string;
  callsPerSecond: number;
}

export async function inProcess(calls: number): Promise<Sample[]> {
  const out: Sample[] = [];
  for (const validateInput of [false, true]) {
    const node = createNode({
      logLevel: 'silent',
      validateInput,
      services: [implement(calc, { actions: { add: ({ a, b }) => ({ sum: a + b }) } })],
    });
    await node.start();
    const client = node.client(calc);
    const input = { a: 1, b: 2, note: 'a note of about twenty' };
    const label = validateInput ? 'validated' : 'no validation';
    // Warm-up so the JIT has compiled the path before measuring.
    for (let i = 0; i < 20_000; i++) await client.add(input);

    let t = performance.now();
    for (let i = 0; i < calls; i++) await client.add(input);
    out.push({ case: `${label}, sequential`, callsPerSecond: calls / ((performance.now() - t) / 1000) });

    const batch = 100;
    const pending: Promise<unknown>[] = new Array(batch);
    t = performance.now();
    for (let i = 0; i < calls; i += batch) {
      for (let j = 0; j < batch; j++) pending[j] = client.add(input);
      await Promise.all(pending);
    }
    out.push({ case: `${label}, 100 in flight`, callsPerSecond: calls / ((performance.now() - t) / 1000) });
    await node.stop();
  }
  return out;
}
