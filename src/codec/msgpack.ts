/**
 * @module codec/msgpack
 * MessagePack through msgpackr: smaller frames and faster for binary-heavy payloads. msgpackr
 * renames a `__proto__` map key (to `__proto_`) instead of assigning it, so decoding cannot reach
 * an object's prototype. Records and structured clones are off: every peer must be able to read
 * the bytes without shared state.
 */
import { createRequire } from 'node:module';
import type { Packr } from 'msgpackr';
import { type Codec, codecError } from './codec.ts';

// msgpackr is loaded at the first message, not at start: every node keeps a MessagePack codec to
// read peers that use it, and most never see such a frame.
const load = createRequire(import.meta.url);
let PackrClass: typeof Packr | undefined;

function newPackr(): Packr {
  PackrClass ??= (load('msgpackr') as typeof import('msgpackr')).Packr;
  return new PackrClass({ useRecords: false, moreTypes: false, mapsAsObjects: true, int64AsType: 'number' });
}

export function createMsgpackCodec(): Codec {
  let made: Packr | undefined;
  const packr = (): Packr => {
    made ??= newPackr();
    return made;
  };
  return {
    name: 'msgpack',
    contentType: 'application/msgpack',
    encode(value: unknown): Uint8Array {
      try {
        return packr().pack(value);
      } catch (error) {
        throw codecError('msgpack', 'value cannot be encoded as MessagePack', error);
      }
    },
    decode(bytes: Uint8Array): unknown {
      try {
        return packr().unpack(bytes);
      } catch (error) {
        throw codecError('msgpack', 'frame is not valid MessagePack', error);
      }
    },
  };
}
