/**
 * The circuit breaker: a model-based test against a small reference state machine, the
 * regressions breaker libraries are known for, and the breaker as middleware between nodes.
 */
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { describe, it } from 'node:test';
import {
  createEmbeddedBroker,
  createEnvelope,
  createFakeClock,
  createMemoryNetwork,
  defineContract,
  implement,
  ParleyError,
  resilience,
  retry,
  subscribe,
} from '../src/index.ts';
import {
  type BreakersMiddleware,
  CircuitBreaker,
  circuitBreakers,
  type Permit,
} from '../src/resilience/breaker.ts';
import { createRandom } from '../src/transport/faults.ts';
import { calc, calcService, deferred, testNode, waitFor } from './helpers.ts';

/** The reference: the rules, written plainly, with no timers and no cleverness. */
class Model {
  state: 'closed' | 'open' | 'half-open' = 'closed';
  window: boolean[] = []; // true = failure
  openUntil = 0;
  probesOut = 0;
  probesOk = 0;
  epoch = 0;
  constructor(
    readonly size: number,
    readonly minimum: number,
    readonly rate: number,
    readonly openMs: number,
    readonly probes: number,
  ) {}
  tick(now: number) {
    if (this.state === 'open' && now >= this.openUntil) this.go('half-open', now);
  }
  go(state: Model['state'], now: number) {
    if (state === this.state) return;
    this.state = state;
    this.epoch++;
    this.window = [];
    this.probesOut = 0;
    this.probesOk = 0;
    if (state === 'open') this.openUntil = now + this.openMs;
  }
  /** Returns the permit's epoch and whether it is a probe, or undefined when refused. */
  acquire(now: number): { epoch: number; probe: boolean } | undefined {
    this.tick(now);
    if (this.state === 'open') return undefined;
    if (this.state === 'half-open') {
      if (this.probesOut >= this.probes) return undefined;
      this.probesOut++;
      return { epoch: this.epoch, probe: true };
    }
    return { epoch: this.epoch, probe: false };
  }
  settle(p: { epoch: number; probe: boolean }, outcome: 'ok' | 'fail' | 'ignore', now: number) {
    if (p.epoch !== this.epoch) return;
    if (p.probe) {
      // N probes per half-open period; an ignored one is given back.
      if (outcome === 'ignore') {
        this.probesOut--;
        return;
      }
      if (outcome === 'fail') return this.go('open', now);
      if (++this.probesOk >= this.probes) this.go('closed', now);
      return;
    }
    if (outcome === 'ignore') return;
    this.window.push(outcome === 'fail');
    if (this.window.length > this.size) this.window.shift();
    const failures = this.window.filter(Boolean).length;
    if (this.window.length >= this.minimum && failures / this.window.length >= this.rate)
      this.go('open', now);
  }
}

const errorOf = (outcome: 'fail' | 'ignore') =>
  outcome === 'fail'
    ? new ParleyError('UNAVAILABLE', 'down')
    : new ParleyError('INVALID_ARGUMENT', "the caller's mistake");

