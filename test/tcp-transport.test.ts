import { after } from 'node:test';
import { createHub, type Hub } from '../src/hub/hub.ts';
import { createTcpTransport, type TcpTransport } from '../src/transport/tcp/tcp-transport.ts';
import { transportConformance } from './conformance/transport.ts';

let hub: Hub | undefined;
const getHub = async () => {
  hub ??= await createHub({ maxPayload: 1024 * 1024 });
  return hub;
};
after(async () => {
  await hub?.close();
});

transportConformance({
  name: 'tcp (via hub)',
  create: async ({ maxPayload }) => createTcpTransport({ hub: (await getHub()).url, maxPayload }),
  crash: (transport) => (transport as TcpTransport).destroy(),
});
