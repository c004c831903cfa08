/**
 * Hedging, fallbacks, bulkheads and rate limits, each through nodes on the memory network.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  Bulkhead,
  bulkheads,
  createFakeClock,
  createMemoryNetwork,
  fallback,
  hedge,
  ParleyError,
  RetryBudget,
  rateLimit,
  TokenBucket,
} from '../src/index.ts';
import { calc, calcService, deferred, testNode, waitFor } from './helpers.ts';

describe('hedging', () => {
  it('a slow instance is raced by a second attempt on another after the delay; the loser is cancelled on the callee', async () => {
    const net = createMemoryNetwork();
    const slowGate = deferred();
    let slowCancelled = 0;
    const slow = testNode({
      id: 'slow',
      transport: net.transport(),
      services: [
        calcService({
          add: async ({ a, b }, ctx) => {
            ctx.signal.addEventListener('abort', () => {
              if ((ctx.signal.reason as ParleyError).code === 'CANCELLED') slowCancelled++;
            });
            await slowGate.promise;
            return { sum: -(a + b) };
          },
        }),
      ],
    });
    const fast = testNode({ id: 'fast', transport: net.transport(), services: [calcService()] });
    const budget = new RetryBudget();
    const caller = testNode({
      id: 'caller',
      transport: net.transport(),
      middleware: [hedge({ delayMs: 30, budget })],
    });
    for (const n of [slow, fast, caller]) await n.start();
    await waitFor(() => caller.registry.endpoints('calc').length === 2);
    const answers = await Promise.all(
      Array.from({ length: 4 }, () => caller.client(calc).add({ a: 1, b: 2 })),
    );
    assert.deepEqual(answers, Array(4).fill({ sum: 3 }), 'every call answered by the fast instance');
    await waitFor(
      () => slowCancelled === 2,
      2000,
      'the two attempts on the slow instance were cancelled there',
    );
    assert.ok(budget.counts().retries >= 1, 'hedges are charged to the budget');
    slowGate.resolve();
    for (const n of [caller, fast, slow]) await n.stop();
  });

  it('a lone attempt that fails is the answer at once, and no hedge starts past the deadline (fake clock)', async () => {
    const clock = createFakeClock();
    const net = createMemoryNetwork({ clock });
    let reached = 0;
    const server = testNode({
      id: 's',
      clock,
      transport: net.transport(),
      services: [
        calcService({
          add: ({ a }) => {
            reached++;
            if (a === 0) throw new ParleyError('INVALID_ARGUMENT', 'bad');
            return new Promise(() => undefined); // never answers
          },
        }),
      ],
    });
    const caller = testNode({
      id: 'c',
      clock,
      transport: net.transport(),
      middleware: [hedge({ clock, delayMs: 2000 })],
    });
    await server.start();
    await caller.start();
    const add = caller.client(calc).add;
    // Fails at once: answered before the hedge's delay, not held until it.
    let failedAt = -1;
    const t0 = clock.now();
    const failing = add({ a: 0, b: 1 }).catch((e: ParleyError) => {
      failedAt = clock.now() - t0;
      return e.code;
    });
    for (let i = 0; i < 50 && failedAt < 0; i++) await clock.tick(1);
    assert.equal(await failing, 'INVALID_ARGUMENT');
    assert.ok(failedAt >= 0 && failedAt < 50, `${failedAt} ms`);
    // Never answers, deadline 500 ms before the hedge's 2 s: DEADLINE_EXCEEDED at 500 ms, one attempt.
    reached = 0;
    let timedOutAt = -1;
    const t1 = clock.now();
    const hanging = add({ a: 1, b: 1 }, { timeout: 500 }).catch((e: ParleyError) => {
      timedOutAt = clock.now() - t1;
      return e.code;
    });
    for (let i = 0; i < 30 && timedOutAt < 0; i++) await clock.tick(50);
    assert.equal(await hanging, 'DEADLINE_EXCEEDED');
    assert.ok(timedOutAt >= 500 && timedOutAt < 700, `${timedOutAt} ms`);
    assert.equal(reached, 1, 'no hedge');
    const stopping = [caller.stop(), server.stop()];
    await clock.tick(20_000);
    await Promise.all(stopping);
  });

  it('a call that is not safe to repeat is never hedged', async () => {
    const net = createMemoryNetwork();
    let runs = 0;
    const server = testNode({
      id: 's',
      transport: net.transport(),
      services: [
        calcService({
          echo: async ({ text }) => {
            runs++;
            await new Promise((r) => setTimeout(r, 60));
            return { text, length: text.length };
          },
        }),
      ],
    });
    const caller = testNode({ id: 'c', transport: net.transport(), middleware: [hedge({ delayMs: 10 })] });
    await server.start();
    await caller.start();
    await caller.client(calc).echo({ text: 'once' });
    assert.equal(runs, 1);
    await caller.stop();
    await server.stop();
  });
});

describe('fallback', () => {
  it("answers for an unwell target, per call or per action, but not for the caller's own mistakes", async () => {
    const net = createMemoryNetwork();
    const server = testNode({
      id: 's',
      transport: net.transport(),
      services: [
        calcService({
          add: () => {
            throw new ParleyError('UNAVAILABLE', 'down');
          },
        }),
      ],
    });
    const caller = testNode({
      id: 'c',
      transport: net.transport(),
      middleware: [fallback({ 'calc.add': () => ({ sum: 0 }) })],
    });
    await server.start();
    await caller.start();
    assert.deepEqual(await caller.client(calc).add({ a: 1, b: 1 }), { sum: 0 });
    assert.deepEqual(await caller.client(calc).add({ a: 1, b: 1 }, { fallback: () => ({ sum: 42 }) }), {
      sum: 42,
    });
    await assert.rejects(
      caller.client(calc).add({ a: 'x' as unknown as number, b: 1 }),
      (e: unknown) => e instanceof ParleyError && e.code === 'INVALID_ARGUMENT',
    );
    await caller.stop();
    await server.stop();
  });
});

describe('bulkhead', () => {
  it('runs at most maxConcurrent, queues maxQueue, refuses the rest at once with RESOURCE_EXHAUSTED', async () => {
    const clock = createFakeClock();
    const b = new Bulkhead('b', { maxConcurrent: 2, maxQueue: 1 }, clock);
    const gates = [deferred(), deferred(), deferred()];
    const runs = gates.map((g) => b.run(() => g.promise.then(() => 'done')));
    assert.equal(b.active, 2);
    assert.equal(b.waiting, 1);
    await assert.rejects(
      b.run(async () => 'x'),
      (e: unknown) => e instanceof ParleyError && e.code === 'RESOURCE_EXHAUSTED',
    );
    for (const g of gates) g.resolve();
    assert.deepEqual(await Promise.all(runs), ['done', 'done', 'done']);
  });

  it('a queued call leaves at its deadline with DEADLINE_EXCEEDED', async () => {
    const clock = createFakeClock();
    const b = new Bulkhead('b', { maxConcurrent: 1, maxQueue: 5 }, clock);
    const gate = deferred();
    const running = b.run(() => gate.promise);
    const queued = b.run(async () => 'late', clock.now() + 100).catch((e: unknown) => e);
    await clock.tick(100);
    const e = await queued;
    assert.ok(e instanceof ParleyError && e.code === 'DEADLINE_EXCEEDED');
    assert.equal(b.waiting, 0);
    gate.resolve();
    await running;
  });

  it('a queued call whose caller gives up leaves the queue at once, and its work never runs', async () => {
    const b = new Bulkhead('b', { maxConcurrent: 1, maxQueue: 1 });
    const gate = deferred();
    const running = b.run(() => gate.promise);
    const ac = new AbortController();
    let ran = false;
    const queued = b
      .run(
        async () => {
          ran = true;
        },
        Number.POSITIVE_INFINITY,
        ac.signal,
      )
      .catch((e: unknown) => e);
    assert.equal(b.waiting, 1);
    ac.abort();
    const e = await queued;
    assert.ok(e instanceof ParleyError && e.code === 'CANCELLED', String(e));
    assert.equal(b.waiting, 0, 'its place is free');
    const next = b.run(async () => 'next');
    gate.resolve();
    await running;
    assert.equal(await next, 'next');
    assert.equal(ran, false);
  });

  it('as middleware: a call cancelled while queued, outbound or inbound, frees its place and never runs', async () => {
    const gate = deferred();
    const ran: string[] = [];
    const node = testNode({
      middleware: [
        bulkheads({
          actions: { 'calc.echo': { maxConcurrent: 1, maxQueue: 1 } },
          dependencies: { calc: { maxConcurrent: 2, maxQueue: 1 } },
        }),
      ],
      services: [
        calcService({
          echo: async ({ text }) => {
            ran.push(text);
            await gate.promise;
            return { text, length: text.length };
          },
        }),
      ],
    });
    await node.start();
    const echo = node.client(calc).echo;
    const first = echo({ text: 'a' });
    // Queued inbound (calc.echo runs one at a time), then given up.
    const inbound = new AbortController();
    const second = echo({ text: 'cancelled in' }, { signal: inbound.signal }).catch(
      (e: ParleyError) => e.code,
    );
    // Queued outbound (two calls of calc already out), then given up.
    const outbound = new AbortController();
    const third = echo({ text: 'cancelled out' }, { signal: outbound.signal }).catch(
      (e: ParleyError) => e.code,
    );
    await waitFor(() => ran.length === 1);
    inbound.abort();
    outbound.abort();
    assert.equal(await second, 'CANCELLED');
    assert.equal(await third, 'CANCELLED');
    // Both places are free again: one more call queues on each side instead of being refused.
    const fourth = echo({ text: 'd' });
    gate.resolve();
    await first;
    assert.deepEqual(await fourth, { text: 'd', length: 1 });
    assert.deepEqual(ran, ['a', 'd']);
    await node.stop();
  });

  it('as middleware: per action on the serving side', async () => {
    const gate = deferred();
    const node = testNode({
      middleware: [bulkheads({ actions: { 'calc.add': { maxConcurrent: 1 } } })],
      services: [
        calcService({
          add: async ({ a, b }) => {
            await gate.promise;
            return { sum: a + b };
          },
        }),
      ],
    });
    await node.start();
    const first = node.client(calc).add({ a: 1, b: 1 });
    await assert.rejects(
      node.client(calc).add({ a: 1, b: 1 }),
      (e: unknown) => e instanceof ParleyError && e.code === 'RESOURCE_EXHAUSTED',
    );
    assert.deepEqual(await node.client(calc).echo({ text: 'other actions flow' }), {
      text: 'other actions flow',
      length: 18,
    });
    gate.resolve();
    assert.deepEqual(await first, { sum: 2 });
    await node.stop();
  });
});

describe('rate limit', () => {
  it('a token bucket allows its burst, then its rate', async () => {
    const clock = createFakeClock();
    const bucket = new TokenBucket({ ratePerSecond: 10, burst: 5 }, clock);
    assert.equal(Array.from({ length: 8 }, () => bucket.tryTake()).filter(Boolean).length, 5);
    assert.equal(bucket.waitFor(), 100);
    await clock.tick(300);
    assert.equal(Array.from({ length: 8 }, () => bucket.tryTake()).filter(Boolean).length, 3);
  });

  it('as middleware: calls over the rate get RESOURCE_EXHAUSTED with retryAfterMs', async () => {
    const clock = createFakeClock();
    const node = testNode({
      clock,
      middleware: [rateLimit({ calc: { ratePerSecond: 2, burst: 2 } }, clock)],
      services: [calcService()],
    });
    await node.start();
    const results = await Promise.allSettled(
      Array.from({ length: 4 }, () => node.client(calc).add({ a: 1, b: 1 })),
    );
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 2);
    const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    assert.ok(refused.reason instanceof ParleyError && refused.reason.code === 'RESOURCE_EXHAUSTED');
    assert.equal(typeof refused.reason.details?.retryAfterMs, 'number');
    const stopping = node.stop();
    await clock.tick(20_000);
    await stopping;
  });
});
