import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IdTable } from './id-table.ts';

describe('IdTable', () => {
  it('holds, gives back and forgets values by id, counting them', () => {
    const t = new IdTable<{ n: number }>();
    const a = { n: 1 };
    t.set(7, a);
    t.set(0, { n: 0 });
    assert.equal(t.size, 2);
    assert.equal(t.get(7), a);
    assert.equal(t.has(0), true);
    assert.equal(t.get(8), undefined);
    t.set(7, { n: 2 }); // replaced, not counted twice
    assert.equal(t.size, 2);
    assert.deepEqual(t.get(7), { n: 2 });
    assert.equal(t.delete(7), true);
    assert.equal(t.delete(7), false);
    assert.equal(t.size, 1);
    assert.deepEqual(t.take(0), { n: 0 });
    assert.equal(t.take(0), undefined);
    assert.equal(t.size, 0);
  });

  it('takes the whole id range, with no key that reaches a prototype', () => {
    const t = new IdTable<string>();
    const ids = [1, 0xffff_fffe, 0xffff_ffff, 2 ** 40];
    for (const id of ids) t.set(id, `v${id}`);
    for (const id of ids) assert.equal(t.get(id), `v${id}`);
    assert.deepEqual(
      t
        .list()
        .map(([id]) => id)
        .sort((x, y) => x - y),
      ids,
    );
    // Nothing inherited answers for an id.
    const empty = new IdTable<unknown>();
    assert.equal(empty.get('toString' as unknown as number), undefined);
    assert.equal(empty.has('__proto__' as unknown as number), false);
  });

  it('lists what it holds at the time, so entries can be removed while going through them', () => {
    const t = new IdTable<number>();
    for (let id = 1; id <= 100; id++) t.set(id, id * 10);
    for (const [id, value] of t.list()) {
      assert.equal(value, id * 10);
      t.delete(id);
      t.delete(id + 1);
    }
    assert.equal(t.size, 0);
    assert.deepEqual(t.values(), []);
  });

  it('keeps working through a long churn of ids, as a transport makes them', () => {
    const t = new IdTable<number>();
    const live: number[] = [];
    for (let id = 1; id <= 50_000; id++) {
      t.set(id, id);
      live.push(id);
      if (live.length > 64) {
        const done = live.shift() as number;
        assert.equal(t.take(done), done);
      }
    }
    assert.equal(t.size, 64);
    assert.deepEqual(
      t.values().sort((x, y) => x - y),
      live,
    );
    t.clear();
    assert.equal(t.size, 0);
    assert.equal(t.get(50_000), undefined);
  });

  it('answers as a Map would through random churn: sequential ids, slow calls, ids sharing a slot', () => {
    // A small generator of its own, so a failure repeats.
    let seed = 12345;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const t = new IdTable<number>();
    const model = new Map<number, number>();
    let next = 1;
    const pick = (): number => {
      const held = [...model.keys()];
      switch (random(5)) {
        case 0: // a new id in sequence
          return next++;
        case 1: // one held
          return held.length === 0 ? next++ : (held[random(held.length)] as number);
        case 2: // one that shares a slot with a held one, at any ring size up to the largest
          return held.length === 0 ? 0 : (held[random(held.length)] as number) + 2 ** (6 + random(11));
        case 3: // an id past 2^31 and up to 2^32 - 1
          return 0xffff_ffff - random(300);
        default:
          return random(2000);
      }
    };
    for (let step = 0; step < 60_000; step++) {
      const id = pick();
      const op = random(10);
      if (op < 5 && model.size < 3000) {
        t.set(id, step);
        model.set(id, step);
      } else if (op < 8) {
        const had = model.get(id);
        model.delete(id);
        assert.equal(t.take(id), had, `take ${id} at step ${step}`);
      } else if (op < 9) {
        assert.equal(t.delete(id), model.delete(id), `delete ${id} at step ${step}`);
      } else {
        assert.equal(t.get(id), model.get(id), `get ${id} at step ${step}`);
      }
      assert.equal(t.size, model.size);
    }
    assert.deepEqual(
      t.list().sort((a, b) => a[0] - b[0]),
      [...model].sort((a, b) => a[0] - b[0]),
    );
  });

  it('keeps every entry when the ring grows, and finds the ones that had to wait beside it', () => {
    const t = new IdTable<number>();
    // 64 apart: every one of these wants the same slot of the first ring.
    const apart = Array.from({ length: 40 }, (_, i) => 5 + 64 * i);
    for (const id of apart) t.set(id, id);
    for (let id = 10_000; id < 10_500; id++) t.set(id, id);
    assert.equal(t.size, 540);
    for (const id of apart) assert.equal(t.get(id), id);
    for (let id = 10_000; id < 10_500; id++) assert.equal(t.take(id), id);
    for (const id of apart) assert.equal(t.take(id), id);
    assert.equal(t.size, 0);
    assert.deepEqual(t.list(), []);
  });
});
