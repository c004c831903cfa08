/**
 * The node's promises: validation at the receiving edge, typed errors over the wire, deadlines,
 * graceful stop, middleware order, and context propagation. Local and remote paths both.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import {
  createFakeClock,
  createMemoryNetwork,
  defineContract,
  ERROR_CODES,
  type ErrorCode,
  errorCodes,
  implement,
  type Middleware,
  ParleyError,
  type ParleyNode,
  z,
} from '../src/index.ts';
import { flushMicrotasks } from '../src/runtime/clock.ts';
import { calc, calcService, deferred, testNode, waitFor, wrapTransport } from './helpers.ts';

const nodes: ParleyNode[] = [];
afterEach(async () => {
  await Promise.allSettled(nodes.splice(0).map((n) => n.stop()));
});

function track(node: ParleyNode): ParleyNode {
  nodes.push(node);
  return node;
}

const order = defineContract({
  name: 'orders',
  version: '1.0.0',
  actions: {
    place: {
      input: z.object({
        customer: z.string().min(1),
        items: z.array(z.object({ sku: z.string(), qty: z.number().int().positive() })).min(1),
      }),
      output: z.object({ id: z.string() }),
      errors: { OUT_OF_STOCK: 'FAILED_PRECONDITION' },
    },
    boom: { input: z.object({}), output: z.object({}) },
    raise: { input: z.object({ code: z.string() }), output: z.object({}) },
  },
});

const orderService = implement(order, {
  actions: {
    place: (input, ctx) => {
      if (input.items.some((i) => i.sku === 'gone'))
        throw ctx.fail('OUT_OF_STOCK', 'sku gone is sold out', { sku: 'gone' });
      return { id: `o-${input.customer}` };
    },
    boom: () => {
      throw new Error('secret database password is hunter2');
    },
    raise: ({ code }) => {
      throw new ParleyError(code as ErrorCode, `raised ${code}`, { reason: 'TEST', details: { code } });
    },
  },
});

/** How the frame of `orderService`'s `boom` handler reads in a stack trace. */
const HANDLER_FRAME = /at (Object\.)?boom \(/;

/** Two nodes on one memory network: `server` hosts the services, `caller` has none. */
async function remotePair(
  services = [orderService],
  options: { clock?: ReturnType<typeof createFakeClock> } = {},
) {
  const network = createMemoryNetwork(options.clock ? { clock: options.clock } : {});
  const server = track(testNode({ id: 'server', transport: network.transport(), services, ...options }));
  const caller = track(testNode({ id: 'caller', transport: network.transport(), ...options }));
  await server.start();
  await caller.start();
  return { server, caller, network };
}

for (const path of ['local', 'remote'] as const) {
  describe(`calls (${path})`, () => {
    async function setup() {
      if (path === 'remote') return (await remotePair()).caller;
      const node = track(testNode({ services: [orderService] }));
      await node.start();
      return node;
    }

    it('returns the handler output', async () => {
      const node = await setup();
      assert.deepEqual(await node.client(order).place({ customer: 'ann', items: [{ sku: 'a', qty: 1 }] }), {
        id: 'o-ann',
      });
    });

    it('schema-invalid input is INVALID_ARGUMENT naming every field path', async () => {
      const node = await setup();
      const bad = {
        customer: '',
        items: [
          { sku: 'a', qty: 0 },
          { sku: 7, qty: 1 },
        ],
      } as unknown as Parameters<ReturnType<typeof node.client<typeof order>>['place']>[0];
      await assert.rejects(node.client(order).place(bad), (e: unknown) => {
        assert.ok(e instanceof ParleyError);
        assert.equal(e.code, 'INVALID_ARGUMENT');
        assert.equal(e.retryable, false);
        const paths = ((e.details?.violations ?? []) as { path: string }[]).map((v) => v.path).sort();
        assert.deepEqual(paths, ['customer', 'items.0.qty', 'items.1.sku']);
        assert.match(e.message, /customer/);
        return true;
      });
    });

    it('a declared error reaches the caller with its code and reason', async () => {
      const node = await setup();
      await assert.rejects(
        node.client(order).place({ customer: 'bo', items: [{ sku: 'gone', qty: 1 }] }),
        (e: unknown) => {
          assert.ok(e instanceof ParleyError);
          assert.equal(e.code, 'FAILED_PRECONDITION');
          assert.equal(e.reason, 'OUT_OF_STOCK');
          assert.deepEqual(e.details, { sku: 'gone' });
          return true;
        },
      );
    });

    it('every code round-trips with retryable, reason and details', async () => {
      const node = await setup();
      for (const code of errorCodes) {
        await assert.rejects(node.client(order).raise({ code }), (e: unknown) => {
          assert.ok(e instanceof ParleyError);
          assert.equal(e.code, code);
          assert.equal(e.retryable, ERROR_CODES[code].retryable);
          assert.equal(e.reason, 'TEST');
          assert.deepEqual(e.details, { code });
          return true;
        });
      }
    });

    it('an unexpected throw is INTERNAL', async () => {
      const node = await setup();
      await assert.rejects(node.client(order).boom({}), (e: unknown) => {
        assert.ok(e instanceof ParleyError);
        assert.equal(e.code, 'INTERNAL');
        return true;
      });
    });

    it('a service nobody hosts is UNAVAILABLE', async () => {
      const node = await setup();
      await assert.rejects(node.client(calc).add({ a: 1, b: 2 }), (e: unknown) => {
        assert.ok(e instanceof ParleyError);
        assert.equal(e.code, 'UNAVAILABLE');
        return true;
      });
    });
  });
}

describe('errors over the wire', () => {
  it('an unexpected handler error reaches a remote caller as INTERNAL without stack or cause', async () => {
    const network = createMemoryNetwork();
    const frames: Uint8Array[] = [];
    const server = track(testNode({ id: 's', transport: network.transport(), services: [orderService] }));
    const spy = wrapTransport(network.transport(), {
      onReply: (frame) => {
        frames.push(frame);
      },
    });
    const caller = track(testNode({ id: 'c', transport: spy }));
    await server.start();
    await caller.start();
    await assert.rejects(caller.client(order).boom({}), (e: unknown) => {
      assert.ok(e instanceof ParleyError);
      assert.equal(e.code, 'INTERNAL');
      assert.equal(e.cause, undefined);
      assert.doesNotMatch(e.stack ?? '', /serve\.ts|node\.test\.ts:\d+:\d+\)\n.*boom/);
      assert.doesNotMatch(e.stack ?? '', HANDLER_FRAME, 'the handler frame stayed on the server');
      return true;
    });
    // Control: in process, the cause keeps that frame, so the assertion above can fail.
    const local = track(testNode({ services: [orderService] }));
    await local.start();
    await assert.rejects(local.client(order).boom({}), (e: unknown) => {
      assert.ok(e instanceof ParleyError);
      assert.match((e.cause as Error).stack ?? '', HANDLER_FRAME);
      return true;
    });
    const text = Buffer.from(frames[0] as Uint8Array).toString('utf8');
    const reply = JSON.parse(text) as { ok: boolean; error: Record<string, unknown> };
    assert.equal(reply.ok, false);
    assert.deepEqual(Object.keys(reply.error).sort(), ['code', 'message', 'retryable']);
    assert.doesNotMatch(text, /at .*\.ts:\d+/, 'no stack frames in the reply');
  });

  it('a malformed request frame gets an INVALID_ARGUMENT reply, and the node keeps serving', async () => {
    const network = createMemoryNetwork();
    const server = track(testNode({ id: 's', transport: network.transport(), services: [orderService] }));
    await server.start();
    const raw = network.transport();
    await raw.start(
      { id: 'raw', status: 'up', codec: 'json', services: [] },
      { onRequest: async () => new Uint8Array(), onBroadcast() {}, onNodeUp() {}, onNodeDown() {} },
    );
    for (const bytes of [
      '{not json',
      '{"__proto__":{"x":1}}',
      '[1,2]',
      '{"specversion":"1.0"}',
      '\xff\xfe',
    ]) {
      const reply = JSON.parse(
        Buffer.from(await raw.request('s', Buffer.from(bytes, 'latin1'))).toString(),
      ) as {
        ok: boolean;
        error: { code: string };
      };
      assert.equal(reply.ok, false);
      assert.equal(reply.error.code, 'INVALID_ARGUMENT', `for ${bytes}`);
    }
    await raw.stop();
  });
});

