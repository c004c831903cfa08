/**
 * @module transport/faults
 * Deterministic network faults for the memory transport. Every directed link (from → to) draws
 * from its own seeded generator, a fixed number of draws per frame, so the same seed and the same
 * frames on a link always give the same drops, delays, duplicates and reorderings, whatever other
 * links do.
 */

export interface FaultOptions {
  /** Seed for every link's generator. */
  seed: number;
  /** Probability that a frame is lost. */
  drop?: number;
  /** Probability that a frame arrives twice. */
  duplicate?: number;
  /** Delay: probability and range in ms (uniform). */
  delay?: { probability: number; min: number; max: number };
  /** Probability that a frame is held back and delivered after the next one on its link. */
  reorder?: number;
}

export interface FaultDecision {
  drop: boolean;
  duplicate: boolean;
  delay: number;
  reorder: boolean;
}

/** mulberry32: small, fast, good enough to scatter faults; not for anything secret. */
export function createRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a over the seed and the link's names: a stable per-link seed. */
export function linkSeed(seed: number, from: string, to: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  const s = `${from}\u0000${to}`;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export class LinkFaults {
  private readonly random: () => number;
  constructor(
    private readonly options: FaultOptions,
    from: string,
    to: string,
  ) {
    this.random = createRandom(linkSeed(options.seed, from, to));
  }

  next(): FaultDecision {
    // Always four draws, so turning one fault on does not shift the others' outcomes.
    const r1 = this.random();
    const r2 = this.random();
    const r3 = this.random();
    const r4 = this.random();
    const { drop = 0, duplicate = 0, delay, reorder = 0 } = this.options;
    let ms = 0;
    if (delay !== undefined && r3 < delay.probability) {
      ms = delay.min + Math.floor((r3 / delay.probability) * (delay.max - delay.min + 1));
    }
    return { drop: r1 < drop, duplicate: r2 < duplicate, delay: ms, reorder: r4 < reorder };
  }
}
