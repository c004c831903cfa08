/**
 * @module codec/msgpack
 * MessagePack through msgpackr: smaller frames and faster for binary-heavy payloads. msgpackr
 * renames a `__proto__` map key (to `__proto_`) instead of assigning it, so decoding cannot reach
 * an object's prototype. Records and structured clones are off: every peer must be able to read
 * the bytes without shared state.
 */
import { Packr } from 'msgpackr';
import { ParleyError } from '../errors.ts';
import type { Codec } from './codec.ts';

export function createMsgpackCodec(): Codec {
  const packr = new Packr({
    useRecords: false,
    moreTypes: false,
    mapsAsObjects: true,
    int64AsType: 'number',
  });
  return {
    name: 'msgpack',
    contentType: 'application/msgpack',
    encode(value: unknown): Uint8Array {
      try {
        return packr.pack(value);
      } catch (error) {
        throw new ParleyError(
          'INVALID_ARGUMENT',
          `value cannot be encoded as MessagePack: ${(error as Error).message}`,
          {
            cause: error,
            details: { codec: 'msgpack' },
          },
        );
      }
    },
    decode(bytes: Uint8Array): unknown {
      try {
        return packr.unpack(bytes);
      } catch (error) {
        throw new ParleyError(
          'INVALID_ARGUMENT',
          `frame is not valid MessagePack: ${(error as Error).message}`,
          {
            cause: error,
            details: { codec: 'msgpack' },
          },
        );
      }
    },
  };
}
