/**
 * @module codec
 * How values become bytes on the wire. A node picks one codec; its transport moves the bytes.
 * Decoding bad bytes never crashes: it throws a ParleyError with code INVALID_ARGUMENT.
 */
export interface Codec {
  /** Short name carried in discovery info, e.g. `json`. */
  readonly name: string;
  /** Media type for `datacontenttype` and HTTP. */
  readonly contentType: string;
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
}
