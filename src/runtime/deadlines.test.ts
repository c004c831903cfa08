import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRandom } from '../transport/faults.ts';
import { createFakeClock } from './clock.ts';
import { DeadlineWheel } from './deadlines.ts';

describe('DeadlineWheel', () => {
  it('fires at the deadline, not before; cancel prevents it; an idle wheel holds no timer', () => {
    const clock = createFakeClock(0);
    const wheel = new DeadlineWheel(clock);
    const fired: string[] = [];
    const seen = (): string[] => [...fired];
    wheel.track(100, () => fired.push('a'));
    const b = wheel.track(100, () => fired.push('b'));
    wheel.track(50.2, () => fired.push('c'));
    b.cancel();
    b.cancel();
    clock.advance(50);
    assert.deepEqual(seen(), []);
    clock.advance(1);
    assert.deepEqual(seen(), ['c']);
    clock.advance(48);
    assert.deepEqual(seen(), ['c']);
    clock.advance(1);
    assert.deepEqual(seen(), ['c', 'a']);
    assert.equal(wheel.size(), 0);
    assert.equal(clock.pending(), 0);
    const d = wheel.track(500, () => fired.push('d'));
    assert.equal(clock.pending(), 1);
    d.cancel();
    // The armed timer is left to fire once (cheaper than re-arming per call) ...
    clock.advance(500);
    assert.equal(clock.pending(), 0, 'and is not re-armed when nothing is due');
    // ... or close() drops it at once.
    wheel.track(clock.now() + 100, () => fired.push('e')).cancel();
    assert.equal(clock.pending(), 1);
    wheel.close();
    assert.equal(clock.pending(), 0);
    assert.deepEqual(seen(), ['c', 'a']);
  });

  it('a deadline weeks away arms a timer Node keeps (at most 2^31 - 1 ms), re-armed until it is due', () => {
    const inner = createFakeClock(0);
    const delays: number[] = [];
    const clock = {
      now: () => inner.now(),
      setTimeout: (fn: () => void, ms: number) => {
        delays.push(ms);
        return inner.setTimeout(fn, ms);
      },
    };
    const wheel = new DeadlineWheel(clock);
    const fired: number[] = [];
    const far = 60 * 24 * 3600 * 1000; // 60 days
    wheel.track(far, () => fired.push(inner.now()));
    assert.ok(
      delays.every((d) => d <= 2_147_483_647),
      `delays ${delays.join(', ')}`,
    );
    inner.advance(2_147_483_647);
    assert.deepEqual(fired, [], 'not due yet: re-armed');
    assert.equal(delays.length, 2);
    inner.advance(far - 2_147_483_647);
    assert.deepEqual(fired, [far]);
    assert.ok(delays.every((d) => d <= 2_147_483_647));
  });

  it('matches a simple reference model over 3,000 random operations', () => {
    for (let seed = 1; seed <= 5; seed++) {
      const random = createRandom(seed);
      const clock = createFakeClock(1_000);
      const wheel = new DeadlineWheel(clock);
      // Reference: a list of live deadlines; an entry fires once now >= ceil(deadline).
      const model = new Map<number, number>();
      const fired = new Set<number>();
      const handles = new Map<number, { cancel(): void }>();
      let next = 0;
      for (let step = 0; step < 3000; step++) {
        const r = random();
        if (r < 0.5) {
          const id = next++;
          const deadline = clock.now() + random() * 200;
          model.set(id, deadline);
          handles.set(
            id,
            wheel.track(deadline, () => {
              assert.ok(!fired.has(id), 'fires once');
              fired.add(id);
            }),
          );
        } else if (r < 0.7 && handles.size > 0) {
          const ids = [...handles.keys()];
          const id = ids[Math.floor(random() * ids.length)] as number;
          handles.get(id)?.cancel();
          handles.delete(id);
          model.delete(id);
        } else {
          clock.advance(Math.floor(random() * 20));
        }
        for (const [id, deadline] of model) {
          const due = clock.now() >= Math.ceil(deadline);
          assert.equal(fired.has(id), due, `seed ${seed} step ${step}: entry ${id}`);
          if (due) {
            model.delete(id);
            handles.delete(id);
          }
        }
        assert.equal(wheel.size(), model.size);
      }
    }
  });

  it('expireAll fires everything now with the reason', () => {
    const clock = createFakeClock(0);
    const wheel = new DeadlineWheel(clock);
    const reasons: unknown[] = [];
    wheel.track(10, (r) => reasons.push(r));
    wheel.track(20_000, (r) => reasons.push(r));
    wheel.expireAll('stop');
    assert.deepEqual(reasons, ['stop', 'stop']);
    assert.equal(wheel.size(), 0);
    wheel.close();
    assert.equal(clock.pending(), 0);
    clock.advance(30_000);
    assert.deepEqual(reasons, ['stop', 'stop'], 'nothing fires twice');
  });
});