describe('circuit breaker: model-based', () => {
  it('agrees with the reference machine over 3 000 random sequences; open never calls the target', async () => {
    const random = createRandom(2026);
    let steps = 0;
    for (let seq = 0; seq < 3000; seq++) {
      const clock = createFakeClock();
      const size = 2 + Math.floor(random() * 10);
      const minimum = 1 + Math.floor(random() * size);
      const rate = [0.25, 0.5, 0.75, 1][Math.floor(random() * 4)] as number;
      const probes = 1 + Math.floor(random() * 3);
      const openMs = 100;
      const impl = new CircuitBreaker('t', {
        window: { size },
        minimumCalls: minimum,
        failureRate: rate,
        openMs,
        halfOpenProbes: probes,
        clock,
      });
      const model = new Model(size, minimum, rate, openMs, probes);
      const held: { impl: Permit; model: { epoch: number; probe: boolean } }[] = [];
      for (let step = 0; step < 40; step++, steps++) {
        const r = random();
        const now = clock.now();
        if (r < 0.15) {
          await clock.tick(Math.floor(random() * 150));
        } else if (r < 0.35 && held.length > 0) {
          // A call held earlier settles now, maybe after the state changed.
          const i = Math.floor(random() * held.length);
          const [h] = held.splice(i, 1) as [(typeof held)[number]];
          const outcome = (['ok', 'fail', 'ignore'] as const)[Math.floor(random() * 3)] as
            | 'ok'
            | 'fail'
            | 'ignore';
          if (outcome === 'ok') h.impl.success();
          else h.impl.error(errorOf(outcome));
          model.settle(h.model, outcome, now);
        } else {
          const m = model.acquire(now);
          const p = impl.acquire();
          assert.equal(p !== undefined, m !== undefined, `seq ${seq} step ${step}: admitted`);
          if (model.state === 'open')
            assert.equal(p, undefined, 'an open breaker never lets a call reach the target');
          if (p !== undefined && m !== undefined) {
            if (random() < 0.3) held.push({ impl: p, model: m });
            else {
              const outcome = (['ok', 'fail', 'ignore'] as const)[Math.floor(random() * 3)] as
                | 'ok'
                | 'fail'
                | 'ignore';
              if (outcome === 'ok') p.success();
              else p.error(errorOf(outcome));
              model.settle(m, outcome, now);
            }
          }
        }
        model.tick(clock.now());
        assert.equal(impl.state, model.state, `seq ${seq} step ${step}: state`);
      }
    }
    assert.ok(steps >= 100_000);
  });
});

describe('circuit breaker: regressions', () => {
  const opened = (clock: ReturnType<typeof createFakeClock>, probes = 1) => {
    const b = new CircuitBreaker('t', {
      minimumCalls: 1,
      failureRate: 0.5,
      openMs: 1000,
      halfOpenProbes: probes,
      clock,
    });
    b.acquire()?.failure();
    assert.equal(b.state, 'open');
    return b;
  };

  it('a probe that never returns releases its permit at its deadline: half-open is not held forever', async () => {
    const clock = createFakeClock();
    const b = opened(clock);
    await clock.tick(1000);
    const probe = b.acquire(clock.now() + 200);
    assert.ok(probe !== undefined);
    assert.equal(b.acquire(), undefined, 'the only probe is out');
    await clock.tick(200);
    assert.equal(b.state, 'open', 'the silent probe counted as a failure');
    await clock.tick(1000);
    assert.ok(b.acquire() !== undefined, 'and a new probe is admitted later');
  });

  it('an ignored error does not pin half-open: the permit is free again', async () => {
    const clock = createFakeClock();
    const b = opened(clock);
    await clock.tick(1000);
    for (let i = 0; i < 5; i++) {
      const probe = b.acquire();
      assert.ok(probe !== undefined, `probe ${i} admitted`);
      probe.error(new ParleyError('INVALID_ARGUMENT', 'bad input'));
      assert.equal(b.state, 'half-open');
    }
    b.acquire()?.success();
    assert.equal(b.state, 'closed');
  });

  it('never more probes than configured, however many callers ask at once', async () => {
    const clock = createFakeClock();
    const b = opened(clock, 3);
    await clock.tick(1000);
    const permits = Array.from({ length: 100 }, () => b.acquire()).filter((p) => p !== undefined);
    assert.equal(permits.length, 3);
    permits[0]?.success();
    permits[0]?.success(); // settling twice changes nothing
    assert.equal(b.acquire(), undefined, 'a settled probe is not replaced while the others are out');
  });

  it('simultaneous failures do not restart or cancel the open period', async () => {
    const clock = createFakeClock();
    const b = new CircuitBreaker('t', { minimumCalls: 2, failureRate: 0.5, openMs: 1000, clock });
    const inFlight = Array.from({ length: 50 }, () => b.acquire());
    inFlight[0]?.failure();
    inFlight[1]?.failure();
    assert.equal(b.state, 'open');
    const retryAt = b.retryAt;
    await clock.tick(500);
    for (const p of inFlight.slice(2)) p?.failure(); // late failures of calls admitted before
    assert.equal(b.retryAt, retryAt, 'the open period was not extended');
    await clock.tick(500);
    assert.equal(b.state, 'half-open');
  });

  it('opens on slow calls when asked to', async () => {
    const clock = createFakeClock();
    const b = new CircuitBreaker('t', { minimumCalls: 4, slowCallMs: 100, slowCallRate: 0.5, clock });
    for (let i = 0; i < 4; i++) {
      const p = b.acquire();
      await clock.tick(i % 2 === 0 ? 150 : 10);
      p?.success();
    }
    assert.equal(b.state, 'open');
  });

  it('reopening backs off when asked: 1 s, 2 s, 4 s', async () => {
    const clock = createFakeClock();
    const b = new CircuitBreaker('t', {
      minimumCalls: 1,
      openMs: 1000,
      openBackoff: { multiplier: 2, max: 4000 },
      clock,
    });
    b.acquire()?.failure();
    for (const wait of [1000, 2000, 4000]) {
      await clock.tick(wait - 1);
      assert.equal(b.state, 'open');
      await clock.tick(1);
      b.acquire()?.failure();
    }
    assert.equal(b.retryAt - clock.now(), 4000, 'capped at max');
  });

  it('state changes are emitted', async () => {
    const clock = createFakeClock();
    const b = new CircuitBreaker('t', { minimumCalls: 1, openMs: 100, clock });
    const seen: string[] = [];
    b.onChange((c) => seen.push(`${c.from}→${c.to}`));
    b.acquire()?.failure();
    await clock.tick(100);
    b.acquire()?.success();
    assert.deepEqual(seen, ['closed→open', 'open→half-open', 'half-open→closed']);
  });
});

