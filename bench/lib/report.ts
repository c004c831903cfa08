/**
 * Results: rows with medians and ranges, ratios against a baseline system, goals from the issues,
 * a printed table, `results/latest.json` and an SVG chart of the headline rows.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { median } from './stats.ts';

export interface Row {
  suite: string;
  case: string;
  system: string;
  metric: string;
  /** Median of `runs`. */
  value: number;
  unit: string;
  /** Every run's value, in order. */
  runs: number[];
  min: number;
  max: number;
  /** This row's value over its baseline's (same suite, case and metric). */
  ratio?: number;
  baseline?: string;
  goal?: string;
  pass?: boolean;
  higherIsBetter: boolean;
}

export interface Skip {
  suite: string;
  system: string;
  reason: string;
}

export class Results {
  private readonly values = new Map<
    string,
    { row: Omit<Row, 'value' | 'min' | 'max' | 'runs'>; runs: number[] }
  >();
  readonly skipped: Skip[] = [];
  readonly notes: string[] = [];

  add(
    r: { suite: string; case: string; system: string; metric: string; unit: string; higherIsBetter: boolean },
    value: number,
  ) {
    const key = [r.suite, r.case, r.system, r.metric].join('\u0000');
    const entry = this.values.get(key) ?? { row: r, runs: [] as number[] };
    entry.runs.push(value);
    this.values.set(key, entry);
  }

  runsOf(suite: string, kase: string, system: string, metric: string): number[] {
    return this.values.get([suite, kase, system, metric].join('\u0000'))?.runs ?? [];
  }

  /** `judge: false` (a quick run): goals are shown but not judged; such numbers mean nothing. */
  rows(judge = true): Row[] {
    const rows: Row[] = [];
    for (const { row, runs } of this.values.values()) {
      rows.push({ ...row, value: median(runs), runs, min: Math.min(...runs), max: Math.max(...runs) });
    }
    for (const row of rows) {
      const base = baselineOf(row);
      const b =
        base === undefined
          ? undefined
          : rows.find(
              (r) =>
                r.suite === row.suite && r.case === row.case && r.metric === row.metric && r.system === base,
            );
      if (b !== undefined && b !== row) {
        row.ratio = row.value / b.value;
        row.baseline = base;
      }
      const goal = GOALS.find(
        (g) =>
          g.suite === row.suite && g.case === row.case && g.system === row.system && g.metric === row.metric,
      );
      if (goal !== undefined) {
        row.goal = `${goal.text} (issue ${goal.issue})`;
        if (judge) row.pass = goal.check(row, rows);
      }
    }
    return rows;
  }
}

/** What each row is compared with: the near-physical limit, the best-known peer, or the raw client. */
function baselineOf(row: Row): string | undefined {
  // The policy stack and metrics are measured against the same system without them.
  for (const extra of [' + policies', ' + metrics']) {
    if (row.system.endsWith(extra)) return row.system.slice(0, -extra.length);
  }
  if (row.suite === 'in-process') return 'moleculer';
  // RPC over a broker beside that broker's raw client doing request/reply on the same server.
  if (row.suite === 'rpc' && row.system === 'parley nats') return 'raw nats request';
  if (row.suite === 'rpc' && row.system === 'parley redis') return 'raw ioredis request';
  if (row.suite === 'rpc' && row.system === 'parley rabbitmq') return 'raw amqplib request';
  if (row.suite === 'rpc' && row.system === 'parley mqtt') return 'raw mqtt request';
  if (row.suite === 'rpc') return 'raw node:net';
  if (row.suite === 'memory') return row.case === 'idle node' ? 'moleculer' : 'raw node:net';
  if (row.suite === 'events') {
    // Parley's durable rows against RabbitMQ's durable publish with confirms and manual acks.
    if (row.system.startsWith('parley embedded')) return 'raw amqplib';
    // Parley on a real broker against the raw client of the same broker doing the same work.
    if (row.system === 'parley nats jetstream') return 'raw jetstream';
    if (row.system === 'parley redis streams') return 'raw ioredis streams';
    if (row.system === 'parley rabbitmq') return 'raw amqplib quorum';
    if (row.system === 'parley mqtt') return 'raw mqtt';
    if (row.system === 'parley kafka (mock cluster)') return 'raw kafka (mock cluster)';
    if (row.system.includes('nats') && !row.system.startsWith('raw')) return 'raw nats';
    return undefined;
  }
  return undefined;
}

