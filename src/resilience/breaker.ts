/**
 * @module resilience/breaker
 * A circuit breaker: closed (calls flow, outcomes recorded in a sliding window), open (calls are
 * refused at once, the target gets no traffic), half-open (exactly `halfOpenProbes` calls are let
 * through; all succeed → closed, one fails → open again, for longer when `openBackoff` says so).
 *
 * Choices that avoid the bugs breaker libraries are known for:
 * - Open → half-open is decided when a call asks, by comparing the clock with the end of the open
 *   period: there is no reset timer, so nothing (simultaneous failures, late outcomes) can cancel
 *   or restart it. Outcomes of calls admitted before the breaker opened are ignored.
 * - A permit settles once. A probe that never settles releases its permit at its deadline, as a
 *   failure, so half-open cannot be held forever.
 * - An ignored outcome (the caller's own error, like INVALID_ARGUMENT) releases the probe's permit
 *   without deciding anything: another probe is admitted, half-open cannot be pinned.
 * - No listener is added to any caller's AbortSignal: a signal shared by many calls costs nothing.
 */
import { type ErrorCode, ParleyError } from '../errors.ts';
import { type Clock, systemClock, type TimerHandle } from '../runtime/clock.ts';
import type { Middleware } from '../runtime/pipeline.ts';

export type BreakerState = 'closed' | 'open' | 'half-open';

export interface BreakerOptions {
  /** Sliding window: the last `size` calls (default 20), or the calls of the last `ms`. */
  window?: { size: number } | { ms: number; buckets?: number };
  /** Calls the window must hold before a rate is judged. Default 10. */
  minimumCalls?: number;
  /** Share of failed calls (0–1) that opens the breaker. Default 0.5. */
  failureRate?: number;
  /** A call slower than this counts as slow, ms. Default: none. */
  slowCallMs?: number;
  /** Share of slow calls (0–1) that opens the breaker. Default 1 (only when all are slow). */
  slowCallRate?: number;
  /** How long the breaker stays open, ms. Default 5 000. */
  openMs?: number;
  /** Each reopening from half-open multiplies the open time, up to `max` ms. Default: none. */
  openBackoff?: { multiplier: number; max: number };
  /** Calls let through in half-open. Default 1. */
  halfOpenProbes?: number;
  /** Which errors count as failures. Default: {@link countsAsFailure}. */
  isFailure?: (error: ParleyError) => boolean;
  clock?: Clock;
}

/** Errors that say the target is unwell; the caller's own mistakes are not its fault. */
const CALLER_ERRORS = new Set<ErrorCode>([
  'INVALID_ARGUMENT',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'FAILED_PRECONDITION',
  'PERMISSION_DENIED',
  'UNAUTHENTICATED',
  'OUT_OF_RANGE',
  'CANCELLED',
]);

/**
 * Not the caller's mistakes, not a contract's declared reasons, and not an exhaustion that says it
 * will not pass however often it is tried (a frame over the transport's limit): the target is well.
 */
export function countsAsFailure(error: ParleyError): boolean {
  if (error.code === 'RESOURCE_EXHAUSTED' && !error.retryable) return false;
  return !CALLER_ERRORS.has(error.code) && error.reason === undefined;
}

export interface BreakerChange {
  from: BreakerState;
  to: BreakerState;
  at: number;
}

/** Permission to make one call; report its outcome once. */
export interface Permit {
  success(): void;
  failure(error?: unknown): void;
  /** Settles with the outcome of a thrown value (failure or ignored, by `isFailure`). */
  error(error: unknown): void;
}

const OK = 0;
const FAIL = 1;
const SLOW = 2;
const SLOW_FAIL = 3;

/** One call's permission; settles once. */
class BreakerPermit implements Permit {
  timer: TimerHandle | undefined;
  private settled = false;

  constructor(
    private readonly breaker: CircuitBreaker,
    readonly generation: number,
    readonly started: number,
    readonly probe: boolean,
  ) {}

  private done(kind: 'ok' | 'fail' | 'ignore'): void {
    if (this.settled) return;
    this.settled = true;
    this.timer?.cancel();
    this.breaker.settle(this, kind);
  }

  success(): void {
    this.done('ok');
  }

  failure(): void {
    this.done('fail');
  }

  error(error: unknown): void {
    this.done(this.breaker.isFailure(error) ? 'fail' : 'ignore');
  }
}

