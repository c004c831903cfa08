/**
 * What reading an envelope costs by how it was built: the brokers' publish check
 * (`checkPublish`) and `JSON.stringify` over 1,000 envelopes in turn, for envelopes built as
 * `createEnvelope` once did (`{ ...init, specversion, id, time }`), as it does now (one fixed
 * shape, then the other attributes), and as the runtime builds an event (`baseEnvelope`, then
 * `dataschema`). Each kind runs in a process of its own, so one kind's hidden classes do not
 * slow the next; medians of 5 rounds of 1,000,000 calls.
 *   node --import tsx bench/envelope-shape.mts
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { checkPublish } from '../src/broker/check.ts';
import { baseEnvelope, createEnvelope, type Envelope } from '../src/envelope/envelope.ts';

const KINDS = ['spread (before)', 'createEnvelope', 'runtime event'] as const;
type Kind = (typeof KINDS)[number];

function build(kind: Kind, i: number): Envelope {
  const init = { source: '/parley/bench', type: 'bench.tick', data: { seq: i, note: 'x'.repeat(80) } };
  if (kind === 'createEnvelope') return createEnvelope(init);
  if (kind === 'runtime event') {
    const env = baseEnvelope(init.source, init.type, init.data, Date.now());
    env.dataschema = 'urn:parley:bench:bench.tick:v1';
    return env;
  }
  return { ...init, specversion: '1.0', id: `e-${i}`, time: new Date().toISOString() };
}

function median(f: (e: Envelope) => unknown, list: Envelope[]): number {
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < 1_000_000; i++) f(list[i % list.length] as Envelope);
    rounds.push(Number(process.hrtime.bigint() - t) / 1_000_000);
  }
  return rounds.sort((a, b) => a - b)[2] as number;
}

const kind = process.argv[2] as Kind | undefined;
if (kind !== undefined) {
  const list = Array.from({ length: 1000 }, (_, i) => build(kind, i));
  const check = median((e) => checkPublish(e, undefined), list);
  const stringify = median((e) => JSON.stringify(e), list);
  process.stdout.write(`| ${kind} | ${check.toFixed(0)} ns | ${stringify.toFixed(0)} ns |\n`);
} else {
  process.stdout.write('| built as | checkPublish | JSON.stringify |\n| --- | --- | --- |\n');
  const self = fileURLToPath(import.meta.url);
  for (const k of KINDS) {
    process.stdout.write(execFileSync(process.execPath, ['--import', 'tsx', self, k], { encoding: 'utf8' }));
  }
}
