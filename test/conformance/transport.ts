/**
 * The transport conformance suite. Any transport runs it unchanged by passing a harness; a
 * transport that fails it is not done. Each case starts real nodes on the transport and tears them
 * down. Deadlines here are real and short; the deadline logic itself is tested with a fake clock
 * in test/node.test.ts.
 */
import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';
import {
  defineContract,
  implement,
  type NodeInfo,
  ParleyError,
  type ParleyNode,
  type Transport,
  z,
} from '../../src/index.ts';
import { deferred, testNode, waitFor, wrapTransport } from '../helpers.ts';

export interface TransportHarness {
  name: string;
  /** A transport for one node, with the given largest frame. */
  create(options: { maxPayload: number }): Promise<Transport> | Transport;
  /** Makes the node behind `transport` vanish abruptly (process crash, cable cut). */
  crash(transport: Transport, nodeId: string): Promise<void> | void;
  /** Cases to skip, each with the reason. */
  skip?: Partial<Record<ConformanceCase, string>>;
  teardown?(): Promise<void>;
}

export type ConformanceCase =
  | 'request/reply'
  | 'concurrent in-flight requests'
  | 'unknown action'
  | 'deadline expiry'
  | 'payload at and over the maximum'
  | 'peer gone mid-request'
  | 'node leaving the registry'
  | 'malformed node info';

const MAX = 128 * 1024;

const svc = defineContract({
  name: 'conformance',
  version: '1.0.0',
  actions: {
    echo: { input: z.object({ pad: z.string() }), output: z.object({ length: z.number() }) },
    big: { input: z.object({ size: z.number() }), output: z.object({ pad: z.string() }) },
    gate: { input: z.object({ n: z.number() }), output: z.object({ n: z.number() }) },
    hang: { input: z.object({}), output: z.object({ aborted: z.boolean() }) },
  },
});

// The same service name, one more action: what an older server does not know.
const svcNext = defineContract({
  name: 'conformance',
  version: '2.0.0',
  actions: { ...svc.actions, added: { input: z.object({}), output: z.object({}) } },
});

