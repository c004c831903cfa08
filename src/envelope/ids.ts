/**
 * @module envelope/ids
 * Time-sortable message ids: UUIDv7 (RFC 9562). Within one millisecond a 12-bit counter in
 * `rand_a` keeps ids from one process strictly increasing; random bytes come from a pool so an
 * id costs no system call.
 */
import { randomFillSync } from 'node:crypto';

const POOL_SIZE = 8 * 1024;
const pool = Buffer.allocUnsafe(POOL_SIZE);
let poolOffset = POOL_SIZE;
let lastMs = -1;
let counter = 0;

const hex: string[] = [];
for (let i = 0; i < 256; i++) hex.push(i.toString(16).padStart(2, '0'));

function randomBytes8(): number {
  if (poolOffset + 8 > POOL_SIZE) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const at = poolOffset;
  poolOffset += 8;
  return at;
}

/** A new UUIDv7 string. `now` is injectable for tests. */
export function uuidv7(now: number = Date.now()): string {
  let ms = now;
  if (ms <= lastMs) {
    ms = lastMs;
    counter++;
    if (counter > 0xfff) {
      // Counter exhausted within one millisecond: borrow the next millisecond.
      ms = ++lastMs;
      counter = 0;
    }
  } else {
    lastMs = ms;
    counter = 0;
  }
  const r = randomBytes8();
  const hi = Math.floor(ms / 0x10000);
  const lo = ms % 0x10000;
  const b = (i: number): number => pool[r + i] as number;
  return (
    h(hi >>> 24) +
    h(hi >>> 16) +
    h(hi >>> 8) +
    h(hi) +
    '-' +
    h(lo >>> 8) +
    h(lo) +
    '-' +
    h(0x70 | ((counter >>> 8) & 0x0f)) +
    h(counter) +
    '-' +
    h(0x80 | (b(0) & 0x3f)) +
    h(b(1)) +
    '-' +
    h(b(2)) +
    h(b(3)) +
    h(b(4)) +
    h(b(5)) +
    h(b(6)) +
    h(b(7))
  );
}

function h(byte: number): string {
  return hex[byte & 0xff] as string;
}

/** The millisecond timestamp inside a UUIDv7. */
export function uuidv7Time(id: string): number {
  return Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
}

/** `bytes` random bytes as lowercase hex, from the same pool (trace and span ids). */
export function randomHex(bytes: number): string {
  let out = '';
  for (let i = 0; i < bytes; i += 8) {
    const r = randomBytes8();
    const n = Math.min(8, bytes - i);
    for (let j = 0; j < n; j++) out += h(pool[r + j] as number);
  }
  return out;
}
