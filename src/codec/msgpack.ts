/**
 * @module codec/msgpack
 * MessagePack through msgpackr: smaller frames and faster for binary-heavy payloads. msgpackr
 * renames a `__proto__` map key (to `__proto_`) instead of assigning it, so decoding cannot reach
 * an object's prototype. Records and structured clones are off: every peer must be able to read
 * the bytes without shared state. A decoded frame holds only data: null, booleans, numbers,
 * strings, arrays, plain objects, binary (`bin`, as a Buffer) and dates (the timestamp
 * extension). msgpackr's own extensions (Set, RegExp, Error, BigInt, typed arrays) are refused,
 * since nothing in a contract asks for them and each is one more way in.
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
  // `structuredClone: false`, exactly: msgpackr refuses its reference extensions only then. Left
  // unset, a peer could send a cycle, or a 400-byte frame whose arrays share their children and
  // that a walk (validation, re-encoding) expands to 2^depth values.
  return new PackrClass({
    useRecords: false,
    moreTypes: false,
    mapsAsObjects: true,
    int64AsType: 'number',
    structuredClone: false,
  });
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
        const value = packr().unpack(bytes);
        const odd = notData(value, 0);
        if (odd !== undefined) throw new Error(`${odd} is not a value a frame may carry`);
        return value;
      } catch (error) {
        throw codecError('msgpack', 'frame is not valid MessagePack', error);
      }
    },
  };
}

/** Deeper than this, a frame is refused rather than walked (JSON.parse stops near 5,000 too). */
const MAX_DEPTH = 1_000;

/** What in `value` is not plain data (a description), or undefined when all of it is. */
function notData(value: unknown, depth: number): string | undefined {
  if (value === null || typeof value !== 'object') {
    return typeof value === 'bigint' ? 'a BigInt' : undefined;
  }
  if (depth > MAX_DEPTH) return `nesting deeper than ${MAX_DEPTH}`;
  if (Array.isArray(value)) {
    for (const item of value) {
      const odd = notData(item, depth + 1);
      if (odd !== undefined) return odd;
    }
    return undefined;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto === Object.prototype || proto === null) {
    for (const key in value) {
      const odd = notData((value as Record<string, unknown>)[key], depth + 1);
      if (odd !== undefined) return odd;
    }
    return undefined;
  }
  if (value instanceof Uint8Array && (proto === Buffer.prototype || proto === Uint8Array.prototype))
    return undefined;
  if (value instanceof Date) return undefined;
  return `a ${proto?.constructor?.name ?? 'value'}`;
}