export function transportConformance(harness: TransportHarness): void {
  describe(`transport conformance: ${harness.name}`, () => {
    const nodes: ParleyNode[] = [];
    const state = { gateWaiting: 0, gateOpen: deferred(), gateTarget: 0, hangStarted: deferred() };

    const service = implement(svc, {
      actions: {
        echo: ({ pad }) => ({ length: pad.length }),
        big: ({ size }) => ({ pad: 'x'.repeat(size) }),
        gate: async ({ n }) => {
          // Replies only once `gateTarget` requests are inside handlers at the same time.
          state.gateWaiting++;
          if (state.gateWaiting === state.gateTarget) state.gateOpen.resolve();
          await state.gateOpen.promise;
          return { n };
        },
        hang: (_input, ctx) =>
          new Promise((resolve) => {
            state.hangStarted.resolve();
            ctx.signal.addEventListener('abort', () => resolve({ aborted: true }));
          }),
      },
    });

    async function pair(): Promise<{
      server: ParleyNode;
      client: ParleyNode;
      serverTransport: Transport;
      sizes: number[];
    }> {
      const serverTransport = await harness.create({ maxPayload: MAX });
      const server = testNode({ transport: serverTransport, services: [service], stopTimeout: 200 });
      const sizes: number[] = [];
      const clientTransport = wrapTransport(await harness.create({ maxPayload: MAX }), {
        onRequest: (frame) => sizes.push(frame.byteLength),
      });
      const client = testNode({ transport: clientTransport, stopTimeout: 200 });
      nodes.push(server, client);
      await server.start();
      await client.start();
      await waitFor(() => client.registry.endpoints('conformance').length > 0, 5000, 'discovery');
      return { server, client, serverTransport, sizes };
    }

    afterEach(async () => {
      await Promise.allSettled(nodes.splice(0).map((n) => n.stop()));
    });
    after(async () => {
      await harness.teardown?.();
    });

    const test = (name: ConformanceCase, fn: () => Promise<void>) => {
      const reason = harness.skip?.[name];
      if (reason !== undefined) it(name, { skip: reason }, fn);
      else it(name, { timeout: 20_000 }, fn);
    };

    test('request/reply', async () => {
      const { client } = await pair();
      const out = await client.client(svc).echo({ pad: 'héllo' });
      assert.deepEqual(out, { length: 5 });
    });

    test('concurrent in-flight requests', async () => {
      const { client } = await pair();
      const n = 200;
      state.gateWaiting = 0;
      state.gateTarget = n;
      state.gateOpen = deferred();
      const calls = Array.from({ length: n }, (_, i) =>
        client.client(svc).gate({ n: i }, { timeout: 10_000 }),
      );
      const out = await Promise.all(calls);
      assert.deepEqual(
        out.map((o) => o.n),
        Array.from({ length: n }, (_, i) => i),
      );
    });

    test('unknown action', async () => {
      const { client } = await pair();
      await assert.rejects(client.client(svcNext).added({}), (e: unknown) => {
        assert.ok(e instanceof ParleyError);
        assert.equal(e.code, 'UNIMPLEMENTED');
        return true;
      });
    });

    test('deadline expiry', async () => {
      const { client } = await pair();
      state.hangStarted = deferred();
      await assert.rejects(client.client(svc).hang({}, { timeout: 150 }), (e: unknown) => {
        assert.ok(e instanceof ParleyError);
        assert.equal(e.code, 'DEADLINE_EXCEEDED');
        return true;
      });
    });

    test('payload at and over the maximum', async () => {
      const { client, sizes } = await pair();
      const probe = 70_000;
      await client.client(svc).echo({ pad: 'x'.repeat(probe) });
      const frame = sizes.at(-1) as number;
      const exact = probe + (MAX - frame);
      assert.deepEqual(await client.client(svc).echo({ pad: 'x'.repeat(exact) }), { length: exact });
      assert.equal(sizes.at(-1), MAX, 'the request frame was exactly the maximum');
      await assert.rejects(client.client(svc).echo({ pad: 'x'.repeat(exact + 1) }), (e: unknown) => {
        assert.ok(e instanceof ParleyError);
        assert.equal(e.code, 'RESOURCE_EXHAUSTED');
        return true;
      });
      // A reply over the maximum is refused too, and the caller learns why.
      await assert.rejects(client.client(svc).big({ size: MAX + 1 }), (e: unknown) => {
        assert.ok(e instanceof ParleyError);
        assert.equal(e.code, 'RESOURCE_EXHAUSTED');
        return true;
      });
      // The connection still works afterwards.
      assert.deepEqual(await client.client(svc).echo({ pad: 'ok' }), { length: 2 });
    });

    test('peer gone mid-request', async () => {
      const { server, client, serverTransport } = await pair();
      state.hangStarted = deferred();
      const call = client.client(svc).hang({}, { timeout: 15_000 });
      await state.hangStarted.promise;
      await harness.crash(serverTransport, server.id);
      await assert.rejects(call, (e: unknown) => {
        assert.ok(e instanceof ParleyError);
        assert.equal(e.code, 'UNAVAILABLE');
        return true;
      });
    });

    test('node leaving the registry', async () => {
      const { server, client } = await pair();
      assert.equal(client.registry.endpoints('conformance')[0]?.nodeId, server.id);
      await server.stop();
      await waitFor(() => client.registry.node(server.id) === undefined, 5000, 'the node to leave');
      assert.equal(client.registry.endpoints('conformance').length, 0);
      await assert.rejects(client.client(svc).echo({ pad: '' }), (e: unknown) => {
        assert.ok(e instanceof ParleyError);
        assert.equal(e.code, 'UNAVAILABLE');
        return true;
      });
    });

    test('malformed node info', async () => {
      const { server, client } = await pair();
      // A node whose transport announces what it is given, as a buggy or hostile process would.
      const forger = await harness.create({ maxPayload: MAX });
      const id = `forger-${server.id}`;
      const good = (round: string): NodeInfo => ({
        id,
        status: 'up',
        codec: 'json',
        services: [{ name: 'sentinel', version: '1.0.0', actions: ['ping'], notifications: [] }],
        labels: { round },
      });
      const handler = {
        onRequest: () => Promise.reject(new ParleyError('UNAVAILABLE', 'a forger serves nothing')),
        onBroadcast: () => undefined,
        onNodeUp: () => undefined,
        onNodeDown: () => undefined,
      };
      try {
        await forger.start(good('1'), handler);
        await waitFor(() => client.registry.node(id) !== undefined, 5000, 'the forger to be known');
        const forged: unknown[] = [
          { ...good('x'), services: [null] },
          {
            ...good('x'),
            services: [{ name: 'conformance', version: '1.0.0', actions: 'echo', notifications: [] }],
          },
          { ...good('x'), services: 'all' },
          { ...good('x'), status: 'sideways' },
          { ...good('x'), labels: { zone: 5 } },
        ];
        for (const info of forged) await forger.announce(info as NodeInfo);
        // Sent after the forged ones by the same node: once it is seen, they were dealt with
        // (dropped by the peers, or refused by a hub, which turns the node away until it says
        // something valid).
        await forger.announce(good('2'));
        await waitFor(() => client.registry.node(id)?.labels?.round === '2', 10_000, 'the valid info');
        for (const node of [client, server]) {
          for (const info of node.registry.list()) {
            assert.ok(Array.isArray(info.services) && info.services.every((s) => Array.isArray(s.actions)));
            assert.notEqual(info.labels?.round, 'x', `${node.id} took a forged info`);
          }
          assert.deepEqual(
            node.registry.endpoints('conformance').map((e) => e.nodeId),
            [server.id],
          );
        }
        assert.deepEqual(await client.client(svc).echo({ pad: 'still' }), { length: 5 });
      } finally {
        await forger.stop();
      }
    });
  });
}
