/**
 * @module resilience/backoff
 * Exponential backoff with full jitter: the delay before retry n is uniform in
 * [0, min(max, initial × multiplier^(n-1))]. Full jitter spreads retries of many clients that
 * failed together, so they do not return together.
 */

export interface Backoff {
  initial: number;
  max: number;
  multiplier: number;
}

export const DEFAULT_BACKOFF: Backoff = { initial: 100, max: 30_000, multiplier: 2 };

/** Delay before the retry that follows failed attempt `attempt` (1-based). `random` in [0, 1). */
export function backoffDelay(backoff: Backoff, attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(backoff.max, backoff.initial * backoff.multiplier ** Math.max(0, attempt - 1));
  return Math.floor(random() * ceiling);
}
