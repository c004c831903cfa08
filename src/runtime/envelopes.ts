/**
 * @module runtime/envelopes
 * Builds the envelopes a node sends: a request for a call, an event for publish and notify. Both
 * carry the trace, correlation and causation of the context they are sent from.
 */
import type { Codec } from '../codec/codec.ts';
import { encodeJsonText } from '../codec/json.ts';
import type { AnyContract, EventDef } from '../contract/contract.ts';
import { validate } from '../contract/validate.ts';
import { baseEnvelope, type Envelope } from '../envelope/envelope.ts';
import { uuidv7 } from '../envelope/ids.ts';
import { ParleyError } from '../errors.ts';
import { type Context, principalWireOf } from './context.ts';
import { sourceOf } from './wire.ts';

/**
 * The envelope of a call: the fewest attributes that do the job, since it is made and parsed once
 * per call. No `time` (the deadline says what matters). A call made outside any handler carries no
 * trace context: the callee starts the trace, and pays for its ids only if it reads them.
 * `traceparent`, when given (a client span's), replaces the parent's.
 */
export function callEnvelope(
  nodeId: string,
  parent: Context | undefined,
  type: string,
  data: unknown,
  now: number,
  deadline: number,
  traceparent?: string,
): Envelope {
  const source = sourceOf(nodeId, parent?.service);
  if (parent === undefined) {
    const env: Envelope = { specversion: '1.0', id: uuidv7(now), source, type, deadline, data };
    if (traceparent !== undefined) env.traceparent = traceparent;
    return env;
  }
  return {
    specversion: '1.0',
    id: uuidv7(now),
    source,
    type,
    deadline,
    traceparent: traceparent ?? parent.traceparent,
    correlationid: parent.correlationId,
    causationid: parent.id,
    data,
  };
}

/**
 * The JSON text of {@link callEnvelope}'s envelope, with the call's idempotency key and principal
 * when it has them: the same attributes as JSON.stringify of that envelope (in another order),
 * written directly, without the object. The hot path of a remote call on a JSON node: encoding
 * a call made outside a handler took 1,057 ns through the object and 798 ns this way (1.32×; with
 * a parent and a principal 1.07×; `node --import tsx bench/envelope-text.mts`), and a call over
 * the TCP transport in one process 4.9 µs instead of 4.55. The id is a UUID and needs no
 * escaping; the source's text is kept between calls; every other string goes through
 * JSON.stringify. Throws as the JSON codec does for data that has no JSON.
 */
export function callEnvelopeJson(
  nodeId: string,
  parent: Context | undefined,
  type: string,
  data: unknown,
  now: number,
  deadline: number,
  idempotencyKey: string | undefined,
  principal: string | undefined,
  traceparent?: string,
): string {
  const source = sourceOf(nodeId, parent?.service);
  if (source !== lastSourceText.source) lastSourceText = { source, text: JSON.stringify(source) };
  let text = `{"specversion":"1.0","id":"${uuidv7(now)}","source":${lastSourceText.text},"type":${JSON.stringify(type)},"deadline":${Number.isFinite(deadline) ? String(deadline) : 'null'}`;
  if (parent !== undefined) {
    text += attribute('traceparent', traceparent ?? parent.traceparent);
    text += attribute('correlationid', parent.correlationId);
    text += attribute('causationid', parent.id);
  } else if (traceparent !== undefined) {
    text += attribute('traceparent', traceparent);
  }
  text += attribute('idempotencykey', idempotencyKey);
  text += attribute('principal', principal);
  // Data that JSON leaves out (undefined, a function) leaves the attribute out, as JSON.stringify does.
  const dataText = data === undefined ? undefined : encodeJsonText(data, true);
  return dataText === undefined ? `${text}}` : `${text},"data":${dataText}}`;
}

let lastSourceText = { source: '', text: '""' };

/** `,"name":"value"` for an attribute written into envelope text, or nothing when it is unset. */
export const attribute = (name: string, value: string | undefined): string =>
  value === undefined ? '' : `,"${name}":${JSON.stringify(value)}`;

export interface EventEnvelopeInit {
  nodeId: string;
  parent: Context | undefined;
  contract: AnyContract;
  event: string;
  payload: unknown;
  codec: Codec;
  now: number;
}

/**
 * An event envelope; the payload is validated against the contract before anything is sent.
 * Like a call, an event sent outside any handler carries no trace context (each consumer starts
 * its own trace), and `datacontenttype` is left out for JSON, which CloudEvents assumes when it
 * is absent: every byte is paid again by each consumer.
 */
export function eventEnvelope(init: EventEnvelopeInit): Envelope {
  const { contract, event, parent } = init;
  const def = contract.events[event] as EventDef | undefined;
  if (def === undefined)
    throw new ParleyError('INVALID_ARGUMENT', `contract ${contract.name} has no event ${event}`);
  // Checked here, but sent as given: every receiver parses it with the same schema, and a schema
  // that transforms (a string to a number, a default) would run twice on the parsed form (until
  // 2026-12-03, `{ n }` doubled by a transform arrived as n × 4, and a string turned into a
  // number failed the receiver's check). Calls do the same: the callee parses their input once.
  validate(def.schema, init.payload, `payload of ${event}`);
  const env = baseEnvelope(sourceOf(init.nodeId, parent?.service), event, init.payload, init.now);
  env.dataschema = dataschemaOf(contract, event, def.version);
  if (init.codec.contentType !== JSON_TYPE) env.datacontenttype = init.codec.contentType;
  if (parent !== undefined) {
    env.traceparent = parent.traceparent;
    env.correlationid = parent.correlationId;
    env.causationid = parent.id;
    const principal = principalWireOf(parent);
    if (principal !== undefined) env.principal = principal;
  }
  return env;
}

const JSON_TYPE = 'application/json';

// A sender mostly sends one event over and over: its dataschema is made once, not once a message,
// and comparing two of them (a batch names a run of one type once) finds the same string.
let lastSchema = { contract: undefined as AnyContract | undefined, event: '', version: 0, text: '' };

function dataschemaOf(contract: AnyContract, event: string, version: number): string {
  const last = lastSchema;
  if (last.contract === contract && last.event === event && last.version === version) return last.text;
  const text = `urn:parley:${contract.name}:${event}:v${version}`;
  lastSchema = { contract, event, version, text };
  return text;
}
