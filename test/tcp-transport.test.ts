import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createHub, type Hub } from '../src/hub/hub.ts';
import { ParleyError } from '../src/index.ts';
import { createTcpTransport, type TcpTransport } from '../src/transport/tcp/tcp-transport.ts';
import { transportConformance } from './conformance/transport.ts';
import { calc, calcService, testNode, waitFor } from './helpers.ts';

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

describe('tcp: the callee hears when the caller gives up', () => {
  it('a cancelled call aborts the handler’s ctx.signal with CANCELLED; so does a caller that disconnects', async () => {
    const h = await getHub();
    const seen: string[] = [];
    const server = testNode({
      id: 'cancel-server',
      transport: createTcpTransport({ hub: h.url }),
      services: [
        calcService({
          wait: async ({ tag }, ctx) => {
            await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
            seen.push(`${tag}:${(ctx.signal.reason as ParleyError).code}`);
            return { aborted: true };
          },
        }),
      ],
    });
    const caller = testNode({ id: 'cancel-caller', transport: createTcpTransport({ hub: h.url }) });
    await server.start();
    await caller.start();
    await waitFor(() => caller.registry.endpoints('calc').length === 1);
    const controller = new AbortController();
    const call = caller.client(calc).wait({ tag: 'cancelled' }, { signal: controller.signal });
    await new Promise((r) => setTimeout(r, 50));
    controller.abort();
    await assert.rejects(call, (e: unknown) => e instanceof ParleyError && e.code === 'CANCELLED');
    await waitFor(() => seen.includes('cancelled:CANCELLED'), 2000, 'the handler was told');

    const crasher = createTcpTransport({ hub: h.url });
    const leaving = testNode({ id: 'cancel-leaving', transport: crasher });
    await leaving.start();
    await waitFor(() => leaving.registry.endpoints('calc').length === 1);
    void leaving
      .client(calc)
      .wait({ tag: 'gone' })
      .catch(() => undefined);
    await new Promise((r) => setTimeout(r, 50));
    crasher.destroy();
    await waitFor(() => seen.includes('gone:CANCELLED'), 2000, 'the handler of a vanished caller was told');
    await caller.stop();
    await server.stop();
  });
});
