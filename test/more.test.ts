/**
 * The node's seams to the rest of the system: the broker seam for durable events, codecs chosen
 * per node, values that cannot cross the wire, the request logger, and JSON Schema export.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { pino } from 'pino';
import {
  Bulkhead,
  contractJsonSchema,
  createEmbeddedBroker,
  createEnvelope,
  createFakeClock,
  createMemoryNetwork,
  defineContract,
  implement,
  ParleyError,
  type ParleyNode,
  subscribe,
  z,
} from '../src/index.ts';
import { calc, calcService, tempDir, testNode, ticksUntil, waitFor } from './helpers.ts';

const dir = tempDir('more');

const nodes: ParleyNode[] = [];
afterEach(async () => {
  await Promise.allSettled(nodes.splice(0).map((n) => n.stop()));
});

const orders = defineContract({
  name: 'orders',
  version: '1.0.0',
  actions: { place: { input: z.object({ id: z.string() }), output: z.object({ ok: z.boolean() }) } },
  events: { 'order.placed': { schema: z.object({ id: z.string() }), version: 2 } },
});

describe('durable events through a node', () => {
  it('ctx.publish carries trace, correlation and causation; each group gets one copy; bad ones dead-letter', async () => {
    const broker = createEmbeddedBroker({ path: ':memory:' });
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
            seen.push({ group, id: p.id, ctxId: ctx.id, traceId: ctx.traceId, causationId: ctx.causationId });
          },
          { group },
        ),
      ]);
    // Three nodes share one broker (as three processes share one broker file or server).
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
    for (const n of [a, b, c]) await n.start();
    await a.client(orders).place({ id: 'o1' });
    await waitFor(() => seen.length === 2, 5000, 'both groups');
    assert.deepEqual(seen.map((s) => s.group).sort(), ['inventory', 'mail']);
    const [env] = (await broker.deadLetters.list()).map((d) => d.envelope);
    assert.equal(env, undefined, 'nothing dead-lettered yet');
    for (const s of seen) {
      assert.equal(s.traceId, placeCtx?.traceId, 'the consumer continues the trace');
      assert.equal(s.causationId, placeCtx?.id, 'the event was caused by the place request');
    }
    // A payload that fails the consumer's schema, and a permanent handler failure: dead-letter at once.
    await a.publish(orders, 'order.placed', { id: 'poison' });
    const bad = createEnvelope({ source: '/test', type: 'order.placed', data: { id: 7 } });
    await broker.publish(bad);
    await waitFor(() => broker.stats().dead === 4, 5000, 'four dead letters');
    const dead = await broker.deadLetters.list();
    assert.deepEqual(dead.map((d) => `${d.group}:${d.code}:${d.attempts}`).sort(), [
      'inventory:FAILED_PRECONDITION:1',
      'inventory:INVALID_ARGUMENT:1',
      'mail:FAILED_PRECONDITION:1',
      'mail:INVALID_ARGUMENT:1',
    ]);
    for (const n of [a, b, c]) await n.stop();
  });

  it('stop waits for a hung durable handler only up to stopTimeout; the message comes back', async () => {
    const path = dir.file('hung.db');
    const clock = createFakeClock();
    let started = false;
    const hung = calcService({}, [
      subscribe(
        orders,
        'order.placed',
        () => {
          started = true;
          return new Promise<void>(() => undefined); // ignores its signal, never ends
        },
        // One attempt: a stop must not spend it (until 2026-12-03 this message was dead-lettered).
        { group: 'slow', maxAttempts: 1 },
      ),
    ]);
    const node = testNode({
      clock,
      broker: createEmbeddedBroker({ path, clock }),
      services: [hung],
      stopTimeout: 1000,
    });
    await node.start();
    await node.publish(orders, 'order.placed', { id: 'o7' });
    for (let i = 0; i < 100 && !started; i++) await clock.tick(10);
    assert.ok(started);
    let stopped = false;
    const stopping = node.stop().then(() => {
      stopped = true;
    });
    for (let waited = 0; waited < 1200 && !stopped; waited += 50) await clock.tick(50);
    assert.ok(stopped, 'stopped within stopTimeout, not at the handler deadline (10 s)');
    await stopping;
    // Not lost: the delivery went back as it was, and a consumer of the group gets it again.
    const again = createEmbeddedBroker({ path });
    try {
      const attempts: number[] = [];
      await again.subscribe(
        { topic: 'order.placed', group: 'slow', maxAttempts: 1 },
        async (d) => void attempts.push(d.attempt),
      );
      await waitFor(() => attempts.length > 0, 5000, 'redelivery');
      assert.deepEqual(attempts, [1]);
      assert.deepEqual(await again.deadLetters.list({ topic: 'order.placed' }), []);
    } finally {
      await again.close();
    }
  });

  it('an event schema with transforms and defaults runs once, on the receiver (notify and publish)', async () => {
    const priced = defineContract({
      name: 'prices',
      version: '1.0.0',
      actions: {},
      events: {
        'price.set': {
          version: 1,
          schema: z.object({ cents: z.string().transform(Number), note: z.string().default('none') }),
        },
        'count.doubled': { version: 1, schema: z.object({ n: z.number().transform((n) => n * 2) }) },
      },
    });
    const got: unknown[] = [];
    const durable: unknown[] = [];
    const listener = implement(priced, {
      actions: {},
      on: [
        subscribe(priced, 'price.set', (p) => void got.push(p), { ephemeral: true }),
        subscribe(priced, 'count.doubled', (p) => void got.push(p), { ephemeral: true }),
        subscribe(priced, 'count.doubled', (p) => void durable.push(p), { group: 'doubled' }),
      ],
    });
    const network = createMemoryNetwork();
    const broker = createEmbeddedBroker({ path: ':memory:' });
    const receiver = testNode({ transport: network.transport(), broker, services: [listener] });
    const sender = testNode({ transport: network.transport(), broker });
    nodes.push(receiver, sender);
    await receiver.start();
    await sender.start();
    // The sender passes the schema's input form, and its check still refuses a bad one.
    await sender.notify(priced, 'price.set', { cents: '250' });
    await sender.notify(priced, 'count.doubled', { n: 3 });
    await sender.publish(priced, 'count.doubled', { n: 5 });
    await assert.rejects(
      sender.notify(priced, 'price.set', { cents: 250 as unknown as string }),
      (e: unknown) => {
        return e instanceof ParleyError && e.code === 'INVALID_ARGUMENT';
      },
    );
    await waitFor(() => got.length === 2 && durable.length === 1, 5000, 'the events');
    assert.deepEqual(got, [{ cents: 250, note: 'none' }, { n: 6 }]);
    assert.deepEqual(durable, [{ n: 10 }]);
  });

  it('a bulkhead shared by durable handlers holds back what it has no room for, without spending attempts', async () => {
    const clock = createFakeClock();
    const broker = createEmbeddedBroker({ path: ':memory:', clock });
    const bulkhead = new Bulkhead('billing', { maxConcurrent: 2 }, clock);
    const handled = new Set<string>();
    let running = 0;
    let most = 0;
    const billing = calcService({}, [
      subscribe(
        orders,
        'order.placed',
        async (order) => {
          most = Math.max(most, ++running);
          await new Promise<void>((r) => clock.setTimeout(r, 50));
          running--;
          handled.add(order.id);
        },
        { group: 'billing', maxAttempts: 3, backoff: { initial: 10, max: 20 }, bulkhead },
      ),
    ]);
    const node = testNode({ clock, broker, services: [billing] });
    nodes.push(node);
    await node.start();
    for (let i = 0; i < 10; i++) await node.publish(orders, 'order.placed', { id: `o${i}` });
    for (let i = 0; i < 300 && handled.size < 10; i++) await clock.tick(10);
    // The consumer leased up to 64 at once; the bulkhead ran two at a time and held the rest back.
    assert.equal(handled.size, 10);
    assert.equal(most, 2);
    assert.deepEqual(await broker.deadLetters.list(), []);
  });

  it('a node whose start fails at a refused subscription leaves none of its subscriptions consuming', async () => {
    const clock = createFakeClock();
    const broker = createEmbeddedBroker({ path: ':memory:', clock });
    const handled: string[] = [];
    const billing = calcService({}, [
      subscribe(orders, 'order.placed', (o) => void handled.push(o.id), { group: 'billing' }),
      subscribe(orders, 'order.placed', () => undefined, { group: 'audit', maxAttempts: 0 }),
    ]);
    const node = testNode({ clock, broker, services: [billing] });
    await assert.rejects(
      node.start(),
      (e: unknown) => e instanceof ParleyError && e.code === 'INVALID_ARGUMENT',
    );
    // The group exists (its consumer subscribed before the refusal): a message waits for it.
    await broker.publish(createEnvelope({ source: '/t', type: 'order.placed', data: { id: 'o1' } }));
    for (let i = 0; i < 20; i++) await clock.tick(10); // four polls' worth of broker time
    // Until 2026-12-03 the first subscription stayed open and the failed node handled the message.
    assert.deepEqual(handled, []);
    // Left for a node that runs: the next consumer of the group gets it.
    const later: string[] = [];
    await broker.subscribe({ topic: 'order.placed', group: 'billing' }, async (d) => {
      later.push(d.envelope.id);
    });
    await ticksUntil(clock, () => later.length === 1, 'the message, for the next consumer');
    await broker.close();
  });

  /**
   * A durable handler that takes 45 s, with a budget of 60 s given by its subscription or by its
   * node: how many times it runs, and how many runs overlap, over 60 s of fake time.
   */
  async function slowHandlerRuns(budget: { timeout: number } | { defaultTimeout: number }) {
    const clock = createFakeClock();
    const broker = createEmbeddedBroker({ path: ':memory:', clock });
    let runs = 0;
    let running = 0;
    let most = 0;
    const slow = calcService({}, [
      subscribe(
        orders,
        'order.placed',
        async () => {
          runs++;
          most = Math.max(most, ++running);
          await new Promise<void>((r) => clock.setTimeout(r, 45_000));
          running--;
        },
        { group: 'slow', ...('timeout' in budget ? budget : {}) },
      ),
    ]);
    const node = testNode({ clock, broker, services: [slow], ...('timeout' in budget ? {} : budget) });
    nodes.push(node);
    await node.start();
    await node.publish(orders, 'order.placed', { id: 'o1' });
    for (let i = 0; i < 600; i++) await clock.tick(100);
    return { runs, most, pending: broker.stats().pending };
  }

  it('a durable handler given more time than the default lease keeps its message that long: it runs once', async () => {
    // Until 2026-12-03 the lease was the broker's 30 s whatever the timeout: at 30 s the message
    // was leased again while its handler ran, and ran a second time alongside the first.
    assert.deepEqual(await slowHandlerRuns({ timeout: 60_000 }), { runs: 1, most: 1, pending: 0 });
  });

  it('a durable handler under a node-wide defaultTimeout longer than the default lease keeps its message that long', async () => {
    // Until 2026-12-03 only a subscription's own `timeout` lengthened the lease: under the node's
    // 60 s budget the message was leased again at 30 s, and ran twice at once.
    assert.deepEqual(await slowHandlerRuns({ defaultTimeout: 60_000 }), { runs: 1, most: 1, pending: 0 });
  });

  it('a node whose services subscribe durably needs a broker', () => {
    const svc = calcService({}, [subscribe(orders, 'order.placed', () => undefined)]);
    assert.throws(
      () => testNode({ services: [svc] }),
      (e: unknown) => e instanceof ParleyError && e.code === 'FAILED_PRECONDITION',
    );
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

  it('a remote handler bug is logged with its stack on the server; the caller gets INTERNAL', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const network = createMemoryNetwork();
    const server = testNode({
      logger,
      transport: network.transport(),
      services: [
        calcService({
          add: () => {
            throw new TypeError('cannot read sku of undefined');
          },
          echo: () => {
            throw new ParleyError('NOT_FOUND', 'a decision, not a bug');
          },
        }),
      ],
    });
    const caller = testNode({ transport: network.transport() });
    nodes.push(server, caller);
    await server.start();
    await caller.start();
    await assert.rejects(
      caller.client(calc).add({ a: 1, b: 2 }),
      (e: unknown) => e instanceof ParleyError && e.code === 'INTERNAL',
    );
    await assert.rejects(
      caller.client(calc).echo({ text: 'x' }),
      (e: unknown) => e instanceof ParleyError && e.code === 'NOT_FOUND',
    );
    const logged = lines.filter((l) => l.msg === 'handler failed unexpectedly');
    assert.equal(logged.length, 1, 'the bug is logged, the decision is not');
    const err = logged[0]?.err as { type: string; stack: string } | undefined;
    assert.equal(err?.type, 'TypeError');
    assert.match(err?.stack ?? '', /cannot read sku of undefined\n\s+at /);
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
