import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IdlePool } from './idle-pool.ts';

test('an idle pool hands back the item that fits, or with `any` the one kept last', () => {
  const pool = new IdlePool<string>(3, 1_000);
  assert.ok(pool.keep('a', () => true));
  assert.ok(pool.keep('b', () => true));
  assert.equal(
    pool.take((x) => x === 'a'),
    'a',
  );
  assert.equal(
    pool.take((x) => x === 'a'),
    undefined,
    'taken out',
  );
  assert.equal(
    pool.take(() => false),
    undefined,
  );
  assert.equal(
    pool.take(() => false, true),
    'b',
  );
  assert.deepEqual(pool.drain(), []);
});

test('an idle pool keeps at most `max`', () => {
  const pool = new IdlePool<number>(2, 1_000);
  assert.ok(pool.keep(1, () => true));
  assert.ok(pool.keep(2, () => true));
  assert.equal(
    pool.keep(3, () => true),
    false,
    'full: the caller disposes of it',
  );
  assert.deepEqual(pool.drain(), [1, 2]);
  assert.ok(
    pool.keep(3, () => true),
    'room again once drained',
  );
  pool.drain();
});

test('an item left idle is handed to its callback after idleMs: kept on true, dropped on false', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const pool = new IdlePool<string>(4, 1_000);
  const idled: string[] = [];
  // A copy: `assert.deepEqual` would narrow the array's own type to the expected one.
  const seen = () => [...idled];
  pool.keep('stays', (x) => idled.push(x) > 0);
  pool.keep('goes', (x) => idled.push(x) < 0);
  t.mock.timers.tick(999);
  assert.deepEqual(seen(), []);
  t.mock.timers.tick(1);
  assert.deepEqual(seen(), ['stays', 'goes']);
  assert.equal(
    pool.take((x) => x === 'goes'),
    undefined,
    'dropped',
  );
  assert.equal(
    pool.take((x) => x === 'stays'),
    'stays',
    'still held, idle',
  );
  // Taken before its time: its callback never runs.
  pool.keep('taken', (x) => idled.push(x) > 0);
  t.mock.timers.tick(500);
  assert.equal(
    pool.take(() => true),
    'taken',
  );
  t.mock.timers.tick(5_000);
  assert.deepEqual(seen(), ['stays', 'goes']);
  // Drained before its time: neither.
  pool.keep('drained', (x) => idled.push(x) > 0);
  assert.deepEqual(pool.drain(), ['drained']);
  t.mock.timers.tick(5_000);
  assert.deepEqual(seen(), ['stays', 'goes']);
});
