/**
 * A reference model of the token bucket, written for obviousness rather than speed: exact
 * BigInt arithmetic in micro-tokens, no bounds or shortcuts. The stores must admit exactly what it
 * admits; `randomRun` drives a limiter and the model side by side.
 */
import assert from 'node:assert/strict';
import type { RateLimiter } from '../src/gateway/rate-limit/limiter.ts';
import type { FakeClock } from '../src/runtime/clock.ts';

export class BucketModel {
  private tokens: bigint;
  private last: number | undefined;
  private readonly capacity: bigint;
  private readonly perMs: bigint;

  constructor(policy: { capacity: number; refillPerSecond: number }) {
    this.capacity = BigInt(policy.capacity) * 1_000_000n;
    this.perMs = BigInt(Math.round(policy.refillPerSecond * 1000));
    this.tokens = this.capacity;
  }

  private at(now: number): void {
    if (this.last !== undefined && now > this.last) {
      const t = this.tokens + BigInt(now - this.last) * this.perMs;
      this.tokens = t > this.capacity ? this.capacity : t;
    }
    if (this.last === undefined || now > this.last) this.last = now;
  }

  take(now: number, cost: number): boolean {
    this.at(now);
    const c = BigInt(cost) * 1_000_000n;
    if (this.tokens < c) return false;
    this.tokens -= c;
    return true;
  }

  /** Whole tokens now (after the last take). */
  remaining(): number {
    return Number(this.tokens / 1_000_000n);
  }

  /** Would a take of `cost` pass at `now`, without taking? */
  wouldPass(now: number, cost: number): boolean {
    const copy = Object.assign(Object.create(BucketModel.prototype) as BucketModel, this);
    return copy.take(now, cost);
  }
}

const RATES = [0.5, 1, 2.5, 3, 5, 7.125, 10, 100, 1000];

/** A small deterministic PRNG, so a failing sequence can be replayed from its seed. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * `sequences` random sequences of (advance, take) through limiters made by `make`, each checked
 * against the model: same admissions, same remaining, and a retry delay that is exact (one ms
 * earlier would still be refused).
 */
export async function randomRun(options: {
  clock: FakeClock;
  make: (policy: { capacity: number; refillPerSecond: number }, run: number) => RateLimiter;
  sequences: number;
  steps: number;
  seed: number;
}): Promise<{ admitted: number; refused: number }> {
  const { clock } = options;
  let admitted = 0;
  let refused = 0;
  for (let run = 0; run < options.sequences; run++) {
    const random = prng(options.seed + run);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;
    const policy = { capacity: 1 + Math.floor(random() * 20), refillPerSecond: pick(RATES) };
    const limiter = options.make(policy, run);
    const model = new BucketModel(policy);
    for (let step = 0; step < options.steps; step++) {
      const r = random();
      clock.advance(
        r < 0.3 ? 0 : r < 0.6 ? Math.floor(random() * 5) : r < 0.95 ? Math.floor(random() * 2000) : 600_000,
      );
      const cost = random() < 0.7 ? 1 : Math.floor(random() * (policy.capacity + 1));
      const now = clock.now();
      const expected = model.take(now, cost);
      const got = await limiter.take({ route: 'r', key: 'k', cost });
      const where = `seed ${options.seed + run} step ${step} ${JSON.stringify(policy)} cost ${cost}`;
      assert.equal(got.allowed, expected, where);
      assert.equal(got.remaining, model.remaining(), where);
      if (got.allowed) {
        admitted++;
        assert.equal(got.retryAfterMs, 0, where);
      } else {
        refused++;
        assert.ok(got.retryAfterMs > 0, where);
        assert.ok(model.wouldPass(now + got.retryAfterMs, cost), `${where}: passes after retryAfterMs`);
        assert.ok(!model.wouldPass(now + got.retryAfterMs - 1, cost), `${where}: not a ms earlier`);
        assert.equal(got.retryAfterSeconds, Math.ceil(got.retryAfterMs / 1000), where);
      }
    }
  }
  return { admitted, refused };
}
