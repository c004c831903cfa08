/**
 * @module codec
 * How values become bytes on the wire. A node picks one codec; its transport moves the bytes.
 * Decoding bad bytes never crashes: it throws a ParleyError with code INVALID_ARGUMENT.
 */
import { ParleyError } from '../errors.ts';

export interface Codec {
  /** Short name carried in discovery info, e.g. `json`. */
  readonly name: string;
  /** Media type for `datacontenttype` and HTTP. */
  readonly contentType: string;
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
  /**
   * For a text codec: decodes text that a client already read as a string (and that was valid
   * UTF-8), so the bytes need not be made again only to be read back.
   */
  decodeText?(text: string): unknown;
}

/**
 * The INVALID_ARGUMENT a codec throws for its library's error: `what` says which way it failed
 * (`value cannot be encoded as JSON`, `frame is not valid MessagePack`).
 */
export function codecError(codec: string, what: string, error?: unknown): ParleyError {
  const message = error === undefined ? what : `${what}: ${(error as Error).message}`;
  return new ParleyError('INVALID_ARGUMENT', message, {
    ...(error === undefined ? {} : { cause: error }),
    details: { codec },
  });
}

/**
 * Which codec made a frame, by its first byte. Every frame is an object: JSON starts with `{`,
 * MessagePack with a map header (0x80–0x8f, 0xde, 0xdf). A node answers in the codec of the
 * request, so nodes with different codecs can talk. Anything else is left to `fallback`.
 */
export function codecOfFrame(
  frame: Uint8Array,
  codecs: { json: Codec; msgpack: Codec },
  fallback: Codec,
): Codec {
  const first = frame[0];
  // A custom codec is never second-guessed.
  if (first === undefined || (fallback.name !== 'json' && fallback.name !== 'msgpack')) return fallback;
  if (first === 0x7b) return codecs.json;
  if ((first & 0xf0) === 0x80 || first === 0xde || first === 0xdf) return codecs.msgpack;
  return fallback;
}
