/**
 * `npm run bench`: Parley beside its peers, in one run, on this machine.
 *   --quick        one short run of everything (CI: checks the suite runs, never its numbers)
 *   --only=SUITE   in-process | rpc | events | memory
 *   --system=TEXT  only systems whose name contains TEXT
 * Prints a table of medians with min–max and ratios, writes results/latest.json and latest.svg.
 */
import { loadavg } from 'node:os';
import { type EventSystem, eventSystems } from './events/systems.ts';
import { startKafkaMock } from './lib/kafka-mock.ts';
import type { LoadResult } from './lib/load.ts';
import { mosquittoBinary, startMosquitto } from './lib/mosquitto.ts';
import { reachable } from './lib/net.ts';
import { type Child, pinned, startChild } from './lib/proc.ts';
import {
  benchRoot,
  machine,
  packageVersions,
  printTable,
  Results,
  type Row,
  writeResults,
} from './lib/report.ts';
import type { Workload } from './rpc/proc.ts';
import { rpcSystems } from './rpc/systems.ts';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const only = args.find((a) => a.startsWith('--only='))?.slice(7);
/** `--system=A,B`: only systems whose name contains one of the texts (for working on a row). */
const systemFilter = args
  .find((a) => a.startsWith('--system='))
  ?.slice(9)
  .split(',');
const wanted = (system: string) => systemFilter === undefined || systemFilter.some((t) => system.includes(t));
const RUNS = quick ? 1 : 3;
/** Extra runs allowed when a row's runs spread more than 25% (a noisy neighbour took the CPU). */
const EXTRA = quick ? 0 : 2;
const results = new Results();
const started = Date.now();

const brokers: Record<string, boolean> = {
  nats: await reachable(4222),
  redis: await reachable(6379),
  rabbitmq: await reachable(5672),
  mqtt: await reachable(1883),
};

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

/** Runs `once` RUNS times, plus up to EXTRA more while the main metric's runs spread > 25%. */
async function measure(label: string, once: () => Promise<void>, spread: () => number[]): Promise<void> {
  for (let i = 0; i < RUNS; i++) await once();
  let extra = 0;
  for (; extra < EXTRA; extra++) {
    const v = spread();
    if (v.length === 0 || Math.max(...v) / Math.min(...v) <= 1.25) break;
    log(`  ${label}: runs spread ${(Math.max(...v) / Math.min(...v)).toFixed(2)}×, one more run`);
    await once();
  }
  if (extra > 0) results.notes.push(`${label}: ${RUNS + extra} runs, because runs spread more than 25%`);
}

/**
 * Like `measure`, for several systems at once: run 1 of each, then run 2 of each, and so on, so
 * that a slow stretch of a shared machine hits every system alike and ratios stay fair.
 */
async function measureInterleaved(
  items: { label: string; once: () => Promise<void>; spread: () => number[] }[],
): Promise<void> {
  for (let i = 0; i < RUNS; i++) for (const item of items) await item.once();
  for (const item of items) {
    let extra = 0;
    for (; extra < EXTRA; extra++) {
      const v = item.spread();
      if (v.length === 0 || Math.max(...v) / Math.min(...v) <= 1.25) break;
      log(`  ${item.label}: runs spread ${(Math.max(...v) / Math.min(...v)).toFixed(2)}×, one more run`);
      await item.once();
    }
    if (extra > 0)
      results.notes.push(`${item.label}: ${RUNS + extra} runs, because runs spread more than 25%`);
  }
}

// ---------------------------------------------------------------- in-process
if (only === undefined || only === 'in-process') {
  const calls = quick ? 20_000 : 1_000_000;
  for (const system of [
    'parley',
    'parley + policies',
    'parley + metrics',
    'moleculer',
    'moleculer + metrics',
  ]) {
    if (!wanted(system)) continue;
    for (const validate of [false, true]) {
      for (const handler of ['sync', 'async'] as const) {
        const label = `${validate ? 'validated' : 'no validation'}`;
        const suffix = handler === 'async' ? ', async handler' : '';
        log(`in-process: ${system}, ${label}${suffix}`);
        await measure(
          `in-process ${system} ${label}${suffix}`,
          async () => {
            const child = startChild(
              'inprocess.ts',
              [system, validate ? '1' : '0', handler, String(calls)],
              1,
            );
            try {
              for (let i = 0; i < 2; i++) {
                const r = await child.next<{ case: string; perSecond: number }>();
                results.add(
                  {
                    suite: 'in-process',
                    case: `${label}, ${r.case}${suffix}`,
                    system,
                    metric: 'throughput',
                    unit: 'calls/s',
                    higherIsBetter: true,
                  },
                  r.perSecond,
                );
              }
            } finally {
              await child.stop();
            }
          },
          () => results.runsOf('in-process', `${label}, sequential${suffix}`, system, 'throughput'),
        );
      }
    }
  }
}

