/**
 * @module codec/json
 * The default codec. Parsing goes through secure-json-parse, which rejects `__proto__` keys and
 * `constructor.prototype` paths, so decoded data can be merged into other objects without risk of
 * prototype pollution.
 */
import { Buffer, isUtf8 } from 'node:buffer';
import sjson from 'secure-json-parse';
import { ParleyError } from '../errors.ts';
import type { Codec } from './codec.ts';

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
export function encodeJsonText(value: unknown): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    // Cycles and BigInt land here: the sender's bug, caught before anything is sent.
    throw new ParleyError(
      'INVALID_ARGUMENT',
      `value cannot be encoded as JSON: ${(error as Error).message}`,
      {
        cause: error,
        details: { codec: 'json' },
      },
    );
  }
  if (text === undefined) {
    throw new ParleyError('INVALID_ARGUMENT', 'value cannot be encoded as JSON', {
      details: { codec: 'json' },
    });
  }
  return text;
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
        throw new ParleyError('INVALID_ARGUMENT', 'frame is not valid UTF-8', { details: { codec: 'json' } });
      }
      const buffer = Buffer.isBuffer(bytes)
        ? bytes
        : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const text = buffer.toString('utf8');
      try {
        if (!risky(text)) return JSON.parse(text);
        return sjson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' });
      } catch (error) {
        throw new ParleyError('INVALID_ARGUMENT', `frame is not valid JSON: ${(error as Error).message}`, {
          cause: error,
          details: { codec: 'json' },
        });
      }
    },
  };
}
