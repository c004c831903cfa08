/**
 * What holding calls in flight costs the garbage collector, in a `Map` and in an `IdTable`
 * (`src/transport/id-table.ts`): 64 calls in flight, each new one under the next id, each holding
 * about 1 KB until it ends, with other short-lived garbage beside it, as a transport's pending
 * table sees them. A pause at the start holds the table across young collections, as a process
 * does while it starts or waits. Each way in 5 processes, alternated; per way the medians of the
 * time taken, of the process's CPU time over it (the collector's helper threads included), of
 * the main thread's time in young and in full collections, and of the count of full ones.
 *   node --import tsx bench/map-churn.mts
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { IdTable } from '../src/transport/id-table.ts';

const CALLS = 500_000;
const IN_FLIGHT = 64;

interface Table {
  set(id: number, value: object): void;
  get(id: number): object | undefined;
  delete(id: number): boolean;
}

async function child(kind: 'map' | 'idtable'): Promise<void> {
  const { PerformanceObserver, constants } = await import('node:perf_hooks');
  const table: Table = kind === 'map' ? new Map<number, object>() : new IdTable<object>();
  const call = (id: number) => ({ id, parts: Array.from({ length: 60 }, (_, i) => ({ i })) });
  let id = 0;
  const live: number[] = [];
  for (let i = 0; i < IN_FLIGHT; i++) {
    table.set(++id, call(id));
    live.push(id);
  }
  // The pause: young collections while the table is neither used nor replaced.
  let sink = 0;
  for (let r = 0; r < 100; r++) sink += Array.from({ length: 100_000 }, (_, i) => ({ i })).length;
  let minorMs = 0;
  let majorMs = 0;
  let majors = 0;
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const gcKind = (e as unknown as { detail: { kind: number } }).detail.kind;
      if (gcKind === constants.NODE_PERFORMANCE_GC_MINOR) minorMs += e.duration;
      if (gcKind === constants.NODE_PERFORMANCE_GC_MAJOR) {
        majorMs += e.duration;
        majors++;
      }
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  for (let n = 0; n < CALLS; n++) {
    table.set(++id, call(id));
    live.push(id);
    const done = live.shift() as number;
    sink += (table.get(done) as { id: number }).id;
    table.delete(done);
  }
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  // Entries of the last collections arrive in a later turn.
  await new Promise((r) => setTimeout(r, 50));
  observer.disconnect();
  process.stdout.write(`${JSON.stringify({ ms, cpuMs, minorMs, majorMs, majors, sink: sink > 0 })}\n`);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1] as number;

if (process.argv[2] === 'child') {
  await child(process.argv[3] as 'map' | 'idtable');
} else {
  const runs: Record<
    string,
    { ms: number; cpuMs: number; minorMs: number; majorMs: number; majors: number }[]
  > = {
    map: [],
    idtable: [],
  };
  const self = fileURLToPath(import.meta.url);
  for (let round = 0; round < 5; round++) {
    for (const kind of ['map', 'idtable']) {
      const out = spawnSync(process.execPath, ['--import', 'tsx', self, 'child', kind], { encoding: 'utf8' });
      if (out.status !== 0) throw new Error(out.stderr);
      runs[kind]?.push(JSON.parse(out.stdout));
    }
  }
  console.log(`${CALLS.toLocaleString('en')} calls, ${IN_FLIGHT} in flight; medians of 5 processes`);
  for (const [kind, rs] of Object.entries(runs)) {
    const m = (f: (r: (typeof rs)[number]) => number) => median(rs.map(f)).toFixed(0).padStart(6);
    console.log(
      `${kind.padEnd(8)} ${m((r) => r.ms)} ms (CPU ${m((r) => r.cpuMs)} ms, every thread)  young GC ${m((r) => r.minorMs)} ms  full GC ${m((r) => r.majorMs)} ms in ${m((r) => r.majors)}`,
    );
  }
}
