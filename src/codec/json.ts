/**
 * @module codec/json
 * The default codec. Parsing goes through secure-json-parse, which rejects `__proto__` keys and
 * `constructor.prototype` paths, so decoded data can be merged into other objects without risk of
 * prototype pollution.
 */
import { Buffer, isUtf8 } from 'node:buffer';
import sjson from 'secure-json-parse';
import { type Codec, codecError } from './codec.ts';

// Only text that names `__proto__` or `constructor` can pollute a prototype; the rest goes
// through plain JSON.parse, and those rare texts through secure-json-parse, which refuses them.
const RISKY = ['__proto__', 'constructor', '\\u'];
const risky = (text: string) =>
  text.includes(RISKY[0] as string) || text.includes(RISKY[1] as string) || text.includes(RISKY[2] as string);

/**
 * A value as JSON text, or INVALID_ARGUMENT when it has none. For clients that take strings and
 * would otherwise copy the bytes again (ioredis writes a command of strings as one string, but
 * one Buffer argument turns the whole command into a list of buffers).
 */
export function encodeJsonText(value: unknown): string;
/** With `omittable`, undefined for a value JSON leaves out (undefined, a function, a symbol). */
export function encodeJsonText(value: unknown, omittable: true): string | undefined;
export function encodeJsonText(value: unknown, omittable = false): string | undefined {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    // Cycles and BigInt land here: the sender's bug, caught before anything is sent.
    throw codecError('json', 'value cannot be encoded as JSON', error);
  }
  if (text === undefined && !omittable) throw codecError('json', 'value cannot be encoded as JSON');
  return text;
}

function decodeJsonText(text: string): unknown {
  try {
    if (!risky(text)) return JSON.parse(text);
    return sjson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' });
  } catch (error) {
    throw codecError('json', 'frame is not valid JSON', error);
  }
}

export function createJsonCodec(): Codec {
  return {
    name: 'json',
    contentType: 'application/json',
    encode(value: unknown): Uint8Array {
      return Buffer.from(encodeJsonText(value), 'utf8');
    },
    decode(bytes: Uint8Array): unknown {
      if (!isUtf8(bytes)) {
        throw codecError('json', 'frame is not valid UTF-8');
      }
      const buffer = Buffer.isBuffer(bytes)
        ? bytes
        : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      return decodeJsonText(buffer.toString('utf8'));
    },
    decodeText: decodeJsonText,
  };
}
