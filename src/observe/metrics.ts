/**
 * @module observe/metrics
 * Prometheus metrics for a node, as middleware: calls it makes and serves (count by outcome code,
 * duration, in flight), events it sends (count by outcome, time to the broker's confirmation) and
 * event handlers it runs (count by outcome, duration, redeliveries).
 * Series are kept in plain numbers and read onto a prom-client registry when scraped
 * (`series.ts`); the registry is the node's own unless one is given, so two nodes in one process
 * do not mix. Off unless installed: a node without it pays nothing.
 *
 * ```ts
 * const observed = metrics();
 * const node = createNode({ services, middleware: [observed, ...resilience()] });
 * await serveMetrics(observed.registry, { port: 9464 }); // GET /metrics
 * ```
 *
 * Outcome codes are Parley's (`OK`, `NOT_FOUND`, `DEADLINE_EXCEEDED`, …), so a dashboard reads
 * the same on every transport. Labels are bounded by the contracts (service, action, event) and
 * the fixed code list: nothing a caller sends becomes a label.
 */
import { collectDefaultMetrics, Registry } from 'prom-client';
import { ParleyError } from '../errors.ts';
import type { Middleware } from '../runtime/pipeline.ts';
import { durationHistogram, outcomeCounter, type Slot, SlotTable, type Source, slotValue } from './series.ts';

export interface MetricsOptions {
  /** Where the series live. Default: a registry of this middleware's own. */
  registry?: Registry;
  /** Name prefix. Default `parley_`. */
  prefix?: string;
  /** Histogram buckets in seconds. Default 0.0005 s to 10 s. */
  buckets?: readonly number[];
  /** Also collect Node's process metrics (CPU, memory, event-loop delay, GC). Default true. */
  defaultMetrics?: boolean;
  /** Labels on every series, e.g. `{ node: 'orders-1' }`. */
  labels?: Record<string, string>;
  /** Milliseconds, for durations. Default `performance.now`; tests pass a fake clock. */
  clock?: { now(): number };
}

export interface MetricsMiddleware extends Middleware {
  readonly registry: Registry;
  /** The metric names' prefix, for other instruments (the gateway's) on the same registry. */
  readonly prefix: string;
  readonly buckets: readonly number[];
  readonly clock: { now(): number };
}

/** Latency buckets from half a millisecond (a call in one process) to ten seconds. */
export const DEFAULT_BUCKETS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** The outcome code of a settled call or handler. */
export function outcomeCode(error: unknown): string {
  return error instanceof ParleyError ? error.code : 'UNKNOWN';
}