describe('deadlines (fake clock)', () => {
  it('a handler past its deadline: caller gets DEADLINE_EXCEEDED and the handler signal aborts', async () => {
    for (const path of ['local', 'remote'] as const) {
      const clock = createFakeClock();
      let signal: AbortSignal | undefined;
      const started = deferred();
      const slow = calcService({
        wait: (_i, ctx) => {
          signal = ctx.signal;
          started.resolve();
          return new Promise((_resolve, reject) => {
            ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason));
          });
        },
      });
      let caller: ParleyNode;
      if (path === 'local') {
        caller = track(testNode({ clock, services: [slow] }));
        await caller.start();
      } else {
        caller = (await remotePair([slow as never], { clock })).caller;
      }
      const call = caller.client(calc).wait({ tag: 'x' }, { timeout: 1000 });
      const outcome = call.then(
        () => 'resolved',
        (e: unknown) => e,
      );
      await started.promise;
      await clock.tick(999);
      assert.equal(signal?.aborted, false, `${path}: not aborted before the deadline`);
      await clock.tick(2);
      const error = await outcome;
      assert.ok(error instanceof ParleyError, path);
      assert.equal(error.code, 'DEADLINE_EXCEEDED', path);
      assert.equal(signal?.aborted, true, `${path}: handler signal aborted`);
      assert.equal((signal?.reason as ParleyError | undefined)?.code, 'DEADLINE_EXCEEDED');
    }
  });

  it('a call with no time left is not sent', async () => {
    const clock = createFakeClock();
    const { caller, network } = await remotePair([orderService], { clock });
    network.record = true;
    await assert.rejects(
      caller.client(order).place({ customer: 'a', items: [{ sku: 'a', qty: 1 }] }, { deadline: clock.now() }),
      (e: unknown) => e instanceof ParleyError && e.code === 'DEADLINE_EXCEEDED',
    );
    assert.equal(network.records.length, 0, 'nothing crossed the network');
  });

  it('nested calls get what is left of the deadline', async () => {
    const clock = createFakeClock();
    const seen: number[] = [];
    const inner = calcService({
      add: (_i, ctx) => {
        seen.push(ctx.deadline);
        return { sum: 0 };
      },
      echo: async ({ text }, ctx) => {
        seen.push(ctx.deadline);
        await ctx.call(calc, 'add', { a: 1, b: 1 }, { timeout: 60_000 });
        return { text, length: 0 };
      },
    });
    const node = track(testNode({ clock, services: [inner] }));
    await node.start();
    await node.client(calc).echo({ text: 'x' }, { timeout: 500 });
    assert.deepEqual(seen, [clock.now() + 500, clock.now() + 500]);
  });

  it('a caller cancelling gets CANCELLED and the handler signal aborts', async () => {
    let signal: AbortSignal | undefined;
    const started = deferred();
    const svc = calcService({
      wait: (_i, ctx) => {
        signal = ctx.signal;
        started.resolve();
        return new Promise(() => undefined);
      },
    });
    const node = track(testNode({ services: [svc], stopTimeout: 10 }));
    await node.start();
    const controller = new AbortController();
    const call = node.client(calc).wait({ tag: 'c' }, { signal: controller.signal });
    await started.promise;
    controller.abort();
    await assert.rejects(call, (e: unknown) => e instanceof ParleyError && e.code === 'CANCELLED');
    assert.equal(signal?.aborted, true);
  });
});