interface Goal {
  suite: string;
  case: string;
  system: string;
  metric: string;
  issue: number;
  text: string;
  check(row: Row, rows: readonly Row[]): boolean;
}

/** Goals set by the issues; each later issue adds its rows' goals here. */
const GOALS: Goal[] = [
  ...['1 → 1', '1 → 4 groups'].map(
    (kase): Goal => ({
      suite: 'events',
      case: kase,
      system: 'parley embedded',
      metric: 'throughput',
      issue: 4,
      text: '≥ 2× raw amqplib (persistent, confirms)',
      check: (r) => (r.ratio ?? 0) >= 2,
    }),
  ),
  {
    suite: 'rpc',
    case: 'c=64',
    system: 'parley tcp',
    metric: 'throughput',
    issue: 5,
    text: '≥ 0.75× raw node:net and ≥ 2.3× the best peer',
    check: (r, rows) => {
      const peers = rows.filter(
        (o) =>
          o.suite === 'rpc' &&
          o.case === 'c=64' &&
          o.metric === 'throughput' &&
          !o.system.startsWith('parley') &&
          !o.system.startsWith('raw'),
      );
      const best = Math.max(0, ...peers.map((o) => o.value));
      return (r.ratio ?? 0) >= 0.75 && r.value >= 2.3 * best;
    },
  },
  // Issue 7: Parley on real brokers beside the raw client of the same broker, in the same run.
  ...(
    [
      ['parley nats notify', 0.8, 'raw nats'],
      ['parley nats jetstream', 0.8, 'raw jetstream (acked publishes, explicit acks)'],
      ['parley redis streams', 0.8, 'raw ioredis streams'],
      ['parley rabbitmq', 0.9, 'raw amqplib (quorum queues, confirms, manual acks)'],
    ] as const
  ).flatMap(([system, min, raw]) =>
    ['1 → 1', '1 → 4 groups'].map(
      (kase): Goal => ({
        suite: 'events',
        case: kase,
        system,
        metric: 'throughput',
        issue: 7,
        text: `≥ ${min}× ${raw}`,
        check: (r) => (r.ratio ?? 0) >= min,
      }),
    ),
  ),
  {
    suite: 'rpc',
    case: 'c=64',
    system: 'parley nats',
    metric: 'throughput',
    issue: 7,
    text: '≥ 1.5× moleculer nats',
    check: (r, rows) => {
      const moleculer = rows.find(
        (o) =>
          o.suite === 'rpc' &&
          o.case === 'c=64' &&
          o.metric === 'throughput' &&
          o.system === 'moleculer nats',
      );
      return moleculer !== undefined && r.value >= 1.5 * moleculer.value;
    },
  },
  {
    suite: 'rpc',
    case: 'c=64',
    system: 'parley gateway (tcp)',
    metric: 'throughput',
    issue: 8,
    text: '≥ 0.6× fastify+undici (bare route) and ≥ 2× moleculer-web',
    check: (r, rows) => {
      const of = (system: string) =>
        rows.find(
          (o) => o.suite === 'rpc' && o.case === 'c=64' && o.metric === 'throughput' && o.system === system,
        );
      const bare = of('fastify+undici');
      const web = of('moleculer-web');
      return (
        bare !== undefined && web !== undefined && r.value >= 0.6 * bare.value && r.value >= 2 * web.value
      );
    },
  },
  {
    suite: 'rpc',
    case: 'c=64',
    system: 'parley tcp + policies',
    metric: 'throughput',
    issue: 6,
    text: 'default policies cost ≤ 10%',
    check: (r) => (r.ratio ?? 0) >= 0.9,
  },
  {
    suite: 'rpc',
    case: 'c=1',
    system: 'parley tcp',
    metric: 'p50',
    issue: 5,
    text: '≤ 1.15× raw node:net',
    check: (r) => r.ratio !== undefined && r.ratio <= 1.15,
  },
  {
    suite: 'in-process',
    case: 'no validation, 100 in flight',
    system: 'parley',
    metric: 'throughput',
    issue: 2,
    text: '≥ 2 M calls/s',
    check: (r) => r.value >= 2e6,
  },
  {
    suite: 'in-process',
    case: 'validated, 100 in flight',
    system: 'parley',
    metric: 'throughput',
    issue: 2,
    text: '≥ 1 M calls/s',
    check: (r) => r.value >= 1e6,
  },
];

