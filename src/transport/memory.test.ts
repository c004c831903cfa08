import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createMemoryNetwork } from './memory.ts';
import type { NodeInfo, Transport, TransportHandler } from './transport.ts';

const info = (id: string): NodeInfo => ({ id, status: 'up', codec: 'json', services: [] });
const quiet: TransportHandler = {
  onRequest: async () => new Uint8Array(0),
  onBroadcast: () => {},
  onNodeUp: () => {},
  onNodeDown: () => {},
};
/** The callers a node keeps a table of calls for (private; read here to show nothing leaks). */
const tables = (t: Transport) => [...(t as unknown as { running: Map<string, unknown> }).running.keys()];

describe('memory transport: what it keeps of the calls it serves', () => {
  it("keeps a caller's table between its calls and drops it when the caller leaves", async () => {
    const network = createMemoryNetwork();
    const callee = network.transport();
    const caller = network.transport();
    let finish = () => {};
    const held = new Promise<void>((resolve) => {
      finish = resolve;
    });
    await callee.start(info('callee'), {
      ...quiet,
      async onRequest() {
        await held;
        return new TextEncoder().encode('ok');
      },
    });
    await caller.start(info('caller'), quiet);
    const answer = caller.request('callee', new TextEncoder().encode('x'));
    while (tables(callee).length === 0) await new Promise((r) => setImmediate(r));
    assert.deepEqual(tables(callee), ['caller']);
    finish();
    assert.equal(new TextDecoder().decode(await answer), 'ok');
    // The call ended; the caller is still here: its table waits for the next call.
    assert.deepEqual(tables(callee), ['caller']);
    await caller.stop();
    assert.deepEqual(tables(callee), []);
    await callee.stop();
  });
});
