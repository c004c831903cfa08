import { createMemoryNetwork, type MemoryNetwork } from '../src/index.ts';
import { transportConformance } from './conformance/transport.ts';

let network: MemoryNetwork = createMemoryNetwork();

transportConformance({
  name: 'memory',
  create: ({ maxPayload }) => network.transport({ maxPayload }),
  crash: (_transport, nodeId) => network.crash(nodeId),
  teardown: async () => {
    network = createMemoryNetwork();
  },
});
