/**
 * @module runtime/remote
 * A call to another node: envelope, encode, send with the deadline and the caller's cancellation
 * wired to the transport's abort signal, decode the reply or the error it carries.
 */
import type { Codec } from '../codec/codec.ts';
import { ParleyError } from '../errors.ts';
import type { Transport } from '../transport/transport.ts';
import type { Clock } from './clock.ts';
import type { DeadlineWheel } from './deadlines.ts';
import { requestEnvelope } from './envelopes.ts';
import type { OutboundCall } from './pipeline.ts';
import { decodeReply } from './wire.ts';

export interface RemoteDeps {
  readonly nodeId: string;
  readonly clock: Clock;
  readonly codec: Codec;
  readonly transport: Transport;
  readonly deadlines: DeadlineWheel;
}

export async function callRemote(deps: RemoteDeps, target: string, call: OutboundCall): Promise<unknown> {
  const name = `${call.service}.${call.action}`;
  const env = requestEnvelope(deps.nodeId, call.parent, name, call.input, deps.clock.now());
  env.deadline = call.deadline;
  if (call.options.idempotencyKey !== undefined) env.idempotencykey = call.options.idempotencyKey;
  const frame = deps.codec.encode(env);
  const controller = new AbortController();
  // At the deadline, or early with a reason when the node stops.
  const entry = deps.deadlines.track(call.deadline, (reason) =>
    controller.abort(reason ?? new ParleyError('DEADLINE_EXCEEDED', `${name} exceeded its deadline`)),
  );
  const signal = call.options.signal;
  const onAbort = () => controller.abort(new ParleyError('CANCELLED', `${name} was cancelled by the caller`));
  if (signal?.aborted) onAbort();
  else signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const reply = await deps.transport.request(target, frame, { signal: controller.signal });
    return decodeReply(deps.codec, reply);
  } finally {
    entry.cancel();
    signal?.removeEventListener('abort', onAbort);
  }
}
