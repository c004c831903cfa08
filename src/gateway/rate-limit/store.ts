/**
 * @module gateway/rate-limit/store
 * Where buckets live: one small interface, and the in-process store. A store does one atomic
 * refill-and-take per request; the limiter around it turns the result into a decision and
 * decides what a store failure means.
 */
import { createHash } from 'node:crypto';
import { type Clock, systemClock } from '../../runtime/clock.ts';
import { type BucketState, type ScaledPolicy, takeTokens } from './bucket.ts';

export interface StoreTake {
  /** The bucket's id (see `bucketId`): route, policy and key. */
  bucket: string;
  policy: ScaledPolicy;
  /** Micro-tokens to take. */
  cost: number;
}

export interface StoreTakeResult {
  allowed: boolean;
  /** Micro-tokens left in the bucket after the take. */
  tokens: number;
}

export interface RateLimitStore {
  take(request: StoreTake): Promise<StoreTakeResult>;
  close(): Promise<void>;
}

/** Keys longer than this are hashed: a client-chosen key must not make store keys unbounded. */
const MAX_KEY = 128;

/**
 * One bucket per (route, policy, key). Lengths come first so that no triple can spell another
 * (`a` + `b:c` vs `a:b` + `c`).
 */
export function bucketId(parts: { route: string; policy: string; key: string }): string {
  const { route, policy, key } = parts;
  const k = key.length > MAX_KEY ? `#${createHash('sha256').update(key).digest('base64url')}` : key;
  return `${route.length}:${route}${policy.length}:${policy}:${k}`;
}

export interface MemoryStoreOptions {
  clock?: Clock;
  /** At most this many buckets (default 100 000); past it the least recently used go first. */
  maxBuckets?: number;
}

interface Entry extends BucketState {
  /** Epoch ms at which the bucket is full again, so forgetting it changes nothing. */
  fullAt: number;
}

/**
 * Buckets in a Map kept in least-recently-used order. A bucket that has been idle until full is
 * the same as no bucket, so those are dropped for free; only the `maxBuckets` bound can forget a
 * bucket that was not full (that key gets a fresh burst: the bound trades exactness for memory).
 */
export function createMemoryStore(options: MemoryStoreOptions = {}): RateLimitStore & { size(): number } {
  const clock = options.clock ?? systemClock;
  const maxBuckets = options.maxBuckets ?? 100_000;
  const buckets = new Map<string, Entry>();

  const sweep = (now: number): void => {
    // Oldest first; the first one not yet full ends the sweep, so each take does O(1) work on average.
    for (const [id, entry] of buckets) {
      if (entry.fullAt > now && buckets.size <= maxBuckets) break;
      buckets.delete(id);
    }
  };

  return {
    async take({ bucket, policy, cost }) {
      const now = clock.now();
      const before = buckets.get(bucket);
      const { allowed, state } = takeTokens(policy, before, { now, cost });
      buckets.delete(bucket);
      const fullAt = state.last + Math.ceil((policy.capacityUnits - state.tokens) / policy.unitsPerMs);
      buckets.set(bucket, { ...state, fullAt });
      sweep(now);
      return { allowed, tokens: state.tokens };
    },
    async close() {
      buckets.clear();
    },
    size: () => buckets.size,
  };
}
