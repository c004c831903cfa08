/**
 * The node's seams to the rest of the system: the broker seam for durable events, codecs chosen
 * per node, values that cannot cross the wire, the request logger, and JSON Schema export.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { pino } from 'pino';
import {
  type Broker,
  type ConsumerHandler,
  type ConsumerSpec,
  contractJsonSchema,
  createMemoryNetwork,
  defineContract,
  type Envelope,
  implement,
  ParleyError,
  type ParleyNode,
  subscribe,
  z,
} from '../src/index.ts';
import { calc, calcService, testNode } from './helpers.ts';

const nodes: ParleyNode[] = [];
afterEach(async () => {
  await Promise.allSettled(nodes.splice(0).map((n) => n.stop()));
});

/**
 * A broker for testing the node's side of the seam: one copy per group, round robin inside a
 * group, a handler rejection is recorded as a nack. Not durable; the embedded broker is.
 */
function recordingBroker() {
  const published: { env: Envelope; key: string | undefined }[] = [];
  const nacks: unknown[] = [];
  const groups = new Map<string, { spec: ConsumerSpec; handlers: ConsumerHandler[]; next: number }>();
  const broker: Broker = {
    async publish(env, options) {
      published.push({ env, key: options?.key });
      for (const g of groups.values()) {
        if (g.spec.type !== env.type || g.handlers.length === 0) continue;
        const handler = g.handlers[g.next++ % g.handlers.length] as ConsumerHandler;
        await handler(env).catch((e: unknown) => nacks.push(e));
      }
    },
    async subscribe(spec, handler) {
      const id = `${spec.group}/${spec.type}`;
      const g = groups.get(id) ?? { spec, handlers: [], next: 0 };
      g.handlers.push(handler);
      groups.set(id, g);
      return {
        close: async () => {
          g.handlers = g.handlers.filter((h) => h !== handler);
        },
      };
    },
    async close() {},
  };
  return { broker, published, nacks, groups };
}

const orders = defineContract({
  name: 'orders',
  version: '1.0.0',
  actions: { place: { input: z.object({ id: z.string() }), output: z.object({ ok: z.boolean() }) } },
  events: { 'order.placed': { schema: z.object({ id: z.string() }), version: 2 } },
});

describe('durable events through the broker seam', () => {
  it('ctx.publish carries trace, correlation and causation; each group gets one copy', async () => {
    const { broker, published, nacks } = recordingBroker();
    const seen: {
      group: string;
      id: string;
      ctxId: string;
      traceId: string;
      causationId: string | undefined;
    }[] = [];
    let placeCtx: { traceId: string; id: string } | undefined;
    const ordersService = implement(orders, {
      actions: {
        place: async ({ id }, ctx) => {
          placeCtx = { traceId: ctx.traceId, id: ctx.id };
          await ctx.publish(orders, 'order.placed', { id }, { key: id });
          return { ok: true };
        },
      },
    });
    const consumer = (group: string) =>
      calcService({}, [
        subscribe(
          orders,
          'order.placed',
          (p, ctx) => {
            if (p.id === 'poison')
              throw new ParleyError('FAILED_PRECONDITION', 'cannot handle', { retryable: false });
            seen.push({
              group,
              id: p.id,
              ctxId: ctx.id,
              traceId: ctx.traceId,
              causationId: ctx.causationId,
            });
          },
          { group },
        ),
      ]);
    const a = testNode({ id: 'a', broker, services: [ordersService] });
    const b = testNode({
      id: 'b',
      broker,
      transport: createMemoryNetwork().transport(),
      services: [consumer('inventory')],
    });
    const c = testNode({
      id: 'c',
      broker,
      transport: createMemoryNetwork().transport(),
      services: [consumer('mail')],
    });
    nodes.push(a, b, c);
    for (const n of [a, b, c]) await n.start();
    await a.client(orders).place({ id: 'o1' });
    const env = published[0]?.env as Envelope;
    assert.equal(published[0]?.key, 'o1');
    assert.equal(env.type, 'order.placed');
    assert.equal(env.subject, 'o1');
    assert.equal(env.dataschema, 'urn:parley:orders:order.placed:v2');
    assert.equal(env.causationid, placeCtx?.id);
    assert.deepEqual(seen.map((s) => s.group).sort(), ['inventory', 'mail']);
    for (const s of seen) {
      assert.equal(s.traceId, placeCtx?.traceId, 'the consumer continues the trace');
      assert.equal(s.ctxId, env.id, "the handler's context is the event");
      assert.equal(s.causationId, placeCtx?.id, 'the event was caused by the place request');
    }
    // A payload that fails the consumer's schema, and a handler failure, both nack with a code.
    await broker.publish({ ...env, id: 'bad', data: { id: 7 } });
    await broker.publish({ ...env, id: 'poison', data: { id: 'poison' } });
    assert.deepEqual(
      nacks.map((e) => (e as ParleyError).code),
      ['INVALID_ARGUMENT', 'INVALID_ARGUMENT', 'FAILED_PRECONDITION', 'FAILED_PRECONDITION'],
    );
    assert.ok(nacks.every((e) => e instanceof ParleyError));
  });

  it('a node whose services subscribe durably needs a broker', () => {
    const svc = calcService({}, [subscribe(orders, 'order.placed', () => undefined)]);
    assert.throws(
      () => testNode({ services: [svc] }),
      (e: unknown) => e instanceof ParleyError && e.code === 'FAILED_PRECONDITION',
    );
  });

  it('stop closes the consumers before draining', async () => {
    const { broker, groups } = recordingBroker();
    const svc = calcService({}, [subscribe(orders, 'order.placed', () => undefined)]);
    const node = testNode({ broker, services: [svc] });
    await node.start();
    assert.equal(groups.get('calc/order.placed')?.handlers.length, 1, 'group defaults to the service name');
    await node.stop();
    assert.equal(groups.get('calc/order.placed')?.handlers.length, 0);
  });
});

