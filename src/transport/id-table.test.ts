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
});
