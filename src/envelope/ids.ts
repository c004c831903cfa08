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
  // Written as ASCII into a scratch buffer and read back as one flat string: far fewer
  // allocations than joining twenty 2-character strings.
  const r = randomBytes8();
  const hi = Math.floor(ms / 0x10000);
  const lo = ms % 0x10000;
  putHex(0, (hi >>> 24) & 0xff);
  putHex(2, (hi >>> 16) & 0xff);
  putHex(4, (hi >>> 8) & 0xff);
  putHex(6, hi & 0xff);
  putHex(9, (lo >>> 8) & 0xff);
  putHex(11, lo & 0xff);
  putHex(14, 0x70 | ((counter >>> 8) & 0x0f));
  putHex(16, counter & 0xff);
  putHex(19, 0x80 | ((pool[r] as number) & 0x3f));
  putHex(21, pool[r + 1] as number);
  for (let k = 0; k < 6; k++) putHex(24 + 2 * k, pool[r + 2 + k] as number);
  return scratch.toString('latin1', 0, 36);
}

const HEX_CODES = Buffer.from('0123456789abcdef', 'latin1');
const scratch = Buffer.alloc(36, '-'.charCodeAt(0));

function putHex(at: number, byte: number): void {
  scratch[at] = HEX_CODES[byte >>> 4] as number;
  scratch[at + 1] = HEX_CODES[byte & 0x0f] as number;
}

/** The millisecond timestamp inside a UUIDv7. */
export function uuidv7Time(id: string): number {
  return Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
}

/** `bytes` random bytes as lowercase hex, from the same pool (trace and span ids). */
export function randomHex(bytes: number): string {
  if (bytes > 32) return randomHex(32) + randomHex(bytes - 32);
  for (let i = 0; i < bytes; i += 8) {
    const r = randomBytes8();
    const n = Math.min(8, bytes - i);
    for (let j = 0; j < n; j++) {
      const byte = pool[r + j] as number;
      hexScratch[2 * (i + j)] = HEX_CODES[byte >>> 4] as number;
      hexScratch[2 * (i + j) + 1] = HEX_CODES[byte & 0x0f] as number;
    }
  }
  return hexScratch.toString('latin1', 0, 2 * bytes);
}

const hexScratch = Buffer.alloc(64);
