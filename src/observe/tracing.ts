/**
 * @module observe/tracing
 * OpenTelemetry spans for a node, as middleware, through the OpenTelemetry API only: the
 * application registers an SDK and an exporter (Jaeger, Tempo, an OTLP collector); without one
 * the API's tracer does nothing and Parley's own trace context travels as before.
 *
 * - A call this node makes: a CLIENT span `<service>.<action>` (retries and fallbacks inside it),
 *   child of the active span when that belongs to the calling handler's trace (a span the handler
 *   made), else of the handler's span, else of the active span (an HTTP request's, outside any
 *   handler). The call carries the client span as its `traceparent`.
 * - A call this node serves: a SERVER span, child of what the call carried. The handler's
 *   context takes the span's ids, so what it calls and publishes continues this span, and the
 *   span is active while the handler runs (spans the handler makes nest under it when a context
 *   manager is registered).
 * - An event this node publishes or notifies: a PRODUCER span `send <event>`, placed as a call's
 *   client span is, ended when the broker confirms the publish (at once for a notification or
 *   an outbox write). The envelope carries it as its `traceparent`.
 * - An event handler: a CONSUMER span `process <event>`, child of the producer span (of the
 *   publishing handler's span when the publisher's node does not trace).
 *
 * Attributes follow OpenTelemetry's RPC and messaging conventions (`rpc.system: parley`,
 * `rpc.service`, `rpc.method`; `messaging.system: parley`, `messaging.destination.name`), plus
 * `parley.code` (Parley's outcome code) on failures, which also set the span's status to ERROR.
 */