// ---------------------------------------------------------------- rpc and server memory
if (only === undefined || only === 'rpc' || only === 'memory') {
  const s = quick ? 0.3 : 2;
  const workloads: Workload[] = [
    { name: 'c=1', concurrency: 1, size: 'small', seconds: s, warmup: quick ? 0.1 : 0.5 },
    { name: 'c=64', concurrency: 64, size: 'small', seconds: quick ? s : 3, warmup: quick ? 0.1 : 0.5 },
    { name: '64 KiB, c=16', concurrency: 16, size: '64k', seconds: s, warmup: quick ? 0.1 : 0.5 },
  ];
  const items: Parameters<typeof measureInterleaved>[0] = [];
  for (const [system, def] of Object.entries(rpcSystems)) {
    if (!wanted(system)) continue;
    if (def.needs !== undefined && !brokers[def.needs]) {
      results.skipped.push({ suite: 'rpc', system, reason: `${def.needs} is not reachable on 127.0.0.1` });
      continue;
    }
    items.push({
      label: `rpc ${system}`,
      once: async () => {
        log(`rpc: ${system}`);
        const server = startChild('rpc/proc.ts', ['server', system], 0);
        let client: Child | undefined;
        try {
          const { port } = await server.next<{ port: number }>();
          await new Promise((r) => setTimeout(r, quick ? 100 : 500));
          const mem = { suite: 'memory', system, metric: 'rss', unit: 'MiB', higherIsBetter: false };
          results.add({ ...mem, case: 'idle server' }, server.rssMiB());
          client = startChild(
            'rpc/proc.ts',
            ['client', system, String(port), JSON.stringify(workloads), String(server.proc.pid)],
            1,
          );
          for (const w of workloads) {
            const r = await client.next<
              { workload: string; serverCpuUs: number; clientCpuUs: number } & LoadResult
            >(120_000);
            if (w.concurrency === 64) results.add({ ...mem, case: 'serving c=64' }, server.rssMiB());
            const row = { suite: 'rpc', case: w.name, system };
            results.add({ ...row, metric: 'throughput', unit: 'req/s', higherIsBetter: true }, r.perSecond);
            if (w.concurrency === 64) {
              // CPU time per call, each side's process: what a call costs where the machine is the
              // limit, and which side limits the rate (a side near one CPU's worth is the limit).
              const cpu = { ...row, unit: 'µs/req', higherIsBetter: false };
              results.add({ ...cpu, metric: 'server CPU' }, r.serverCpuUs);
              results.add({ ...cpu, metric: 'client CPU' }, r.clientCpuUs);
            }
            if (w.concurrency === 1) {
              results.add({ ...row, metric: 'p50', unit: 'ms', higherIsBetter: false }, r.p50ms);
              results.add({ ...row, metric: 'p99', unit: 'ms', higherIsBetter: false }, r.p99ms);
            }
          }
        } finally {
          await client?.stop();
          await server.stop();
        }
      },
      spread: () => results.runsOf('rpc', 'c=64', system, 'throughput'),
    });
  }
  await measureInterleaved(items);
}

// ---------------------------------------------------------------- node memory
if (only === undefined || only === 'memory') {
  for (const system of ['parley', 'moleculer']) {
    log(`memory: ${system} idle node`);
    for (let i = 0; i < RUNS; i++) {
      const child = startChild('memory.ts', [system], 1);
      try {
        await child.next();
        await new Promise((r) => setTimeout(r, 300));
        results.add(
          { suite: 'memory', case: 'idle node', system, metric: 'rss', unit: 'MiB', higherIsBetter: false },
          child.rssMiB(),
        );
      } finally {
        await child.stop();
      }
    }
  }
}

