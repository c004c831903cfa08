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
export function uuidv7(time: number = Date.now()): string {
  // Whole milliseconds (a fake clock may be anywhere between two).
  const now = Math.floor(time);
  if (now <= lastMs) {
    counter++;
    if (counter > 0xfff) {
      // Counter exhausted within one millisecond: borrow the next millisecond.
      lastMs++;
      counter = 0;
      timeText = timeTextOf(lastMs);
    }
  } else {
    lastMs = now;
    counter = 0;
    timeText = timeTextOf(now);
  }
  // Three parts joined: the time (made once a millisecond), version and counter (from a table),
  // and variant and random bits (cut from a string of many made at once). Writing each id's 36
  // characters into a buffer and reading them back was one call into the runtime per id: an id
  // and its frame text cost 1.09–1.56× as much (three runs of `node --import tsx bench/uuid.mts`).
  if (tailAt === TAILS) refillTails();
  const tail = tails.slice(tailAt * TAIL, tailAt * TAIL + TAIL);
  tailAt++;
  return timeText + counterText(counter) + tail;
}

/** `xxxxxxxx-xxxx-`: the 48-bit millisecond timestamp of a UUIDv7, as hex with its dashes. */
function timeTextOf(ms: number): string {
  const hex = ms.toString(16).padStart(12, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-`;
}

let timeText = '';

/** `7xxx-`: the version and the 12-bit counter, made the first time each is used. */
const counters: string[] = [];

function counterText(n: number): string {
  let text = counters[n];
  if (text === undefined) {
    text = `7${n.toString(16).padStart(3, '0')}-`;
    counters[n] = text;
  }
  return text;
}

/** `yxxx-xxxxxxxxxxxx`: the RFC 9562 variant and 62 random bits, 17 characters. */
const TAIL = 17;
/** Tails made at a time, in one string. */
const TAILS = 128;
const tailBytes = Buffer.alloc(TAILS * TAIL);
let tails = '';
let tailAt = TAILS;

function refillTails(): void {
  for (let i = 0; i < TAILS; i++) {
    const r = randomBytes8();
    const at = i * TAIL;
    putHexAt(tailBytes, at, 0x80 | ((pool[r] as number) & 0x3f));
    putHexAt(tailBytes, at + 2, pool[r + 1] as number);
    tailBytes[at + 4] = DASH;
    for (let k = 0; k < 6; k++) putHexAt(tailBytes, at + 5 + 2 * k, pool[r + 2 + k] as number);
  }
  tails = tailBytes.toString('latin1');
  tailAt = 0;
}

const HEX_CODES = Buffer.from('0123456789abcdef', 'latin1');
const DASH = '-'.charCodeAt(0);

function putHexAt(buffer: Buffer, at: number, byte: number): void {
  buffer[at] = HEX_CODES[byte >>> 4] as number;
  buffer[at + 1] = HEX_CODES[byte & 0x0f] as number;
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
    for (let j = 0; j < n; j++) putHexAt(hexScratch, 2 * (i + j), pool[r + j] as number);
  }
  return hexScratch.toString('latin1', 0, 2 * bytes);
}

const hexScratch = Buffer.alloc(64);