import {
  context,
  isSpanContextValid,
  type Context as OtelContext,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import { CallContext, type Context, TRACEPARENT } from '../runtime/context.ts';
import type { Middleware } from '../runtime/pipeline.ts';
import { outcomeCode } from './metrics.ts';

export interface TracingOptions {
  /** Default: the global tracer provider's tracer `parley`. */
  tracer?: Tracer;
}

/** The OpenTelemetry context whose span is the one a `traceparent` names; undefined when malformed. */
function remoteParent(traceparent: string | undefined): OtelContext | undefined {
  const m = traceparent === undefined ? null : TRACEPARENT.exec(traceparent);
  if (m === null) return undefined;
  const spanContext: SpanContext = {
    traceId: m[1] as string,
    spanId: m[2] as string,
    traceFlags: Number.parseInt(m[3] as string, 16) & TraceFlags.SAMPLED,
    isRemote: true,
  };
  return isSpanContextValid(spanContext) ? trace.setSpanContext(ROOT_CONTEXT, spanContext) : undefined;
}

function traceparentOf(span: Span): string | undefined {
  const sc = span.spanContext();
  if (!isSpanContextValid(sc)) return undefined;
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & TraceFlags.SAMPLED) === 0 ? '00' : '01'}`;
}

/** The span a handler's context takes, so that what it sends continues that span. */
function adopt(ctx: Context, span: Span, parent: string | undefined): void {
  const sc = span.spanContext();
  // The API without an SDK answers the parent's own ids (or invalid ones): nothing to take then.
  if (!(ctx instanceof CallContext) || !isSpanContextValid(sc)) return;
  if (parent?.slice(36, 52) === sc.spanId) return; // `00-<trace id>-<span id>-<flags>`
  ctx.adoptSpan(sc.traceId, sc.spanId, (sc.traceFlags & TraceFlags.SAMPLED) !== 0);
}

/** Where a call made from `parent` (a handler's context, if any) hangs in the trace. */
function clientParent(parent: Context | undefined): OtelContext {
  const active = context.active();
  if (parent === undefined) return active;
  const activeSpan = trace.getSpanContext(active);
  if (activeSpan !== undefined && activeSpan.traceId === parent.traceId) return active;
  return remoteParent(parent.traceparent) ?? active;
}

/** Ends `span` when `work` settles: ERROR with the Parley code on a failure. */
function finish(span: Span, work: Promise<unknown>): Promise<unknown> {
  return work.then(
    (result) => {
      span.end();
      return result;
    },
    (error: unknown) => {
      fail(span, error);
      throw error;
    },
  );
}

/** Marks `span` failed with the Parley code of `error`, and ends it. */
function fail(span: Span, error: unknown): void {
  span.setAttribute('parley.code', outcomeCode(error));
  span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error)?.message ?? String(error) });
  span.end();
}

/**
 * Runs `next(call)` with `span` active; a synchronous throw becomes a rejection. A span that
 * records nothing (no SDK, or sampled out) is neither made active nor ended: its ids have done
 * their work by then (carried, or taken by the handler's context).
 */
function within<C>(
  span: Span,
  parent: OtelContext,
  next: (call: C) => Promise<unknown>,
  call: C,
): Promise<unknown> {
  const recording = span.isRecording();
  let work: Promise<unknown>;
  try {
    work = recording ? context.with(trace.setSpan(parent, span), next, undefined, call) : next(call);
  } catch (error) {
    work = Promise.reject(error);
  }
  return recording ? finish(span, work) : work;
}

export function tracing(options: TracingOptions = {}): Middleware {
  // Looked up when first used, so an SDK registered after the node is made is still found.
  let tracer = options.tracer;
  const tracerOf = () => {
    tracer ??= trace.getTracer('parley');
    return tracer;
  };
  return {
    name: 'tracing',
    outbound: (next) => (call) => {
      const parent = clientParent(call.parent);
      const span = tracerOf().startSpan(
        `${call.service}.${call.action}`,
        {
          kind: SpanKind.CLIENT,
          attributes: { 'rpc.system': 'parley', 'rpc.service': call.service, 'rpc.method': call.action },
        },
        parent,
      );
      const carried = traceparentOf(span);
      if (carried !== undefined) call.traceparent = carried;
      return within(span, parent, next, call);
    },
    inbound: (next) => (call) => {
      const { ctx } = call;
      const incoming = ctx instanceof CallContext ? ctx.incomingTraceparent : undefined;
      // A remote call without trace context starts a trace; a local one continues what is active.
      const parent = remoteParent(incoming) ?? (call.local ? context.active() : ROOT_CONTEXT);
      const span = tracerOf().startSpan(
        `${ctx.service}.${ctx.action}`,
        {
          kind: SpanKind.SERVER,
          attributes: {
            'rpc.system': 'parley',
            'rpc.service': ctx.service,
            'rpc.method': ctx.action,
            'parley.local': call.local,
          },
        },
        parent,
      );
      adopt(ctx, span, incoming);
      return within(span, parent, next, call);
    },
    publish: (next) => (call) => {
      const { envelope } = call;
      const span = tracerOf().startSpan(
        `send ${call.event}`,
        {
          kind: SpanKind.PRODUCER,
          attributes: {
            'messaging.system': 'parley',
            'messaging.operation.type': 'send',
            'messaging.destination.name': call.event,
            'messaging.message.id': envelope.id,
            'parley.service': call.service,
            'parley.durable': call.durable,
          },
        },
        clientParent(call.parent),
      );
      const carried = traceparentOf(span);
      if (carried !== undefined) envelope.traceparent = carried;
      if (!span.isRecording()) return next(call);
      let work: Promise<void>;
      try {
        work = next(call);
      } catch (error) {
        fail(span, error); // thrown on: inside an outbox's transaction it must reach the transaction
        throw error;
      }
      return finish(span, work) as Promise<void>;
    },
    event: (next) => (call) => {
      const { ctx } = call;
      const incoming = ctx instanceof CallContext ? ctx.incomingTraceparent : undefined;
      const parent = remoteParent(incoming) ?? ROOT_CONTEXT;
      const attributes: Record<string, string | number | boolean> = {
        'messaging.system': 'parley',
        'messaging.operation.type': 'process',
        'messaging.destination.name': ctx.action,
        'messaging.message.id': ctx.id,
        'parley.service': ctx.service,
        'parley.durable': call.durable,
      };
      if (ctx.delivery !== undefined) attributes['parley.delivery.attempt'] = ctx.delivery.attempt;
      const span = tracerOf().startSpan(
        `process ${ctx.action}`,
        { kind: SpanKind.CONSUMER, attributes },
        parent,
      );
      adopt(ctx, span, incoming);
      return within(span, parent, next, call);
    },
  };
}
