import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { it } from 'node:test';
import { Latencies } from '../bench/lib/load.ts';
import { cpuMicros } from '../bench/lib/proc.ts';
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

it('bench CPU time of a process from /proc: agrees with what the process itself counts', (t) => {
  if (!existsSync('/proc/self/stat')) return t.skip('no /proc on this system');
  const before = cpuMicros(process.pid);
  const own = process.cpuUsage();
  // Burn 200 ms of CPU (user time) in this process.
  let x = 0;
  while (process.cpuUsage(own).user < 200_000) x += Math.sqrt(x + 1);
  const used = process.cpuUsage(own);
  const measured = cpuMicros(process.pid) - before;
  // /proc counts in 10 ms ticks, and other threads of the process (the GC's) count there too.
  assert.ok(
    Math.abs(measured - (used.user + used.system)) <= 40_000,
    `${measured} µs against ${used.user + used.system}`,
  );
  assert.ok(x > 0);
  assert.ok(Number.isNaN(cpuMicros(2 ** 30)), 'no such process');
});
