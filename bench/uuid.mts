/**
 * What an event id costs: `uuidv7` (three parts joined: the time once a millisecond, version and
 * counter from a table, variant and random bits cut from a string of 128 made at once) against
 * the way it was made before (each id's 36 characters written into a buffer and read back as a
 * string: one call into the runtime per id), each id put into frame text as a notification batch
 * does and the text turned into bytes every 400 ids, so the cost of joining strings is paid where
 * it falls. Each way in 5 processes, alternated, each the median of 5 rounds of 1,000,000 ids;
 * the median of those 5.
 *   node --import tsx bench/uuid.mts
 */
import { Buffer } from 'node:buffer';
import { randomFillSync } from 'node:crypto';
import { uuidv7 } from '../src/envelope/ids.ts';

// The former way, kept here as the reference.
const pool = Buffer.allocUnsafe(8 * 1024);
let poolAt = pool.length;
const scratch = Buffer.alloc(36, '-'.charCodeAt(0));
const HEX = Buffer.from('0123456789abcdef', 'latin1');
let lastMs = -1;
let counter = 0;
const put = (at: number, byte: number) => {
  scratch[at] = HEX[byte >>> 4] as number;
  scratch[at + 1] = HEX[byte & 0x0f] as number;
};
function bufferWay(now: number): string {
  let ms = now;
  if (ms <= lastMs) {
    ms = lastMs;
    if (++counter > 0xfff) {
      ms = ++lastMs;
      counter = 0;
    }
  } else {
    lastMs = ms;
    counter = 0;
  }
  if (poolAt + 8 > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  const r = poolAt;
  poolAt += 8;
  const hi = Math.floor(ms / 0x10000);
  const lo = ms % 0x10000;
  put(0, (hi >>> 24) & 0xff);
  put(2, (hi >>> 16) & 0xff);
  put(4, (hi >>> 8) & 0xff);
  put(6, hi & 0xff);
  put(9, (lo >>> 8) & 0xff);
  put(11, lo & 0xff);
  put(14, 0x70 | ((counter >>> 8) & 0x0f));
  put(16, counter & 0xff);
  put(19, 0x80 | ((pool[r] as number) & 0x3f));
  put(21, pool[r + 1] as number);
  for (let k = 0; k < 6; k++) put(24 + 2 * k, pool[r + 2 + k] as number);
  return scratch.toString('latin1', 0, 36);
}

function median(make: (now: number) => string): number {
  const rounds: number[] = [];
  let bytes = 0;
  for (let r = 0; r < 5; r++) {
    const t = process.hrtime.bigint();
    let text = '';
    for (let i = 0; i < 1_000_000; i++) {
      text += `["${make(Date.now())}",0,0,{}],`;
      if (i % 400 === 399) {
        bytes += Buffer.from(text, 'utf8').byteLength;
        text = '';
      }
    }
    rounds.push(Number(process.hrtime.bigint() - t) / 1_000_000);
  }
  if (bytes === 0) throw new Error('nothing made');
  return rounds.sort((a, b) => a - b)[2] as number;
}

// Each way in a process of its own, so that neither runs on code the other one shaped.
const way = process.argv[2];
if (way === 'before' || way === 'now') {
  process.stdout.write(`${median(way === 'before' ? bufferWay : uuidv7)}\n`);
} else {
  const { execFileSync } = await import('node:child_process');
  const run = (w: string) =>
    Number(
      execFileSync(process.execPath, [...process.execArgv, import.meta.filename, w], { encoding: 'utf8' }),
    );
  // Alternated, five processes each: this machine's speed drifts between processes.
  const befores: number[] = [];
  const nows: number[] = [];
  for (let i = 0; i < 5; i++) {
    befores.push(run('before'));
    nows.push(run('now'));
  }
  const mid = (xs: number[]) => xs.sort((a, b) => a - b)[2] as number;
  const before = mid(befores);
  const now = mid(nows);
  process.stdout.write(
    '| id and its frame text | ns per id |\n| --- | --- |\n' +
      `| written into a buffer, read back (before) | ${before.toFixed(0)} |\n` +
      `| three parts joined (uuidv7) | ${now.toFixed(0)} |\n` +
      `ratio ${(before / now).toFixed(2)}×\n`,
  );
}
