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

const CHUNK = 65_536;

/**
 * Latencies in fixed Float64Array chunks, whose memory is outside the JavaScript heap. A plain
 * array grown by `push` (a million numbers in a run) set V8's young-generation collections
 * keeping the client's finished calls: with `--trace-gc` each scavenge took 3–4 ms instead of
 * 0.5 and the heap grew 2 MB per scavenge, and a Parley call in one process cost 9.5–9.9 µs of
 * CPU instead of 6.9–7.1. The load generator must not charge the system it measures for its own
 * bookkeeping.
 */
export class Latencies {
  private readonly full: Float64Array[] = [];
  private chunk = new Float64Array(CHUNK);
  private used = 0;

  get count(): number {
    return this.full.length * CHUNK + this.used;
  }

  add(ms: number): void {
    if (this.used === CHUNK) {
      this.full.push(this.chunk);
      this.chunk = new Float64Array(CHUNK);
      this.used = 0;
    }
    this.chunk[this.used++] = ms;
  }

  /** Every latency, in the order added. */
  all(): Float64Array {
    const out = new Float64Array(this.count);
    for (let i = 0; i < this.full.length; i++) out.set(this.full[i] as Float64Array, i * CHUNK);
    out.set(this.chunk.subarray(0, this.used), this.full.length * CHUNK);
    return out;
  }
}

export async function closedLoop(
  call: () => Promise<unknown>,
  options: { concurrency: number; seconds: number },
): Promise<LoadResult> {
  const latencies = new Latencies();
  let errors = 0;
  const until = performance.now() + options.seconds * 1000;
  const start = performance.now();
  const worker = async () => {
    while (performance.now() < until) {
      const t = performance.now();
      try {
        await call();
        latencies.add(performance.now() - t);
      } catch {
        errors++;
        if (errors > 1000) throw new Error('more than 1000 errors: the system under test is failing');
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  const seconds = (performance.now() - start) / 1000;
  const all = latencies.all();
  return {
    count: all.length,
    seconds,
    perSecond: all.length / seconds,
    p50ms: percentile(all, 50),
    p99ms: percentile(all, 99),
    errors,
  };
}

/** The request of the RPC workloads: about 100 bytes as JSON, or a 64 KiB note. */
export function request(size: 'small' | '64k'): { a: number; b: number; note: string } {
  const note = size === 'small' ? 'x'.repeat(72) : 'x'.repeat(64 * 1024);
  return { a: 20, b: 22, note };
}