describe('circuit breakers as middleware', () => {
  it("a caller's own frames over the transport's limit neither open the breaker nor are retried", async () => {
    const net = createMemoryNetwork();
    let ran = 0;
    const server = testNode({
      id: 'server',
      transport: net.transport({ maxPayload: 1024 }),
      services: [
        calcService({
          add: ({ a, b }) => {
            ran++;
            return { sum: a + b };
          },
        }),
      ],
    });
    const retries = retry({ random: () => 0 });
    const breakers = circuitBreakers();
    const caller = testNode({
      id: 'caller',
      transport: net.transport({ maxPayload: 1024 }),
      middleware: [retries, breakers],
    });
    await server.start();
    await caller.start();
    await waitFor(() => caller.registry.endpoints('calc').length === 1);
    // `add` is idempotent: a retryable failure of it would be retried.
    const add = caller.client(calc).add;
    for (let i = 0; i < 10; i++) {
      const e = await add({ a: 1, b: 2, note: 'x'.repeat(2000) }).catch((x: unknown) => x);
      assert.ok(e instanceof ParleyError && e.code === 'RESOURCE_EXHAUSTED' && !e.retryable, String(e));
    }
    assert.equal(ran, 0, 'never sent');
    assert.equal(breakers.breaker('calc', 'server').state, 'closed');
    assert.equal(retries.budget?.counts().retries, 0, 'not retried');
    assert.deepEqual(await add({ a: 1, b: 2 }), { sum: 3 });
    await caller.stop();
    await server.stop();
  });

  it('half-open admits exactly N probes under 100 concurrent callers; the rest fail at once', async () => {
    const clock = createFakeClock();
    const net = createMemoryNetwork({ clock });
    let reached = 0;
    let failing = true;
    const hold = deferred();
    const server = testNode({
      id: 'server',
      clock,
      transport: net.transport(),
      services: [
        calcService({
          add: async ({ a, b }) => {
            reached++;
            if (failing) throw new ParleyError('UNAVAILABLE', 'down');
            await hold.promise;
            return { sum: a + b };
          },
        }),
      ],
    });
    const breakers = circuitBreakers({ minimumCalls: 5, openMs: 1000, halfOpenProbes: 3, clock });
    const caller = testNode({ id: 'caller', clock, transport: net.transport(), middleware: [breakers] });
    await server.start();
    await caller.start();
    const add = caller.client(calc).add;
    for (let i = 0; i < 5; i++) {
      const call = add({ a: 1, b: 1 }).catch((e: unknown) => e);
      for (let t = 0; t < 20 && reached <= i; t++) await clock.tick(1);
      await call;
    }
    assert.equal(breakers.breaker('calc', 'server').state, 'open');
    const before = reached;
    const refused = await add({ a: 1, b: 1 }).catch((e: unknown) => e);
    assert.ok(refused instanceof ParleyError && refused.code === 'UNAVAILABLE');
    assert.equal(reached, before, 'an open breaker does not call the target');

    failing = false;
    await clock.tick(1000);
    const calls = Array.from({ length: 100 }, () =>
      add({ a: 2, b: 2 }).then(
        () => 'ok',
        (e: unknown) => e,
      ),
    );
    for (let t = 0; t < 20; t++) await clock.tick(1);
    assert.equal(reached - before, 3, 'three probes reached the server');
    hold.resolve();
    const results = await Promise.all(calls);
    assert.equal(results.filter((r) => r === 'ok').length, 3);
    assert.ok(
      results.filter((r) => r !== 'ok').every((r) => r instanceof ParleyError && r.code === 'UNAVAILABLE'),
      'the other 97 failed with UNAVAILABLE',
    );
    assert.equal(breakers.breaker('calc', 'server').state, 'closed');
    const stopping = Promise.all([caller.stop(), server.stop()]);
    await clock.tick(20_000);
    await stopping;
  });

  it('with retries (the default stack): every attempt settles its permit; an open circuit is retried, never sent', async () => {
    const clock = createFakeClock();
    const net = createMemoryNetwork({ clock });
    let reached = 0;
    let failures = 2;
    const server = testNode({
      id: 'server',
      clock,
      transport: net.transport(),
      services: [
        calcService({
          add: ({ a, b }) => {
            reached++;
            if (failures-- > 0) throw new ParleyError('UNAVAILABLE', 'down');
            return { sum: a + b };
          },
        }),
      ],
    });
    const stack = resilience({
      clock,
      retry: { maxAttempts: 3, budget: false, backoff: { initial: 10, max: 10 } },
      breaker: { minimumCalls: 3, failureRate: 0.5, openMs: 1000 },
    });
    const breakers = stack[1] as BreakersMiddleware;
    const changes: string[] = [];
    breakers.onChange((c) => changes.push(`${c.from}→${c.to}`));
    const caller = testNode({ id: 'caller', clock, transport: net.transport(), middleware: stack });
    await server.start();
    await caller.start();
    const add = caller.client(calc).add;
    const settle = async <T>(p: Promise<T>) => {
      const r = p.then(
        (v) => v,
        (e: unknown) => e,
      );
      for (let t = 0; t < 100; t++) await clock.tick(1);
      return r;
    };
    // fail, fail, success: three outcomes reach the window and the third (2 of 3 failed) opens it.
    assert.deepEqual(await settle(add({ a: 1, b: 2 })), { sum: 3 });
    assert.equal(reached, 3);
    assert.deepEqual(changes, ['closed→open']);
    // Open: the retries are refused too, and nothing reaches the server.
    const refused = await settle(add({ a: 1, b: 2 }));
    assert.ok(refused instanceof ParleyError && refused.code === 'UNAVAILABLE');
    assert.equal((refused.details as { circuit?: string }).circuit, 'open');
    assert.equal(reached, 3);
    // After the open period one probe goes, with a caller signal (the other remote path), and closes it.
    await clock.tick(1000);
    const signal = new AbortController().signal;
    assert.deepEqual(await settle(add({ a: 2, b: 2 }, { signal })), { sum: 4 });
    assert.deepEqual(changes, ['closed→open', 'open→half-open', 'half-open→closed']);
    const stopping = Promise.all([caller.stop(), server.stop()]);
    await clock.tick(20_000);
    await stopping;
  });
});