export function format(value: number, unit: string): string {
  if (!Number.isFinite(value)) return '—';
  if (unit === 'ms') return value < 1 ? `${value.toFixed(3)} ms` : `${value.toFixed(2)} ms`;
  if (unit === 'MiB') return `${value.toFixed(1)} MiB`;
  if (unit === 'µs/req') return `${value.toFixed(1)} µs/req`;
  if (value >= 1e6) return `${(value / 1e6).toFixed(2)} M ${unit}`;
  if (value >= 1e4) return `${(value / 1e3).toFixed(1)} k ${unit}`;
  return `${value.toFixed(0)} ${unit}`;
}

export function printTable(rows: Row[], skipped: Skip[]): string {
  const lines: string[] = [];
  for (const suite of [...new Set(rows.map((r) => r.suite))]) {
    lines.push(
      '',
      `### ${suite}`,
      '',
      '| case | system | metric | median | min–max | ratio | goal |',
      '| --- | --- | --- | --- | --- | --- | --- |',
    );
    for (const r of rows.filter((x) => x.suite === suite)) {
      const ratio = r.ratio === undefined ? '' : `${r.ratio.toFixed(2)}× ${r.baseline}`;
      const verdict = r.pass === undefined ? 'not judged (quick run)' : r.pass ? 'PASS' : 'FAIL';
      const goal = r.goal === undefined ? '' : `${r.goal}: ${verdict}`;
      lines.push(
        `| ${r.case} | ${r.system} | ${r.metric} | ${format(r.value, r.unit)} | ${format(r.min, r.unit)}–${format(r.max, r.unit)} | ${ratio} | ${goal} |`,
      );
    }
  }
  if (skipped.length > 0) {
    lines.push('', 'Skipped:');
    for (const s of skipped) lines.push(`- ${s.suite} / ${s.system}: ${s.reason}`);
  }
  return lines.join('\n');
}

export function machine() {
  const cpu = cpus();
  return {
    cpuModel: cpu[0]?.model ?? 'unknown',
    cpus: cpu.length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    platform: `${process.platform} ${process.arch}`,
    loadavgAtStart: loadavg(),
  };
}

/** The bench folder. This module runs compiled, from `bench/.build/lib/`. */
export const benchRoot = new URL('../../', import.meta.url);

export function packageVersions(names: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  const read = (url: URL) => (JSON.parse(readFileSync(url, 'utf8')) as { version: string }).version;
  for (const name of names) {
    const places =
      name === 'parley'
        ? [new URL('../package.json', benchRoot)]
        : [
            new URL(`node_modules/${name}/package.json`, benchRoot),
            new URL(`../node_modules/${name}/package.json`, benchRoot),
          ];
    out[name] = 'not installed';
    for (const place of places) {
      try {
        out[name] = read(place);
        break;
      } catch {
        // not in this place
      }
    }
  }
  return out;
}

export function writeResults(
  dir: URL,
  name: string,
  out: { report: Record<string, unknown>; rows: Row[]; headline: Row[] },
): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    new URL(`${name}.json`, dir),
    `${JSON.stringify({ ...out.report, rows: out.rows }, null, 2)}\n`,
  );
  writeFileSync(new URL(`${name}.svg`, dir), chart(out.headline, String(out.report.date)));
}

/** Horizontal bars, one group per suite/case/metric, each scaled to its group's largest value. */
function chart(rows: Row[], date: string): string {
  const groups = new Map<string, Row[]>();
  for (const r of rows) {
    const k = `${r.suite}: ${r.case} (${r.unit}, higher is better)`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  const barH = 18;
  const width = 760;
  const labelW = 170;
  let y = 40;
  const parts: string[] = [];
  for (const [title, list] of groups) {
    parts.push(`<text x="10" y="${y}" font-weight="bold">${escapeXml(title)}</text>`);
    y += 10;
    const max = Math.max(...list.map((r) => r.value));
    for (const r of [...list].sort((a, b) => b.value - a.value)) {
      const w = Math.max(1, ((width - labelW - 110) * r.value) / max);
      const color = r.system.startsWith('parley') ? '#2f6fde' : '#9aa5b1';
      parts.push(`<text x="10" y="${y + 13}">${escapeXml(r.system)}</text>`);
      parts.push(
        `<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH - 4}" fill="${color}"/>`,
      );
      parts.push(`<text x="${labelW + w + 6}" y="${y + 12}">${escapeXml(format(r.value, r.unit))}</text>`);
      y += barH;
    }
    y += 16;
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y + 10}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="14" font-weight="bold">Parley benchmarks (${escapeXml(date)}; medians)</text>
${parts.join('\n')}
</svg>
`;
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