describe('cancellation before the call', () => {
  it('a call whose signal is already aborted is CANCELLED and the handler never runs', async () => {
    let ran = false;
    const node = track(
      testNode({
        services: [
          calcService({
            add: () => {
              ran = true;
              return { sum: 0 };
            },
          }),
        ],
      }),
    );
    await node.start();
    await assert.rejects(
      node.client(calc).add({ a: 1, b: 1 }, { signal: AbortSignal.abort() }),
      (e: unknown) => e instanceof ParleyError && e.code === 'CANCELLED',
    );
    assert.equal(ran, false);
  });
});

describe('graceful stop', () => {
  it('drains in-flight calls before closing and refuses new ones', async () => {
    const release = deferred();
    const entered = deferred();
    const svc = calcService({
      add: async ({ a, b }) => {
        entered.resolve();
        await release.promise;
        return { sum: a + b };
      },
    });
    const { server, caller } = await remotePair([svc as never]);
    const inflight = caller.client(calc).add({ a: 2, b: 3 });
    await entered.promise;
    const stopped = server.stop();
    await flushMicrotasks();
    assert.equal(server.state, 'stopping');
    assert.equal(server.inFlight(), 1);
    // Peers saw it drain: no new calls are routed to it.
    assert.equal(caller.registry.endpoints('calc').length, 0);
    release.resolve();
    assert.deepEqual(await inflight, { sum: 5 });
    await stopped;
    assert.equal(server.state, 'stopped');
  });

  it('cancels work still running at the stop timeout', async () => {
    const clock = createFakeClock();
    let signal: AbortSignal | undefined;
    const entered = deferred();
    const svc = calcService({
      wait: (_i, ctx) =>
        new Promise((resolve) => {
          signal = ctx.signal;
          entered.resolve();
          ctx.signal.addEventListener('abort', () => resolve({ aborted: true }));
        }),
    });
    const node = track(testNode({ clock, services: [svc], stopTimeout: 1000 }));
    await node.start();
    const call = node
      .client(calc)
      .wait({ tag: 'x' }, { timeout: 60_000 })
      .catch((e: unknown) => e);
    await entered.promise;
    const stopped = node.stop();
    await clock.tick(999);
    assert.equal(signal?.aborted, false);
    await clock.tick(1);
    await stopped;
    assert.equal(signal?.aborted, true);
    const error = await call;
    assert.ok(error instanceof ParleyError);
    assert.equal(error.code, 'UNAVAILABLE');
  });
});