export function metrics(options: MetricsOptions = {}): MetricsMiddleware {
  const registry = options.registry ?? new Registry();
  const prefix = options.prefix ?? 'parley_';
  const buckets = [...(options.buckets ?? DEFAULT_BUCKETS)];
  const clock = options.clock ?? performance;
  if (options.labels !== undefined) registry.setDefaultLabels(options.labels);
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix });
  const calls = {
    made: new SlotTable(buckets),
    served: new SlotTable(buckets),
    notified: new SlotTable(buckets),
    delivered: new SlotTable(buckets),
    published: new SlotTable(buckets),
    sent: new SlotTable(buckets),
  };
  const pair = (a: string, b: string) => ({ service: a, action: b });
  const made: Source = { table: calls.made, labels: pair };
  const served: Source = { table: calls.served, labels: pair };
  // An event's series: its service, its type, and whether it is durable.
  const ofEvents = (table: SlotTable, durable: 'true' | 'false'): Source => ({
    table,
    labels: (service, event) => ({ service, event, durable }),
  });
  const notified = ofEvents(calls.notified, 'false');
  const delivered = ofEvents(calls.delivered, 'true');
  const published = ofEvents(calls.published, 'true');
  const sent = ofEvents(calls.sent, 'false');
  const family = (name: string, help: string, sources: readonly Source[]) => ({
    registry,
    name: `${prefix}${name}`,
    help,
    sources,
  });
  outcomeCounter(
    family('client_calls_total', 'Calls this node made, by outcome code (after retries and fallbacks)', [
      made,
    ]),
    'code',
  );
  durationHistogram(
    family('client_call_duration_seconds', 'Duration of the calls this node made, retries included', [made]),
  );
  outcomeCounter(family('server_calls_total', 'Calls this node served, by outcome code', [served]), 'code');
  durationHistogram(
    family(
      'server_call_duration_seconds',
      'Duration of the calls this node served, from the inbound middleware to the answer',
      [served],
    ),
  );
  slotValue(
    family('server_calls_in_flight', 'Calls this node is serving now', [served]),
    'gauge',
    (s) => s.inFlight,
  );
  outcomeCounter(
    family(
      'events_published_total',
      'Events this node sent, by outcome code (durable: published to the broker or an outbox; else notified)',
      [published, sent],
    ),
    'code',
  );
  durationHistogram(
    family(
      'event_publish_duration_seconds',
      "Time from an event's envelope to the broker's confirmation (an outbox write or a notification: handed over)",
      [published, sent],
    ),
  );
  outcomeCounter(
    family(
      'events_handled_total',
      'Events handled by subscriptions on this node, by outcome code (durable: a failure is redelivered or dead-lettered by the broker)',
      [delivered, notified],
    ),
    'code',
  );
  durationHistogram(
    family('event_handler_duration_seconds', 'Duration of event handlers on this node', [
      delivered,
      notified,
    ]),
  );
  slotValue(
    family(
      'event_redeliveries_total',
      'Durable deliveries handled again after an earlier attempt failed or timed out',
      [{ table: calls.delivered, labels: (service, event) => ({ service, event }) }],
    ),
    'counter',
    (s) => s.other,
  );

  return {
    name: 'metrics',
    registry,
    prefix,
    buckets,
    clock,
    // `then` on the inner promise rather than an async wrapper: one promise per layer, not two.
    outbound: (next) => (call) => {
      const slot = calls.made.get(call.service, call.action);
      return settle(slot, clock, clock.now(), next, call);
    },
    inbound: (next) => (call) => {
      const slot = calls.served.get(call.ctx.service, call.ctx.action);
      const started = clock.now();
      slot.inFlight++;
      return settle(slot, clock, started, next, call, true);
    },
    publish: (next) => (call) => {
      const slot = (call.durable ? calls.published : calls.sent).get(call.service, call.event);
      const started = clock.now();
      let work: Promise<void>;
      try {
        work = next(call);
      } catch (error) {
        // Counted, and thrown on: inside an outbox's transaction it must reach the transaction.
        failed(slot, clock, started, error);
        throw error;
      }
      return track(slot, clock, started, work) as Promise<void>;
    },
    event: (next) => (call) => {
      const { service, action: event, delivery } = call.ctx;
      const slot = (call.durable ? calls.delivered : calls.notified).get(service, event);
      if (delivery !== undefined && delivery.attempt > 1) slot.other++;
      return settle(slot, clock, clock.now(), next, call);
    },
  };
}

/** Runs `next(call)` (a synchronous throw becomes a rejection) and tracks it on `slot`. */
function settle<C>(
  slot: Slot,
  clock: { now(): number },
  started: number,
  next: (call: C) => Promise<unknown>,
  call: C,
  inFlight = false,
): Promise<unknown> {
  let work: Promise<unknown>;
  try {
    work = next(call);
  } catch (error) {
    work = Promise.reject(error);
  }
  return track(slot, clock, started, work, inFlight);
}

/** Counts and times `work` on `slot` when it settles (and leaves the in-flight gauge). */
function track(
  slot: Slot,
  clock: { now(): number },
  started: number,
  work: Promise<unknown>,
  inFlight = false,
): Promise<unknown> {
  return work.then(
    (result) => {
      if (inFlight) slot.inFlight--;
      slot.ok++;
      slot.observe((clock.now() - started) / 1000);
      return result;
    },
    (error: unknown) => {
      if (inFlight) slot.inFlight--;
      failed(slot, clock, started, error);
      throw error;
    },
  );
}

/** Counts a failure by its code on `slot`, with its duration. */
function failed(slot: Slot, clock: { now(): number }, started: number, error: unknown): void {
  slot.outcome(outcomeCode(error));
  slot.observe((clock.now() - started) / 1000);
}
