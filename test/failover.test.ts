/**
 * A node lost mid-call: calls in flight to it fail fast with UNAVAILABLE, and when running them
 * twice is safe (idempotent action, or an idempotency key) they go to another instance. A node that
 * hangs without closing its connections is dropped by the hub within its heartbeat bound.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { createHub, createMemoryNetwork, createTcpTransport, ParleyError } from '../src/index.ts';
import { calc, calcService, deferred, testNode, waitFor } from './helpers.ts';

describe('failover', () => {
  async function cluster() {
    const net = createMemoryNetwork();
    const hang = deferred();
    // `a` takes calls and never answers; `b` answers.
    const a = testNode({
      id: 'a',
      transport: net.transport(),
      services: [
        calcService({
          add: () => hang.promise.then(() => ({ sum: -1 })),
          wait: () => hang.promise.then(() => ({ aborted: false })),
        }),
      ],
    });
    const b = testNode({ id: 'b', transport: net.transport(), services: [calcService()] });
    // Round robin (the default): of two calls, one goes to each.
    const caller = testNode({ id: 'caller', transport: net.transport() });
    for (const n of [a, b, caller]) await n.start();
    await waitFor(() => caller.registry.endpoints('calc').length === 2);
    return {
      net,
      a,
      b,
      caller,
      stop: async () => Promise.all([caller.stop(), b.stop(), a.stop().catch(() => undefined)]),
    };
  }

  it('an idempotent call in flight to a crashed instance is answered by another', async () => {
    const { net, caller, stop } = await cluster();
    const calls = [caller.client(calc).add({ a: 1, b: 1 }), caller.client(calc).add({ a: 2, b: 2 })];
    await new Promise((r) => setTimeout(r, 20));
    net.crash('a');
    assert.deepEqual(await Promise.all(calls), [{ sum: 2 }, { sum: 4 }]);
    await stop();
  });

  it('a call that is not safe to repeat fails with UNAVAILABLE, at once, not at its deadline', async () => {
    const { net, caller, stop } = await cluster();
    const started = Date.now();
    const results = Promise.allSettled([
      caller.client(calc).wait({ tag: 'x' }, { timeout: 10_000 }),
      caller.client(calc).wait({ tag: 'y' }, { timeout: 10_000 }),
    ]);
    await new Promise((r) => setTimeout(r, 20));
    net.crash('a');
    const [x, y] = await results;
    const failed = [x, y].filter((r) => r.status === 'rejected');
    assert.equal(failed.length, 1, 'the call that was on a fails; the one on b succeeds');
    const reason = (failed[0] as PromiseRejectedResult).reason;
    assert.ok(reason instanceof ParleyError && reason.code === 'UNAVAILABLE');
    assert.ok(Date.now() - started < 2000);
    await stop();
  });

  it('with an idempotency key, a call that is not idempotent by contract may go to another instance', async () => {
    const { net, caller, stop } = await cluster();
    const calls = [
      caller.client(calc).wait({ tag: 'x' }, { idempotencyKey: 'k1' }),
      caller.client(calc).wait({ tag: 'y' }, { idempotencyKey: 'k2' }),
    ];
    await new Promise((r) => setTimeout(r, 20));
    net.crash('a');
    assert.deepEqual(await Promise.all(calls), [{ aborted: false }, { aborted: false }]);
    await stop();
  });
});

describe('a node that hangs', () => {
  it('is dropped by the hub within its heartbeat bound, and calls in flight to it fail with UNAVAILABLE', {
    timeout: 30_000,
  }, async () => {
    const hub = await createHub({ heartbeatTimeout: 600 });
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/tcp-node-child.ts', hub.url], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
      const [first] = (await once(lines, 'line')) as [string];
      assert.equal(first, 'ready');
      const caller = testNode({
        id: 'caller',
        transport: createTcpTransport({ hub: hub.url, heartbeatInterval: 100 }),
      });
      await caller.start();
      await waitFor(() => caller.registry.endpoints('calc').length === 1);
      const call = caller.client(calc).wait({ tag: 'x' }, { timeout: 20_000 });
      await new Promise((r) => setTimeout(r, 100));
      child.kill('SIGSTOP'); // alive, connections open, silent
      const started = Date.now();
      await assert.rejects(call, (e: unknown) => e instanceof ParleyError && e.code === 'UNAVAILABLE');
      const took = Date.now() - started;
      // Bound: heartbeat timeout + one sweep (timeout / 4) + delivery.
      assert.ok(took < 600 + 150 + 500, `noticed in ${took} ms`);
      assert.deepEqual(hub.nodes(), ['caller']);
      await caller.stop();
    } finally {
      child.kill('SIGKILL');
      await hub.close();
    }
  });
});
