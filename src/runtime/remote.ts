/**
 * @module runtime/remote
 * A call to another node: envelope, encode, send with the deadline and the caller's cancellation
 * wired to the transport's abort signal, decode the reply or the error it carries.
 */
import { Buffer } from 'node:buffer';
import type { Codec } from '../codec/codec.ts';
import { ParleyError } from '../errors.ts';
import type { RequestSignal, Transport } from '../transport/transport.ts';
import { onAbort } from './abort.ts';
import type { Clock } from './clock.ts';
import { principalWireOf } from './context.ts';
import { type DeadlineWheel, Expiring } from './deadlines.ts';
import { callEnvelope, callEnvelopeJson } from './envelopes.ts';
import type { AttemptPermit, OutboundCall } from './pipeline.ts';
import { encodePrincipal } from './principal.ts';
import { decodeReply } from './wire.ts';

export interface RemoteDeps {
  readonly nodeId: string;
  readonly clock: Clock;
  readonly codec: Codec;
  readonly transport: Transport;
  readonly deadlines: DeadlineWheel;
}

/**
 * One remote attempt. `permit` (a breaker's) is settled with its outcome; a failure goes to
 * `recover` (a retry's) when given, and the returned promise follows what that returns.
 */
export function callRemote(
  deps: RemoteDeps,
  target: string,
  call: OutboundCall,
  permit?: AttemptPermit,
  recover?: OutboundCall['recover'],
): Promise<unknown> {
  const failed = (error: unknown): Promise<unknown> => {
    permit?.error(error);
    if (recover !== undefined) return recover(error, call);
    throw error;
  };
  let frame: Uint8Array;
  const name = `${call.service}.${call.action}`;
  try {
    const now = deps.clock.now();
    const key = call.options.idempotencyKey;
    const principal = principalOfCall(call);
    if (deps.codec.name === 'json') {
      // The envelope's text written directly, without the object (see callEnvelopeJson).
      const text = callEnvelopeJson(
        deps.nodeId,
        call.parent,
        name,
        call.input,
        now,
        call.deadline,
        key,
        principal,
        call.traceparent,
      );
      frame = Buffer.from(text, 'utf8');
    } else {
      const env = callEnvelope(
        deps.nodeId,
        call.parent,
        name,
        call.input,
        now,
        call.deadline,
        call.traceparent,
      );
      if (key !== undefined) env.idempotencykey = key;
      if (principal !== undefined) env.principal = principal;
      frame = deps.codec.encode(env);
    }
  } catch (error) {
    return Promise.resolve(error).then(failed);
  }
  // At the deadline, or early with a reason when the node stops.
  const abort = new CallSignal(name);
  deps.deadlines.add(call.deadline, abort);
  const signal = call.options.signal;
  if (signal !== undefined) return withCallerSignal(deps, target, frame, abort, signal, name, failed, permit);
  // The common case, without an async frame: one promise from the transport, one for the decode.
  if (permit === undefined && recover === undefined) {
    return deps.transport.request(target, frame, { signal: abort }).then(
      (reply) => {
        abort.cancel();
        return decodeReply(deps.codec, reply);
      },
      (error: unknown) => {
        abort.cancel();
        throw error;
      },
    );
  }
  return deps.transport.request(target, frame, { signal: abort }).then(
    (reply) => {
      abort.cancel();
      let value: unknown;
      try {
        value = decodeReply(deps.codec, reply);
      } catch (error) {
        return failed(error);
      }
      permit?.success();
      return value;
    },
    (error: unknown) => {
      abort.cancel();
      return failed(error);
    },
  );
}

async function withCallerSignal(
  deps: RemoteDeps,
  target: string,
  frame: Uint8Array,
  abort: CallSignal,
  signal: AbortSignal,
  name: string,
  failed: (error: unknown) => Promise<unknown>,
  permit: AttemptPermit | undefined,
): Promise<unknown> {
  const cancel = () => abort.abort(new ParleyError('CANCELLED', `${name} was cancelled by the caller`));
  // One listener on the caller's signal however many calls share it.
  const unwatch = signal.aborted ? undefined : onAbort(signal, cancel);
  if (signal.aborted) cancel();
  let value: unknown;
  try {
    const reply = await deps.transport.request(target, frame, { signal: abort });
    value = decodeReply(deps.codec, reply);
  } catch (error) {
    return failed(error);
  } finally {
    abort.cancel();
    unwatch?.();
  }
  permit?.success();
  return value;
}

/** The principal a call carries (wire form): the one it was given, else its handler's. */
export function principalOfCall(call: OutboundCall): string | undefined {
  const given = call.options.principal;
  return given !== undefined ? encodePrincipal(given) : principalWireOf(call.parent);
}

/**
 * The abort signal of one remote call, and its entry in the deadline wheel (which is why it is not
 * the transports' `RequestAbort`: that one lives below the runtime and cannot be a wheel entry): far cheaper than an AbortController (which costs more
 * than the rest of a call's bookkeeping): the transport is its only listener, as a rule, though
 * more are kept if they come.
 */
class CallSignal extends Expiring implements RequestSignal {
  aborted = false;
  reason: unknown;
  private listener: (() => void) | undefined;
  private more: (() => void)[] | undefined;

  constructor(private readonly name: string) {
    super();
  }

  /** The deadline wheel calls this at the deadline, or with a reason when the node stops. */
  expire(reason?: unknown): void {
    this.abort(reason ?? new ParleyError('DEADLINE_EXCEEDED', `${this.name} exceeded its deadline`));
  }

  addEventListener(_type: 'abort', listener: () => void): void {
    if (this.aborted) return;
    if (this.listener === undefined) this.listener = listener;
    else {
      this.more ??= [];
      this.more.push(listener);
    }
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    if (this.listener === listener) this.listener = undefined;
    else if (this.more !== undefined) this.more = this.more.filter((l) => l !== listener);
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const first = this.listener;
    const more = this.more;
    this.listener = undefined;
    this.more = undefined;
    first?.();
    if (more !== undefined) for (const l of more) l();
  }
}
