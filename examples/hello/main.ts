/**
 * A first example: two nodes on an in-memory network, one serving a typed contract, the other
 * calling it. `npm start` runs it until the shop takes over.
 */
import { createMemoryNetwork, createNode, defineContract, implement, z } from '../../src/index.ts';

const greeter = defineContract({
  name: 'greeter',
  version: '1.0.0',
  actions: {
    hello: {
      input: z.object({ name: z.string().min(1) }),
      output: z.object({ greeting: z.string() }),
      idempotent: true,
    },
  },
});

const network = createMemoryNetwork();
const server = createNode({
  id: 'server',
  transport: network.transport(),
  services: [implement(greeter, { actions: { hello: ({ name }) => ({ greeting: `Hello, ${name}!` }) } })],
});
const caller = createNode({ id: 'caller', transport: network.transport() });
await server.start();
await caller.start();

const client = caller.client(greeter);
const { greeting } = await client.hello({ name: 'Parley' });
console.log(greeting);
try {
  await client.hello({ name: '' });
} catch (error) {
  console.log('invalid input is refused:', (error as Error).message);
}
await caller.stop();
await server.stop();
