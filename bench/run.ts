/**
 * `npm run bench`: runs each benchmark several times and prints medians with min–max.
 * `--quick` runs a short version (CI uses it to keep the suite from rotting, never for numbers).
 * The benchmark issue adds the peers (Moleculer, NestJS, gRPC, Fastify, raw sockets) beside these.
 */
import { inProcess, type Sample } from './inprocess.ts';

const quick = process.argv.includes('--quick');
const runs = quick ? 1 : 5;
const calls = quick ? 20_000 : 1_000_000;

const byCase = new Map<string, number[]>();
for (let r = 0; r < runs; r++) {
  const samples: Sample[] = await inProcess(calls);
  for (const s of samples) byCase.set(s.case, [...(byCase.get(s.case) ?? []), s.callsPerSecond]);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
};
const fmt = (n: number) => `${(n / 1e6).toFixed(2)} M/s`;

console.log(`in-process calls, ${calls} per run, ${runs} run(s), Node ${process.version}`);
console.log('| case | median | min–max |');
console.log('| --- | --- | --- |');
for (const [name, values] of byCase) {
  console.log(
    `| ${name} | ${fmt(median(values))} | ${fmt(Math.min(...values))}–${fmt(Math.max(...values))} |`,
  );
}
