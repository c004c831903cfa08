import assert from 'node:assert/strict';
import { it } from 'node:test';
import { Latencies } from '../bench/lib/load.ts';
import { median, percentile } from '../bench/lib/stats.ts';

it('bench statistics: median and nearest-rank percentiles', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
  const xs = Array.from({ length: 100 }, (_, i) => 100 - i);
  assert.equal(percentile(xs, 50), 50);
  assert.equal(percentile(xs, 99), 99);
  assert.equal(percentile(xs, 100), 100);
  assert.equal(percentile([7], 99), 7);
});

it('bench latencies: kept in order across chunks, counted, none lost', () => {
  const log = new Latencies();
  assert.equal(log.count, 0);
  assert.equal(log.all().length, 0);
  const n = 65_536 * 2 + 3; // two full chunks and part of a third
  for (let i = 0; i < n; i++) log.add(i / 4);
  assert.equal(log.count, n);
  const all = log.all();
  assert.equal(all.length, n);
  for (const i of [0, 1, 65_535, 65_536, 131_071, 131_072, n - 1]) assert.equal(all[i], i / 4);
  assert.equal(percentile(all, 50), all[Math.ceil(n / 2) - 1]);
});
