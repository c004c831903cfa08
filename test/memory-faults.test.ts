/**
 * Fault injection in the memory transport: each mode does what it says, and the same seed gives
 * the same outcome, frame for frame.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  createFakeClock,
  createMemoryNetwork,
  type DeliveryRecord,
  type FaultOptions,
  ParleyError,
  type ParleyNode,
  subscribe,
} from '../src/index.ts';
import { calc, calcService, testNode } from './helpers.ts';

interface Trace {
  received: number[];
  records: DeliveryRecord[];
  outcomes: string[];
}

const N = 300;

async function scenario(
  faults: FaultOptions | undefined,
  setup?: (net: ReturnType<typeof createMemoryNetwork>) => void,
) {
  const clock = createFakeClock();
  const network = createMemoryNetwork({ clock, ...(faults ? { faults } : {}) });
  network.record = true;
  const received: number[] = [];
  const service = calcService({}, [
    subscribe(calc, 'calc.done', (p) => void received.push(p.n), { ephemeral: true }),
  ]);
  const b = testNode({ id: 'b', clock, transport: network.transport(), services: [service] });
  const a = testNode({ id: 'a', clock, transport: network.transport() });
  await b.start();
  await a.start();
  setup?.(network);
  // One notification per turn of the event loop: a turn's notifications share one frame, and the
  // faults here act per frame.
  for (let n = 0; n < N; n++) {
    await a.notify(calc, 'calc.done', { n });
    await new Promise((r) => setImmediate(r));
  }
  await clock.tick(100);
  const outcomes: string[] = [];
  const calls = Array.from({ length: 50 }, (_, i) =>
    a
      .client(calc)
      .add({ a: i, b: 0 }, { timeout: 1000 })
      .then(
        (r) => `ok:${r.sum}`,
        (e: unknown) => (e instanceof ParleyError ? e.code : 'other'),
      ),
  );
  await clock.tick(2000);
  outcomes.push(...(await Promise.all(calls)));
  await stopAll([a, b], clock);
  const trace: Trace = { received, records: network.records, outcomes };
  return trace;
}

async function stopAll(nodes: ParleyNode[], clock: ReturnType<typeof createFakeClock>) {
  const stopping = Promise.all(nodes.map((n) => n.stop()));
  await clock.tick(20_000);
  await stopping;
}

const modes: Record<string, FaultOptions> = {
  drop: { seed: 42, drop: 0.2 },
  delay: { seed: 42, delay: { probability: 0.5, min: 1, max: 50 } },
  duplicate: { seed: 42, duplicate: 0.2 },
  reorder: { seed: 42, reorder: 0.2 },
};

describe('memory transport faults', () => {
  it('no faults: everything arrives once, in order', async () => {
    const t = await scenario(undefined);
    assert.deepEqual(
      t.received,
      Array.from({ length: N }, (_, i) => i),
    );
    assert.ok(t.outcomes.every((o) => o.startsWith('ok:')));
  });

  for (const [mode, faults] of Object.entries(modes)) {
    it(`${mode}: does what it says, the same for the same seed, differently for another`, async () => {
      const first = await scenario(faults);
      const again = await scenario(faults);
      const other = await scenario({ ...faults, seed: 43 });
      assert.deepEqual(again, first, 'same seed, same trace');
      assert.notDeepEqual(other.received, first.received, 'another seed, another trace');
      const sorted = [...first.received].sort((x, y) => x - y);
      if (mode === 'drop') {
        assert.ok(
          first.received.length < N * 0.9 && first.received.length > N * 0.6,
          `${first.received.length}`,
        );
        assert.ok(
          first.outcomes.includes('DEADLINE_EXCEEDED'),
          'a lost request or reply ends at the deadline',
        );
      } else if (mode === 'duplicate') {
        assert.ok(first.received.length > N * 1.1, 'duplicates arrived');
        assert.deepEqual(
          [...new Set(sorted)],
          Array.from({ length: N }, (_, i) => i),
          'nothing lost',
        );
        assert.ok(
          first.outcomes.every((o) => o.startsWith('ok:')),
          'a duplicate reply is ignored',
        );
      } else {
        assert.equal(first.received.length, N, 'nothing lost');
        assert.notDeepEqual(first.received, sorted, 'order changed');
        assert.deepEqual(
          sorted,
          Array.from({ length: N }, (_, i) => i),
        );
        assert.ok(first.outcomes.every((o) => o.startsWith('ok:')));
      }
      if (mode === 'delay') assert.ok(first.records.some((r) => r.delay > 0));
      if (mode === 'reorder') assert.ok(first.records.some((r) => r.reordered));
    });
  }

  it('partition: nothing crosses either way until heal', async () => {
    const clock = createFakeClock();
    const network = createMemoryNetwork({ clock });
    const service = calcService();
    const b = testNode({ id: 'b', clock, transport: network.transport(), services: [service] });
    const a = testNode({ id: 'a', clock, transport: network.transport() });
    await b.start();
    await a.start();
    network.partition(['a'], ['b']);
    network.record = true;
    const cut = a
      .client(calc)
      .add({ a: 1, b: 1 }, { timeout: 500 })
      .catch((e: unknown) => e);
    await clock.tick(600);
    const error = await cut;
    assert.ok(error instanceof ParleyError && error.code === 'DEADLINE_EXCEEDED');
    assert.deepEqual(
      network.records.map((r) => r.outcome),
      ['partitioned'],
    );
    network.heal();
    const healed = a.client(calc).add({ a: 1, b: 1 }, { timeout: 500 });
    await clock.tick(1);
    assert.deepEqual(await healed, { sum: 2 });
    await stopAll([a, b], clock);
  });
});