// ---------------------------------------------------------------- events
if (only === undefined || only === 'events') {
  const defaultCount = quick ? 2_000 : 100_000;
  // Systems take turns run by run, as in the RPC suite: a neighbour's load falls on a Parley row
  // and on the raw row it is divided by alike.
  const items: { label: string; once: () => Promise<void>; spread: () => number[] }[] = [];
  // Servers the bench starts for itself, once for the suite (why: bench/lib/mosquitto.ts and
  // bench/lib/kafka-mock.ts); children find them in their environment.
  const needed = new Set(
    Object.entries(eventSystems)
      .filter(([system]) => wanted(system))
      .map(([, def]) => def.needs),
  );
  const own: { stop(): Promise<void> }[] = [];
  const unavailable = new Map<string, string>();
  if (needed.has('mosquitto')) {
    const binary = mosquittoBinary();
    if (binary === undefined)
      unavailable.set('mosquitto', 'no mosquitto program to start a server of its own');
    else {
      try {
        const server = await startMosquitto(binary);
        own.push(server);
        process.env.PARLEY_BENCH_MOSQUITTO = server.url;
        log(`events: the bench's own Mosquitto at ${server.url}`);
      } catch (error) {
        unavailable.set('mosquitto', (error as Error).message);
      }
    }
  }
  if (needed.has('kafka-mock')) {
    const cluster = await startKafkaMock().catch(
      (error: Error) => `the mock cluster did not start: ${error.message}`,
    );
    if (typeof cluster === 'string') unavailable.set('kafka-mock', cluster);
    else {
      own.push(cluster);
      process.env.PARLEY_BENCH_KAFKA = cluster.brokers;
      log(`events: librdkafka's mock cluster at ${cluster.brokers}`);
    }
  }
  // Under CI one that cannot start fails the run, as an unreachable broker does.
  for (const need of ['mosquitto', 'kafka-mock'])
    if (needed.has(need as EventSystem['needs'])) brokers[need] = !unavailable.has(need);
  for (const [system, def] of Object.entries(eventSystems)) {
    if (!wanted(system)) continue;
    const why = unavailable.get(def.needs);
    if (why !== undefined) {
      results.skipped.push({ suite: 'events', system, reason: why });
      continue;
    }
    if (def.needs !== 'none' && !brokers[def.needs]) {
      results.skipped.push({ suite: 'events', system, reason: `${def.needs} is not reachable on 127.0.0.1` });
      continue;
    }
    const count = quick ? defaultCount : (def.messages ?? defaultCount);
    for (const groups of [1, 4]) {
      const kase = groups === 1 ? '1 → 1' : '1 → 4 groups';
      items.push({
        label: `events ${system} ${kase}`,
        once: async () => {
          log(`events: ${system}, ${kase}`);
          const topic = `parley-bench-${process.pid}-${Date.now()}`;
          const sub = startChild(
            'events/proc.ts',
            ['subscribe', system, topic, String(groups), String(count)],
            0,
          );
          let pub: Child | undefined;
          try {
            await sub.next();
            pub = startChild('events/proc.ts', ['publish', system, topic, String(count)], 1);
            const { start } = await pub.next<{ start: number }>();
            const done = await sub.next<{ at: number }>(180_000);
            results.add(
              {
                suite: 'events',
                case: kase,
                system,
                metric: 'throughput',
                unit: 'msg/s',
                higherIsBetter: true,
              },
              count / ((done.at - start) / 1000),
            );
          } finally {
            await pub?.stop();
            await sub.stop();
            const cleanup = startChild('events/proc.ts', ['cleanup', system, topic, String(groups)], 1);
            await cleanup.next().catch(() => undefined);
            await cleanup.stop();
          }
        },
        spread: () => results.runsOf('events', kase, system, 'throughput'),
      });
    }
  }
  try {
    await measureInterleaved(items);
  } finally {
    for (const server of own) await server.stop();
  }
}

// ---------------------------------------------------------------- report
const rows = results.rows(!quick);
const date = new Date().toISOString();
const report = {
  date,
  quick,
  runs: RUNS,
  pinned,
  seconds: Math.round((Date.now() - started) / 1000),
  node: process.version,
  machine: machine(),
  loadavgAtEnd: loadavg(),
  packages: packageVersions([
    'parley',
    'moleculer',
    '@nestjs/microservices',
    '@grpc/grpc-js',
    'fastify',
    'undici',
    'nats',
    'amqplib',
    'ioredis',
    'mqtt',
    '@confluentinc/kafka-javascript',
    'zod',
  ]),
  skipped: results.skipped,
  notes: results.notes,
};
const headline = rows.filter(
  (r: Row) =>
    r.metric === 'throughput' &&
    ((r.suite === 'rpc' && r.case === 'c=64') ||
      (r.suite === 'in-process' && r.case.startsWith('validated, sequential')) ||
      (r.suite === 'events' && r.case === '1 → 1')),
);
// A quick or partial run never replaces the results of a full run.
const partial = only !== undefined || systemFilter !== undefined;
writeResults(new URL('results/', benchRoot), quick ? 'quick' : partial ? 'partial' : 'latest', {
  report,
  rows,
  headline,
});
console.log(
  `Parley benchmarks — ${date}, Node ${process.version}, ${report.machine.cpus} × ${report.machine.cpuModel}`,
);
console.log(
  `${quick ? 'quick run (numbers are not meaningful)' : `median of ${RUNS} runs`}; ${pinned ? 'server and client pinned to different CPUs' : 'not pinned'}; ${report.seconds} s`,
);
console.log(printTable(rows, results.skipped));
for (const n of results.notes) console.log(`note: ${n}`);
console.log(`\nwritten: bench/results/${quick ? 'quick' : partial ? 'partial' : 'latest'}.json and .svg`);
const brokerDown = Object.entries(brokers).filter(([, up]) => !up);
if (process.env.CI === 'true' && brokerDown.length > 0) {
  console.error(`CI: brokers unreachable: ${brokerDown.map(([b]) => b).join(', ')}`);
  process.exit(1);
}
process.exit(0);