export class CircuitBreaker {
  private stateNow: BreakerState = 'closed';
  private openUntil = 0;
  private openFor: number;
  private generation = 0;
  private probesOut = 0;
  private probesOk = 0;
  /** Outcomes in the window (count window: a queue of codes; time window: with their times). */
  private readonly ring: number[] = [];
  private ringNext = 0;
  private readonly timed: { at: number; outcome: number }[] = [];
  private failed = 0;
  private slow = 0;
  private readonly listeners = new Set<(change: BreakerChange) => void>();
  private readonly clock: Clock;
  private readonly window: { size: number } | { ms: number };
  private readonly timesCalls: boolean;
  private readonly opts: Required<Omit<BreakerOptions, 'window' | 'openBackoff' | 'slowCallMs' | 'clock'>> & {
    slowCallMs: number;
  };

  constructor(
    readonly name: string,
    private readonly options: BreakerOptions = {},
  ) {
    this.clock = options.clock ?? systemClock;
    this.window = options.window ?? { size: 20 };
    this.timesCalls = options.slowCallMs !== undefined;
    this.opts = {
      minimumCalls: options.minimumCalls ?? 10,
      failureRate: options.failureRate ?? 0.5,
      slowCallRate: options.slowCallRate ?? 1,
      slowCallMs: options.slowCallMs ?? Number.POSITIVE_INFINITY,
      openMs: options.openMs ?? 5000,
      halfOpenProbes: Math.max(1, options.halfOpenProbes ?? 1),
      isFailure: options.isFailure ?? countsAsFailure,
    };
    this.openFor = this.opts.openMs;
  }

  /** The state now (an open breaker whose time is up reports half-open). */
  get state(): BreakerState {
    this.refresh();
    return this.stateNow;
  }

  /** Until when an open breaker refuses calls (epoch ms). */
  get retryAt(): number {
    return this.openUntil;
  }