describe('one caller signal shared by many calls', () => {
  it('100 000 calls sharing one AbortSignal leave one listener on it, and no warning', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => void warnings.push(w.name);
    process.on('warning', onWarning);
    const net = createMemoryNetwork();
    const server = testNode({
      id: 'server',
      transport: net.transport(),
      services: [calcService({ add: async ({ a, b }) => ({ sum: a + b }) })],
    });
    const caller = testNode({ id: 'caller', transport: net.transport() });
    await server.start();
    await caller.start();
    await waitFor(() => caller.registry.endpoints('calc').length === 1);
    const controller = new AbortController();
    const add = caller.client(calc).add;
    let peak = 0;
    for (let batch = 0; batch < 100; batch++) {
      const calls = Array.from({ length: 1000 }, () => add({ a: 1, b: 2 }, { signal: controller.signal }));
      peak = Math.max(peak, getEventListeners(controller.signal, 'abort').length);
      await Promise.all(calls);
    }
    // Local calls through a node with the service take the same path: one listener there too.
    const local = testNode({ services: [calcService({ add: async ({ a, b }) => ({ sum: a + b }) })] });
    await local.start();
    await Promise.all(
      Array.from({ length: 5000 }, () =>
        local.client(calc).add({ a: 1, b: 1 }, { signal: controller.signal }),
      ),
    );
    peak = Math.max(peak, getEventListeners(controller.signal, 'abort').length);
    assert.ok(peak <= 1, `listeners on the shared signal: ${peak}`);
    assert.deepEqual(
      warnings.filter((w) => w === 'MaxListenersExceededWarning'),
      [],
    );
    process.off('warning', onWarning);
    await local.stop();
    await caller.stop();
    await server.stop();
  });
});

