/** Small statistics for benchmark runs. */

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** Nearest-rank percentile of an unsorted sample (p in 0..100). */
export function percentile(values: Float64Array | readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const s = Float64Array.from(values).sort();
  const rank = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[rank] as number;
}
