import assert from 'node:assert/strict';
import { test } from 'node:test';
import { boundPage, comparePositions, type HistoryEntry, isPosition } from './broker.ts';

test('positions of one order compare part by part: a sequence, a Redis entry id', () => {
  assert.equal(comparePositions('9', '10'), -1);
  assert.equal(comparePositions('10', '10'), 0);
  assert.equal(comparePositions('5-3', '6-0'), -1, 'the first part decides');
  assert.equal(comparePositions('6-1', '6-0'), 1);
  assert.equal(comparePositions('12345678901234567', '12345678901234568'), -1, 'past 2^53');
});

test('partitioned positions are ordered only when one is behind or level on every partition', () => {
  assert.equal(comparePositions('1_2_3', '1_2_3'), 0);
  assert.equal(comparePositions('1_2_3', '1_3_3'), -1);
  assert.equal(comparePositions('2_2_3', '1_2_3'), 1);
  assert.ok(Number.isNaN(comparePositions('2_1_3', '1_2_3')), 'ahead on one, behind on another');
  assert.equal(comparePositions('0', '0_0_4'), -1, 'a missing part is 0');
  assert.equal(comparePositions('3_0', '3'), 0);
  assert.ok(Number.isNaN(comparePositions('5-3', '5_3')), 'two kinds of position');
  assert.ok(!(comparePositions('2_1', '1_2') <= 0) && !(comparePositions('2_1', '1_2') > 0));
});

test('a position is decimal parts joined by one kind of separator', () => {
  for (const good of ['0', '17', '1-0', '1_0_3', '0_0']) assert.ok(isPosition(good), good);
  for (const bad of ['', '_1', '1_', '1-2_3', '1__2', 'a', '1.2', '-1', '1'.repeat(17)])
    assert.ok(!isPosition(bad), bad);
});

test('boundPage drops what comes after `until`', () => {
  const entry = (position: string) => ({ position }) as HistoryEntry;
  const page = { entries: ['3', '4', '5'].map(entry), next: '5', gap: false };
  assert.equal(boundPage(page, '2', undefined), page);
  assert.deepEqual(boundPage(page, '2', '4'), { entries: [entry('3'), entry('4')], next: '4', gap: false });
  assert.deepEqual(boundPage({ ...page, gap: true }, '2', '1'), { entries: [], next: '2', gap: true });
});
