/**
 * What a remote call's request envelope costs to encode as JSON: the envelope object
 * (`callEnvelope`) then `codec.encode` (JSON.stringify and a Buffer), against the text written
 * directly (`callEnvelopeJson`) and a Buffer, for a call made outside a handler and one made
 * inside (trace, correlation and causation attributes) with a principal. Medians of 5 rounds of
 * 1,000,000 calls, each with a new id, as in a call.
 *   node --import tsx bench/envelope-text.mts
 */
import { Buffer } from 'node:buffer';
import { createJsonCodec } from '../src/codec/json.ts';
import type { Context } from '../src/runtime/context.ts';
import { callEnvelope, callEnvelopeJson } from '../src/runtime/envelopes.ts';

const codec = createJsonCodec();
const data = { a: 20, b: 22, note: 'x'.repeat(72) };
const parent = {
  service: 'orders',
  traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
  correlationId: '01a22eaa-8bd3-7000-be06-2ac875c0129f',
  id: '01a22eaa-8bd3-7000-be06-2ac875c01300',
} as unknown as Context;
const principal = JSON.stringify({ sub: 'ada', roles: ['customer'] });

function median(f: () => unknown): number {
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < 1_000_000; i++) f();
    rounds.push(Number(process.hrtime.bigint() - t) / 1_000_000);
  }
  return rounds.sort((a, b) => a - b)[2] as number;
}

process.stdout.write(
  '| call | object, then codec.encode | text written directly | ratio |\n| --- | --- | --- | --- |\n',
);
for (const [label, from, who] of [
  ['outside a handler', undefined, undefined],
  ['inside a handler, with a principal', parent, principal],
] as const) {
  const object = median(() => {
    const env = callEnvelope('bench-node', from, 'bench.add', data, Date.now(), Date.now() + 5000);
    if (who !== undefined) env.principal = who;
    return codec.encode(env);
  });
  const text = median(() =>
    Buffer.from(
      callEnvelopeJson('bench-node', from, 'bench.add', data, Date.now(), Date.now() + 5000, undefined, who),
      'utf8',
    ),
  );
  process.stdout.write(
    `| ${label} | ${object.toFixed(0)} ns | ${text.toFixed(0)} ns | ${(object / text).toFixed(2)}× |\n`,
  );
}