describe('codecs per node', () => {
  it('msgpack nodes talk; a json node and a msgpack node talk too (replies in the caller codec)', async () => {
    const svc = calcService();
    for (const [serverCodec, callerCodec] of [
      ['msgpack', 'msgpack'],
      ['json', 'msgpack'],
      ['msgpack', 'json'],
    ] as const) {
      const network = createMemoryNetwork();
      const server = testNode({ transport: network.transport(), codec: serverCodec, services: [svc] });
      const caller = testNode({ transport: network.transport(), codec: callerCodec });
      nodes.push(server, caller);
      await server.start();
      await caller.start();
      assert.deepEqual(await caller.client(calc).echo({ text: 'ünï' }), { text: 'ünï', length: 3 });
      await assert.rejects(caller.client(calc).add({ a: 1, b: 'x' as unknown as number }), (e: unknown) => {
        return e instanceof ParleyError && e.code === 'INVALID_ARGUMENT';
      });
    }
  });
});

describe('values that cannot cross the wire', () => {
  const loose = defineContract({
    name: 'loose',
    version: '1.0.0',
    actions: {
      give: { input: z.object({ when: z.date() }), output: z.any() },
    },
  });
  it('are caught on the memory transport as they would be on a real one', async () => {
    const network = createMemoryNetwork();
    const svc = implement(loose, { actions: { give: () => ({ big: 10n }) } });
    const server = testNode({ transport: network.transport(), services: [svc] });
    const caller = testNode({ transport: network.transport() });
    nodes.push(server, caller);
    await server.start();
    await caller.start();
    // A Date becomes a string in JSON: the receiving edge says so.
    await assert.rejects(caller.client(loose).give({ when: new Date() }), (e: unknown) => {
      return e instanceof ParleyError && e.code === 'INVALID_ARGUMENT' && /when/.test(e.message);
    });
    // The same call in-process passes the Date through: only a real wire shows the difference.
    const local = testNode({ services: [svc] });
    nodes.push(local);
    await local.start();
    assert.deepEqual(await local.client(loose).give({ when: new Date() }), { big: 10n });
    // A BigInt cannot be encoded: the caller gets INTERNAL saying the reply could not be encoded.
    const bigint = implement(loose, { actions: { give: () => ({ big: 10n }) } });
    const n2 = createMemoryNetwork();
    const s2 = testNode({ transport: n2.transport(), services: [bigint], validateInput: false });
    const c2 = testNode({ transport: n2.transport() });
    nodes.push(s2, c2);
    await s2.start();
    await c2.start();
    await assert.rejects(c2.client(loose).give({ when: 'x' as unknown as Date }), (e: unknown) => {
      return e instanceof ParleyError && e.code === 'INTERNAL' && /cannot be encoded/.test(e.message);
    });
  });
});

describe('request logger', () => {
  it('ctx.log carries reqId, action and traceId', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const svc = calcService({
      add: (_i, ctx) => {
        ctx.log.info('adding');
        return { sum: 0 };
      },
    });
    const node = testNode({ logger, services: [svc] });
    nodes.push(node);
    await node.start();
    await node.client(calc).add({ a: 1, b: 2 });
    const line = lines.find((l) => l.msg === 'adding');
    assert.equal(line?.action, 'calc.add');
    assert.match(String(line?.reqId), /^[0-9a-f-]{36}$/);
    assert.match(String(line?.traceId), /^[0-9a-f]{32}$/);
  });
});

describe('contract checks and JSON Schema', () => {
  it('bad names fail at definition time', () => {
    const base = { version: '1', actions: {} };
    assert.throws(() => defineContract({ ...base, name: 'Bad Name' }), ParleyError);
    assert.throws(
      () =>
        defineContract({
          ...base,
          name: 'x',
          actions: { 'bad-action': { input: z.object({}), output: z.object({}) } },
        }),
      ParleyError,
    );
    assert.throws(
      () => defineContract({ ...base, name: 'x', events: { nodot: { schema: z.object({}), version: 1 } } }),
      ParleyError,
    );
    assert.throws(
      () => defineContract({ ...base, name: 'x', events: { 'a.b': { schema: z.object({}), version: 0 } } }),
      ParleyError,
    );
  });

  it('exports JSON Schema for inputs (before defaults), outputs and events', () => {
    const schema = contractJsonSchema(orders);
    const input = schema.actions.place?.input as { properties: Record<string, unknown>; required: string[] };
    assert.deepEqual(input.required, ['id']);
    assert.deepEqual(input.properties.id, { type: 'string' });
    assert.equal(schema.events['order.placed']?.version, 2);
  });
});
