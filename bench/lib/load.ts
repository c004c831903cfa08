/**
 * A closed-loop load generator: `concurrency` callers, each sending its next request as soon as
 * the previous answer arrives, for `seconds`. Latency is recorded for every request.
 */
import { percentile } from './stats.ts';

export interface LoadResult {
  count: number;
  seconds: number;
  perSecond: number;
  p50ms: number;
  p99ms: number;
  errors: number;
}

export async function closedLoop(
  call: () => Promise<unknown>,
  options: { concurrency: number; seconds: number },
): Promise<LoadResult> {
  const latencies: number[] = [];
  let errors = 0;
  const until = performance.now() + options.seconds * 1000;
  const start = performance.now();
  const worker = async () => {
    while (performance.now() < until) {
      const t = performance.now();
      try {
        await call();
        latencies.push(performance.now() - t);
      } catch {
        errors++;
        if (errors > 1000) throw new Error('more than 1000 errors: the system under test is failing');
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  const seconds = (performance.now() - start) / 1000;
  return {
    count: latencies.length,
    seconds,
    perSecond: latencies.length / seconds,
    p50ms: percentile(latencies, 50),
    p99ms: percentile(latencies, 99),
    errors,
  };
}

/** The request of the RPC workloads: about 100 bytes as JSON, or a 64 KiB note. */
export function request(size: 'small' | '64k'): { a: number; b: number; note: string } {
  const note = size === 'small' ? 'x'.repeat(72) : 'x'.repeat(64 * 1024);
  return { a: 20, b: 22, note };
}
