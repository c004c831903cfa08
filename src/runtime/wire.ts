/**
 * @module runtime/wire
 * The shapes a node puts inside transport frames: a request is an {@link Envelope} whose `type`
 * is `service.action` and whose `data` is the input; a reply is `{ ok, data }` or
 * `{ ok: false, error }` with the error's wire form.
 */
import type { Codec } from '../codec/codec.ts';
import { ParleyError, type WireError } from '../errors.ts';

export type Reply = { ok: true; data: unknown } | { ok: false; error: WireError };

/** Encodes a reply; if it cannot be encoded or is too large, an error reply saying so instead. */
export function encodeReply(codec: Codec, reply: Reply, maxPayload: number): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = codec.encode(reply);
  } catch (error) {
    const e = ParleyError.from(error, 'INTERNAL');
    return codec.encode({
      ok: false,
      error: new ParleyError('INTERNAL', `reply cannot be encoded: ${e.message}`).toWire(),
    });
  }
  if (bytes.byteLength > maxPayload) {
    const e = new ParleyError(
      'RESOURCE_EXHAUSTED',
      `reply of ${bytes.byteLength} bytes exceeds the maximum of ${maxPayload}`,
      {
        details: { size: bytes.byteLength, max: maxPayload },
      },
    );
    return codec.encode({ ok: false, error: e.toWire() });
  }
  return bytes;
}

/** Decodes a reply frame: returns the data or throws the ParleyError it carries. */
export function decodeReply(codec: Codec, frame: Uint8Array): unknown {
  const value = codec.decode(frame);
  if (typeof value !== 'object' || value === null || typeof (value as { ok?: unknown }).ok !== 'boolean') {
    throw new ParleyError('INTERNAL', 'malformed reply frame');
  }
  const reply = value as Reply;
  if (reply.ok) return reply.data;
  throw ParleyError.fromWire(reply.error);
}

/** Splits `service.action`; undefined when malformed. */
export function splitType(type: string): [string, string] | undefined {
  const dot = type.indexOf('.');
  if (dot <= 0 || dot === type.length - 1) return undefined;
  return [type.slice(0, dot), type.slice(dot + 1)];
}

/** `source` attribute for a node, and the calling service when there is one. */
export function sourceOf(nodeId: string, service: string | undefined): string {
  // Calls from one node and service repeat the same string: keep the last one made.
  if (nodeId === lastSource.node && service === lastSource.service) return lastSource.value;
  const value = service === undefined ? `/parley/${nodeId}` : `/parley/${nodeId}/${service}`;
  lastSource = { node: nodeId, service, value };
  return value;
}

let lastSource: { node: string; service: string | undefined; value: string } = {
  node: '',
  service: undefined,
  value: '',
};

export function callerOf(source: string): { node: string; service: string | undefined } {
  const parts = source.split('/');
  if (parts[1] !== 'parley' || parts[2] === undefined) return { node: source, service: undefined };
  return { node: parts[2], service: parts[3] };
}
