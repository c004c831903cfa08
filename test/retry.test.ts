/**
 * Retries and deadlines: attempts bounded, only retryable codes and safe calls, never past the
 * deadline, full-jitter delays, the retry budget under total failure, a three-tier chain with and
 * without the budget, and deadline propagation across nodes over the memory and TCP transports.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  backoffDelay,
  createFakeClock,
  createHub,
  createMemoryNetwork,
  createTcpTransport,
  defineContract,
  type FakeClock,
  type Hub,
  implement,
  type Middleware,
  ParleyError,
  RetryBudget,
  retry,
  type Transport,
  z,
} from '../src/index.ts';
import { composeOutbound, type OutboundCall } from '../src/runtime/pipeline.ts';
import { createRandom } from '../src/transport/faults.ts';
import { testNode, waitFor } from './helpers.ts';

const flaky = defineContract({
  name: 'flaky',
  version: '1.0.0',
  actions: {
    get: {
      input: z.object({ code: z.string() }),
      output: z.object({ ok: z.boolean() }),
      idempotent: true,
      errors: { GONE: 'NOT_FOUND' },
    },
    put: { input: z.object({ code: z.string() }), output: z.object({ ok: z.boolean() }) },
  },
});

async function cluster(middleware: (clock: FakeClock) => Middleware[], clock = createFakeClock()) {
  const net = createMemoryNetwork({ clock });
  let attempts = 0;
  const fail = (code: string, ctx: { fail(r: 'GONE'): ParleyError }) => {
    attempts++;
    if (code === 'ok') return { ok: true };
    if (code === 'GONE') throw ctx.fail('GONE');
    throw new ParleyError(code as 'UNAVAILABLE', `failing with ${code}`);
  };
  const server = testNode({
    id: 'server',
    clock,
    transport: net.transport(),
    services: [
      implement(flaky, {
        actions: {
          get: ({ code }, ctx) => fail(code, ctx),
          put: ({ code }, ctx) => fail(code, ctx as never),
        },
      }),
    ],
  });
  const caller = testNode({ id: 'caller', clock, transport: net.transport(), middleware: middleware(clock) });
  await server.start();
  await caller.start();
  return {
    clock,
    client: caller.client(flaky),
    attempts: () => attempts,
    async run<T>(p: Promise<T>): Promise<T | ParleyError> {
      const settled = p.then(
        (v) => v,
        (e: unknown) => ParleyError.from(e),
      );
      for (let i = 0; i < 400; i++) await clock.tick(5);
      return settled;
    },
    stop: async () => {
      const s = Promise.all([caller.stop(), server.stop()]);
      await clock.tick(20_000);
      await s;
    },
  };
}

describe('retry', () => {
  it('retries a retryable failure of a safe call, at most maxAttempts times', async () => {
    const c = await cluster((clock) => [retry({ clock, maxAttempts: 4, budget: false, random: () => 0.5 })]);
    const r = await c.run(c.client.get({ code: 'UNAVAILABLE' }));
    assert.ok(r instanceof ParleyError && r.code === 'UNAVAILABLE');
    assert.equal(c.attempts(), 4);
    await c.stop();
  });

  it('does not retry caller errors, declared domain errors or calls that are not safe to repeat', async () => {
    const c = await cluster((clock) => [retry({ clock, maxAttempts: 4, budget: false })]);
    for (const [call, expected] of [
      [() => c.client.get({ code: 'INVALID_ARGUMENT' }), 1],
      [() => c.client.get({ code: 'GONE' }), 1],
      [() => c.client.put({ code: 'UNAVAILABLE' }), 1],
      [() => c.client.put({ code: 'UNAVAILABLE' }, { idempotencyKey: 'k' }), 4],
      [() => c.client.get({ code: 'UNAVAILABLE' }, { retry: false }), 1],
      [() => c.client.get({ code: 'UNAVAILABLE' }, { retry: { maxAttempts: 2 } }), 2],
    ] as const) {
      const before = c.attempts();
      await c.run(call());
      assert.equal(c.attempts() - before, expected);
    }
    await c.stop();
  });

  it('never starts an attempt that would begin after the deadline', async () => {
    const c = await cluster((clock) => [
      retry({
        clock,
        maxAttempts: 50,
        budget: false,
        backoff: { initial: 100, max: 100 },
        random: () => 0.99,
      }),
    ]);
    const started = c.clock.now();
    const r = await c.run(c.client.get({ code: 'UNAVAILABLE' }, { timeout: 350 }));
    assert.ok(r instanceof ParleyError && r.code === 'UNAVAILABLE', 'the last real error, not a timeout');
    assert.equal(c.attempts(), 4, 'attempts at 0, ~99, ~198, ~297 ms; the next would start after 350');
    assert.ok(c.clock.now() - started >= 297);
    await c.stop();
  });

  it('delays follow full jitter: uniform over [0, ceiling)', () => {
    const random = createRandom(7);
    const backoff = { initial: 100, max: 10_000, multiplier: 2 };
    for (const attempt of [1, 3, 6]) {
      const ceiling = Math.min(backoff.max, backoff.initial * 2 ** (attempt - 1));
      const samples = Array.from({ length: 20_000 }, () => backoffDelay(backoff, attempt, random));
      assert.ok(samples.every((d) => d >= 0 && d < ceiling));
      const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
      assert.ok(Math.abs(mean - ceiling / 2) < ceiling * 0.02, `mean ${mean} ≈ ${ceiling / 2}`);
      for (let q = 0; q < 4; q++) {
        const share =
          samples.filter((d) => d >= (q * ceiling) / 4 && d < ((q + 1) * ceiling) / 4).length /
          samples.length;
        assert.ok(Math.abs(share - 0.25) < 0.02, `quarter ${q}: ${share}`);
      }
    }
  });

  it('hands every call the same recover function, told which call failed', async () => {
    // A closure per call stored on the call made calls with the retry 35% dearer (see
    // OutboundCall.recover); the shared function must still retry the call it is told.
    const clock = createFakeClock();
    const handed: unknown[] = [];
    const attempts = new Map<string, number>();
    const dispatch = (call: OutboundCall): Promise<unknown> => {
      const recover = call.recover;
      call.recover = undefined; // taken, as the node's dispatch takes it
      const id = (call.input as { id: string }).id;
      const n = (attempts.get(id) ?? 0) + 1;
      attempts.set(id, n);
      if (n === 1) {
        handed.push(recover);
        assert.ok(recover !== undefined, 'a first attempt right before the dispatch gets recover');
        return recover(new ParleyError('UNAVAILABLE', `${id} failed once`), call);
      }
      assert.equal(recover, undefined, 'a retry goes through the promise path');
      return Promise.resolve(`${id} answered`);
    };
    const call = composeOutbound(
      [retry({ clock, maxAttempts: 3, budget: false, random: () => 0 })],
      dispatch,
    );
    const make = (id: string): OutboundCall => ({
      service: 'flaky',
      action: 'get',
      input: { id },
      deadline: clock.now() + 1000,
      idempotent: true,
      options: {},
      parent: undefined,
      tried: [],
      recover: undefined,
    });
    assert.deepEqual(await Promise.all([call(make('a')), call(make('b'))]), ['a answered', 'b answered']);
    assert.deepEqual(
      [...attempts],
      [
        ['a', 2],
        ['b', 2],
      ],
    );
    assert.equal(handed.length, 2);
    assert.equal(handed[0], handed[1], 'one function for both calls');
  });

  it('under 100% failure the budget keeps retries within ratio × calls + floor', async () => {
    const clock = createFakeClock();
    const budget = new RetryBudget({ ratio: 0.1, minPerSecond: 5, windowMs: 10_000, clock });
    const c = await cluster((clock) => [retry({ clock, maxAttempts: 3, budget, random: () => 0 })], clock);
    const calls = Array.from({ length: 1000 }, () =>
      c.client.get({ code: 'UNAVAILABLE' }).catch(() => undefined),
    );
    await c.run(Promise.all(calls));
    const { calls: n, retries } = budget.counts();
    assert.equal(n, 1000);
    assert.ok(retries <= 0.1 * 1000 + 5 * 10, `retries ${retries}`);
    assert.equal(c.attempts(), 1000 + retries);
    assert.ok(retries / n <= 0.15, `retry/request ratio ${retries / n}`);
    await c.stop();
  });
});

describe('three tiers, A → B → C, C always failing', () => {
  const tier = (name: string) =>
    defineContract({
      name,
      version: '1.0.0',
      actions: { go: { input: z.object({}), output: z.object({}), idempotent: true } },
    });
  const b = tier('tier-b');
  const c = tier('tier-c');

  async function run(withBudget: boolean) {
    const clock = createFakeClock();
    const net = createMemoryNetwork({ clock });
    let reachedC = 0;
    const policy = () => [
      retry({
        maxAttempts: 3,
        clock,
        random: () => 0,
        budget: withBudget ? new RetryBudget({ ratio: 0.1, minPerSecond: 1, clock }) : false,
      }),
    ];
    const nodeC = testNode({
      id: 'c',
      clock,
      transport: net.transport(),
      services: [
        implement(c, {
          actions: {
            go: () => {
              reachedC++;
              throw new ParleyError('UNAVAILABLE', 'C is down');
            },
          },
        }),
      ],
    });
    const nodeB = testNode({
      id: 'b',
      clock,
      transport: net.transport(),
      middleware: policy(),
      services: [implement(b, { actions: { go: (_i, ctx) => ctx.call(c, 'go', {}) } })],
    });
    const nodeA = testNode({ id: 'a', clock, transport: net.transport(), middleware: policy() });
    for (const n of [nodeC, nodeB, nodeA]) await n.start();
    const requests = 200;
    const all = Promise.all(
      Array.from({ length: requests }, () =>
        nodeA
          .client(b)
          .go({})
          .catch(() => undefined),
      ),
    );
    for (let i = 0; i < 200; i++) await clock.tick(5);
    await all;
    const stopping = Promise.all([nodeA.stop(), nodeB.stop(), nodeC.stop()]);
    await clock.tick(20_000);
    await stopping;
    return reachedC / requests;
  }

  it('without a budget each request reaches C 9 times; with one, little more than once', async (t) => {
    const without = await run(false);
    const withBudget = await run(true);
    t.diagnostic(
      `requests reaching C per request to A: without budget ${without}, with budget ${withBudget}`,
    );
    assert.equal(without, 9, '3 attempts at A × 3 at B');
    assert.ok(withBudget < 1.5, `with the budget: ${withBudget}`);
  });
});

describe('deadline propagation: A (1 s) → B sleeps 700 ms → C', () => {
  const cc = defineContract({
    name: 'dl-c',
    version: '1.0.0',
    actions: { go: { input: z.object({}), output: z.object({ remaining: z.number() }) } },
  });
  const bb = defineContract({
    name: 'dl-b',
    version: '1.0.0',
    actions: { go: { input: z.object({}), output: z.object({ remaining: z.number() }) } },
  });
  const hubs: Hub[] = [];
  after(async () => {
    for (const h of hubs) await h.close();
  });

  for (const kind of ['memory', 'tcp'] as const) {
    it(`over the ${kind} transport: C sees at most 300 ms; A fails within 1 s and a margin`, async () => {
      let transport: () => Transport;
      if (kind === 'memory') {
        const net = createMemoryNetwork();
        transport = () => net.transport();
      } else {
        const hub = await createHub();
        hubs.push(hub);
        transport = () => createTcpTransport({ hub: hub.url, log: () => undefined });
      }
      let seenByC = Number.NaN;
      const nodeC = testNode({
        id: 'c',
        transport: transport(),
        services: [
          implement(cc, {
            actions: {
              go: async (_i, ctx) => {
                seenByC = ctx.remaining();
                await sleep(2000, undefined, { signal: ctx.signal }).catch(() => undefined);
                return { remaining: ctx.remaining() };
              },
            },
          }),
        ],
      });
      const nodeB = testNode({
        id: 'b',
        transport: transport(),
        services: [
          implement(bb, {
            actions: {
              go: async (_i, ctx) => {
                await sleep(700);
                return ctx.call(cc, 'go', {});
              },
            },
          }),
        ],
      });
      const nodeA = testNode({ id: 'a', transport: transport() });
      for (const n of [nodeC, nodeB, nodeA]) await n.start();
      await waitFor(
        () => nodeA.registry.endpoints('dl-b').length === 1 && nodeB.registry.endpoints('dl-c').length === 1,
      );
      const started = Date.now();
      await assert.rejects(
        nodeA.client(bb).go({}, { timeout: 1000 }),
        (e: unknown) => e instanceof ParleyError && e.code === 'DEADLINE_EXCEEDED',
      );
      const took = Date.now() - started;
      assert.ok(seenByC <= 300 && seenByC > 200, `C saw ${seenByC} ms left`);
      assert.ok(took >= 1000 && took < 1100, `A failed after ${took} ms`);
      for (const n of [nodeA, nodeB, nodeC]) await n.stop();
    });
  }
});