  onChange(listener: (change: BreakerChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** True when a call would be admitted now (it does not take a permit). */
  admits(): boolean {
    this.refresh();
    if (this.stateNow === 'closed') return true;
    if (this.stateNow === 'open') return false;
    return this.probesOut < this.opts.halfOpenProbes;
  }

  /**
   * A permit for one call, or undefined when the breaker refuses it. `deadline` (epoch ms) bounds
   * how long the permit is held: at it, an unsettled permit is released as a failure.
   */
  acquire(deadline = Number.POSITIVE_INFINITY): Permit | undefined {
    this.refresh();
    if (this.stateNow === 'open') return undefined;
    if (this.stateNow === 'half-open') {
      if (this.probesOut >= this.opts.halfOpenProbes) return undefined;
      this.probesOut++;
    }
    return this.permit(this.stateNow === 'half-open', deadline);
  }

  private permit(probe: boolean, deadline: number): Permit {
    const permit = new BreakerPermit(this, this.generation, this.timesCalls ? this.clock.now() : 0, probe);
    // Only a probe holds something scarce: it alone is released at its deadline if it never settles.
    if (probe && Number.isFinite(deadline)) {
      permit.timer = this.clock.setTimeout(() => permit.failure(), Math.max(0, deadline - this.clock.now()));
    }
    return permit;
  }

  /** @internal A permit settled. */
  settle(permit: BreakerPermit, kind: 'ok' | 'fail' | 'ignore'): void {
    // An outcome from before the last change of state says nothing about the target now.
    if (permit.generation !== this.generation) return;
    // Without a slow-call threshold the clock is not read at all.
    const slow = this.timesCalls && this.clock.now() - permit.started >= this.opts.slowCallMs;
    if (permit.probe) this.probeOutcome(kind, slow);
    else if (kind !== 'ignore') this.record(kind === 'ok' ? (slow ? SLOW : OK) : slow ? SLOW_FAIL : FAIL);
  }

  /** @internal */
  isFailure(error: unknown): boolean {
    return this.opts.isFailure(ParleyError.from(error));
  }

  /** Probes are counted per half-open period: only an ignored one is given back. */
  private probeOutcome(kind: 'ok' | 'fail' | 'ignore', slow: boolean): void {
    if (kind === 'ignore') {
      this.probesOut--; // the permit is free again: another probe may go
      return;
    }
    if (kind === 'fail' || slow) {
      const backoff = this.options.openBackoff;
      this.openFor =
        backoff === undefined ? this.opts.openMs : Math.min(backoff.max, this.openFor * backoff.multiplier);
      this.transition('open');
      return;
    }
    this.probesOk++;
    if (this.probesOk >= this.opts.halfOpenProbes) {
      this.openFor = this.opts.openMs;
      this.transition('closed');
    }
  }

  private record(outcome: number): void {
    const w = this.window;
    if ('size' in w) {
      // A fixed ring: the oldest outcome is overwritten once the window is full.
      if (this.ring.length < w.size) this.ring.push(outcome);
      else {
        this.forget(this.ring[this.ringNext] as number);
        this.ring[this.ringNext] = outcome;
      }
      this.ringNext = (this.ringNext + 1) % w.size;
    } else {
      const now = this.clock.now();
      this.timed.push({ at: now, outcome });
      while (this.timed.length > 0 && (this.timed[0] as { at: number }).at <= now - w.ms) {
        this.forget((this.timed.shift() as { outcome: number }).outcome);
      }
    }
    if (outcome === FAIL || outcome === SLOW_FAIL) this.failed++;
    if (outcome === SLOW || outcome === SLOW_FAIL) this.slow++;
    const n = 'size' in w ? this.ring.length : this.timed.length;
    if (n < this.opts.minimumCalls) return;
    if (
      this.failed / n >= this.opts.failureRate ||
      (this.slow > 0 && this.slow / n >= this.opts.slowCallRate)
    ) {
      this.openFor = this.opts.openMs;
      this.transition('open');
    }
  }

  private forget(outcome: number): void {
    if (outcome === FAIL || outcome === SLOW_FAIL) this.failed--;
    if (outcome === SLOW || outcome === SLOW_FAIL) this.slow--;
  }

  private refresh(): void {
    if (this.stateNow === 'open' && this.clock.now() >= this.openUntil) this.transition('half-open');
  }

  private transition(to: BreakerState): void {
    const from = this.stateNow;
    if (from === to) return;
    this.stateNow = to;
    this.generation++;
    this.ring.length = 0;
    this.ringNext = 0;
    this.timed.length = 0;
    this.failed = 0;
    this.slow = 0;
    this.probesOut = 0;
    this.probesOk = 0;
    const at = this.clock.now();
    if (to === 'open') this.openUntil = at + this.openFor;
    for (const l of this.listeners) l({ from, to, at });
  }
}

export interface BreakersMiddleware extends Middleware {
  /** The breaker of one instance of a service (made on first use). */
  breaker(service: string, nodeId: string): CircuitBreaker;
  /** Every breaker's state change, for metrics, logs and the dashboard. */
  onChange(listener: (change: BreakerChange & { service: string; node: string }) => void): () => void;
}

/**
 * A breaker per service instance, as middleware: the balancer skips instances whose breaker is
 * open, and each attempt takes a permit and reports its outcome. Options may differ per service.
 */
export function circuitBreakers(
  options: BreakerOptions & { services?: Record<string, BreakerOptions> } = {},
): BreakersMiddleware {
  const { services = {}, ...defaults } = options;
  // Two levels of maps, no key string per call: this runs twice on every call.
  const all = new Map<string, Map<string, CircuitBreaker>>();
  const listeners = new Set<(change: BreakerChange & { service: string; node: string }) => void>();
  // Consecutive calls mostly go to the same instance: the last breaker found is kept at hand.
  let lastService = '';
  let lastNode = '';
  let last: CircuitBreaker | undefined;
  const breaker = (service: string, nodeId: string) => {
    if (last !== undefined && service === lastService && nodeId === lastNode) return last;
    let byNode = all.get(service);
    if (byNode === undefined) {
      byNode = new Map();
      all.set(service, byNode);
    }
    let b = byNode.get(nodeId);
    if (b === undefined) {
      b = new CircuitBreaker(`${service}@${nodeId}`, { ...defaults, ...services[service] });
      b.onChange((change) => {
        for (const l of listeners) l({ ...change, service, node: nodeId });
      });
      byNode.set(nodeId, b);
    }
    lastService = service;
    lastNode = nodeId;
    last = b;
    return b;
  };
  return {
    name: 'circuit-breaker',
    breaker,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    // A service in this process is not behind a network that can fail: no breaker for it.
    admits: (call, nodeId, local) => local || breaker(call.service, nodeId).admits(),
    // Each attempt on a remote instance takes a permit; the node settles it with the outcome.
    permit: (call, nodeId, local) => {
      if (local) return undefined;
      const b = breaker(call.service, nodeId);
      return (
        b.acquire(call.deadline) ??
        new ParleyError('UNAVAILABLE', `${call.service} on ${nodeId}: circuit open`, {
          details: { circuit: 'open', service: call.service, node: nodeId, retryAt: b.retryAt },
        })
      );
    },
  };
}