describe('pipeline', () => {
  it('runs middleware as an onion, outbound then inbound, on the local path', async () => {
    const log: string[] = [];
    const mw = (name: string): Middleware => ({
      name,
      outbound: (next) => async (call) => {
        log.push(`${name}:out>`);
        const r = await next(call);
        log.push(`${name}:out<`);
        return r;
      },
      inbound: (next) => async (call) => {
        log.push(`${name}:in>`);
        const r = await next(call);
        log.push(`${name}:in<`);
        return r;
      },
    });
    const node = track(
      testNode({
        middleware: [mw('a'), mw('b')],
        services: [
          calcService({
            add: ({ a, b }) => {
              log.push('handler');
              return { sum: a + b };
            },
          }),
        ],
      }),
    );
    await node.start();
    await node.client(calc).add({ a: 1, b: 1 });
    assert.deepEqual(log, [
      'a:out>',
      'b:out>',
      'a:in>',
      'b:in>',
      'handler',
      'b:in<',
      'a:in<',
      'b:out<',
      'a:out<',
    ]);
  });
});

describe('context propagation', () => {
  it('nested calls share the trace and correlation; causation points at the parent', async () => {
    const seen: Record<
      string,
      {
        traceId: string;
        correlationId: string;
        causationId?: string;
        id: string;
        caller?: string;
        source?: string;
      }
    > = {};
    const record = (ctx: Parameters<Parameters<typeof implement<typeof calc>>[1]['actions']['add']>[1]) => ({
      traceId: ctx.traceId,
      correlationId: ctx.correlationId,
      id: ctx.id,
      ...(ctx.causationId === undefined ? {} : { causationId: ctx.causationId }),
      ...(ctx.caller?.service === undefined ? {} : { caller: ctx.caller.service }),
      ...(ctx.source === undefined ? {} : { source: ctx.source }),
    });
    const inner = calcService({
      add: (_i, ctx) => {
        seen.add = record(ctx);
        return { sum: 0 };
      },
      echo: async ({ text }, ctx) => {
        seen.echo = record(ctx);
        await ctx.call(calc, 'add', { a: 1, b: 1 });
        return { text, length: 0 };
      },
    });
    for (const path of ['local', 'remote'] as const) {
      const network = createMemoryNetwork();
      // Remote: echo on one node calls add on another, by making the only `calc` for the nested
      // call a remote one is not possible with one contract, so both hops run on `a` and the first
      // hop comes from `b`.
      const a = track(testNode({ id: `${path}-a`, transport: network.transport(), services: [inner] }));
      const b = track(testNode({ id: `${path}-b`, transport: network.transport() }));
      await a.start();
      await b.start();
      await (path === 'local' ? a : b).client(calc).echo({ text: 'x' });
      const { echo, add } = seen;
      assert.ok(echo && add);
      assert.equal(add.traceId, echo.traceId, `${path}: same trace`);
      assert.match(echo.traceId, /^[0-9a-f]{32}$/);
      assert.equal(add.correlationId, echo.correlationId, `${path}: same correlation`);
      assert.equal(add.causationId, echo.id, `${path}: caused by the echo request`);
      assert.equal(add.caller, 'calc', `${path}: caller service`);
      // ctx.source is the envelope's: none for a call in process, the sending node otherwise.
      assert.equal(echo.source, path === 'local' ? undefined : `/parley/${path}-b`, `${path}: source`);
    }
  });
});