describe('a durable consumer behind an open breaker', () => {
  const billing = defineContract({ name: 'billing', version: '1.0.0', actions: {} });

  async function scenario(withBreaker: boolean) {
    const clock = createFakeClock();
    const net = createMemoryNetwork({ clock });
    const broker = createEmbeddedBroker({ path: ':memory:', clock, random: () => 0.5 });
    let down = true;
    const server = testNode({
      id: 'server',
      clock,
      transport: net.transport(),
      services: [
        calcService({
          add: ({ a, b }) => {
            if (down) throw new ParleyError('UNAVAILABLE', 'calc is down');
            return { sum: a + b };
          },
        }),
      ],
    });
    const handled: number[] = [];
    let runs = 0;
    const consumer = testNode({
      id: 'consumer',
      clock,
      broker,
      transport: net.transport(),
      middleware: withBreaker ? [circuitBreakers({ minimumCalls: 1, openMs: 1000, clock })] : [],
      services: [
        implement(billing, {
          actions: {},
          on: [
            subscribe(
              calc,
              'calc.done',
              async ({ n }, ctx) => {
                runs++;
                await ctx.call(calc, 'add', { a: n, b: 0 });
                handled.push(n);
              },
              { maxAttempts: 5, backoff: { initial: 50, max: 200 }, startFrom: 'beginning' },
            ),
          ],
        }),
      ],
    });
    await server.start();
    await consumer.start();
    await broker.publish(createEnvelope({ source: '/test', type: 'calc.done', data: { n: 7 } }));
    for (let t = 0; t < 250; t++) await clock.tick(10); // 2.5 s of calc being down
    down = false;
    for (let t = 0; t < 300; t++) await clock.tick(10);
    const dead = (await broker.deadLetters.list()).length;
    const stopping = Promise.all([consumer.stop(), server.stop()]);
    await clock.tick(20_000);
    await stopping;
    return { handled, dead, runs };
  }

  it('waits without spending attempts, and handles the message when the dependency is back', async () => {
    const without = await scenario(false);
    assert.deepEqual(without.handled, [], 'without a breaker: five quick failures, then dead-letter');
    assert.equal(without.dead, 1);
    const paused = await scenario(true);
    assert.deepEqual(paused.handled, [7], 'with the breaker: handled once calc is back');
    assert.equal(paused.dead, 0);
  });
});