describe('notifications', () => {
  it('notify reaches every live instance, including the sender, at most once', async () => {
    const { subscribe } = await import('../src/index.ts');
    const network = createMemoryNetwork();
    const got: string[] = [];
    const listener = (id: string) =>
      calcService({}, [
        subscribe(
          calc,
          'calc.done',
          (p) => {
            got.push(`${id}:${p.n}`);
          },
          { ephemeral: true },
        ),
      ]);
    const ns = ['n1', 'n2', 'n3'].map((id) =>
      track(testNode({ id, transport: network.transport(), services: [listener(id)] })),
    );
    const quiet = track(testNode({ id: 'quiet', transport: network.transport() }));
    for (const n of [...ns, quiet]) await n.start();
    await (ns[0] as ParleyNode).notify(calc, 'calc.done', { n: 7 });
    // A turn's notifications leave together at its end.
    await new Promise((r) => setImmediate(r));
    await flushMicrotasks();
    assert.deepEqual(got.sort(), ['n1:7', 'n2:7', 'n3:7']);
    await assert.rejects(quiet.notify(calc, 'calc.done', { n: 'x' as unknown as number }), (e: unknown) => {
      return e instanceof ParleyError && e.code === 'INVALID_ARGUMENT';
    });
  });

  it('a batch with malformed items: its good notifications arrive, the rest are dropped with one logged reason', async () => {
    const { subscribe, createEnvelope, createJsonCodec } = await import('../src/index.ts');
    const { pino } = await import('pino');
    const lines: { msg?: string; dropped?: number; first?: { index: number } }[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const network = createMemoryNetwork();
    const got: number[] = [];
    const service = calcService({}, [
      subscribe(calc, 'calc.done', (p) => void got.push(p.n), { ephemeral: true }),
    ]);
    const node = track(testNode({ id: 'n1', logger, transport: network.transport(), services: [service] }));
    await node.start();
    // A peer that speaks the transport but sends what it likes.
    const raw = network.transport();
    await raw.start(
      { id: 'raw', status: 'up', codec: 'json', services: [] },
      { onRequest: async () => new Uint8Array(0), onBroadcast() {}, onNodeUp() {}, onNodeDown() {} },
    );
    const batch = createEnvelope({
      source: '/parley/raw',
      type: '$notifications',
      data: [
        ['0190b6a4-1c2d-7e3f-8a4b-5c6d7e8f9a0b', 'calc.done', '', { n: 1 }],
        ['not enough'],
        [42, 'calc.done', '', { n: 2 }],
        ['0190b6a4-1c2d-7e3f-8a4b-5c6d7e8f9a0c', 'calc.done', '', { n: 3 }],
      ],
    });
    raw.broadcast(createJsonCodec().encode(batch));
    raw.broadcast(
      new TextEncoder().encode(
        '{"specversion":"1.0","id":"x","source":"/r","type":"$notifications","data":7}',
      ),
    );
    await waitFor(
      () => got.length === 2 && lines.length === 2,
      2000,
      'the good notifications and two warnings',
    );
    assert.deepEqual(got, [1, 3]);
    const items = lines.find((l) => l.msg === 'notifications dropped: malformed items in a batch');
    assert.equal(items?.dropped, 2);
    assert.equal(items?.first?.index, 1);
    assert.ok(lines.some((l) => l.msg === 'notification dropped: malformed frame'));
    await raw.stop();
  });

  it('publish without a broker is FAILED_PRECONDITION', async () => {
    const node = track(testNode({}));
    await node.start();
    await assert.rejects(node.publish(calc, 'calc.done', { n: 1 }), (e: unknown) => {
      return e instanceof ParleyError && e.code === 'FAILED_PRECONDITION';
    });
  });
});

describe('trace context from a remote caller', () => {
  const inner = defineContract({
    name: 'inner',
    version: '1.0.0',
    actions: { see: { input: z.object({}), output: z.object({ traceparent: z.string() }) } },
  });
  const outer = defineContract({
    name: 'outer',
    version: '1.0.0',
    actions: { hop: { input: z.object({}), output: z.object({ traceparent: z.string() }) } },
  });

  /** The `traceparent` a handler's own call carries on, for a request that came with `incoming`. */
  async function downstream(incoming: string): Promise<string> {
    const { createJsonCodec } = await import('../src/index.ts');
    const network = createMemoryNetwork();
    const node = track(
      testNode({
        transport: network.transport(),
        services: [
          implement(inner, { actions: { see: (_i, ctx) => ({ traceparent: ctx.traceparent }) } }),
          implement(outer, { actions: { hop: (_i, ctx) => ctx.call(inner, 'see', {}) } }),
        ],
      }),
    );
    await node.start();
    const raw = network.transport();
    await raw.start(
      { id: 'raw', status: 'up', codec: 'json', services: [] },
      { onRequest: async () => new Uint8Array(0), onBroadcast() {}, onNodeUp() {}, onNodeDown() {} },
    );
    const json = createJsonCodec();
    const frame = json.encode({
      specversion: '1.0',
      id: '0190b6a4-1c2d-7e3f-8a4b-5c6d7e8f9a0b',
      source: '/parley/raw',
      type: 'outer.hop',
      deadline: Date.now() + 5000,
      traceparent: incoming,
      data: {},
    });
    const reply = json.decode(await raw.request(node.id, frame)) as {
      ok: boolean;
      data: { traceparent: string };
    };
    await raw.stop();
    assert.equal(reply.ok, true);
    return reply.data.traceparent;
  }

  it('continues a valid trace with its sampled flag, and starts a new one for all-zero ids', async () => {
    const trace = '4bf92f3577b34da6a3ce929d0e0e4736';
    const sampled = await downstream(`00-${trace}-00f067aa0ba902b7-01`);
    assert.match(sampled, new RegExp(`^00-${trace}-[0-9a-f]{16}-01$`));
    // The caller decided not to sample: every hop after it says so too.
    const unsampled = await downstream(`00-${trace}-00f067aa0ba902b7-00`);
    assert.match(unsampled, new RegExp(`^00-${trace}-[0-9a-f]{16}-00$`));
    // W3C trace context: ids of all zeros are invalid; the callee starts a trace of its own.
    for (const invalid of [`00-${'0'.repeat(32)}-00f067aa0ba902b7-01`, `00-${trace}-${'0'.repeat(16)}-01`]) {
      const fresh = await downstream(invalid);
      assert.match(fresh, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      assert.notEqual(fresh.slice(3, 35), '0'.repeat(32));
      assert.notEqual(fresh.slice(3, 35), trace);
    }
  });
});
