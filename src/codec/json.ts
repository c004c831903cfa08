/**
 * @module codec/json
 * The default codec. Parsing goes through secure-json-parse, which rejects `__proto__` keys and
 * `constructor.prototype` paths, so decoded data can be merged into other objects without risk of
 * prototype pollution.
 */
import sjson from 'secure-json-parse';
import { ParleyError } from '../errors.ts';
import type { Codec } from './codec.ts';

const decoder = new TextDecoder('utf-8', { fatal: true });

export function createJsonCodec(): Codec {
  return {
    name: 'json',
    contentType: 'application/json',
    encode(value: unknown): Uint8Array {
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
      return Buffer.from(text, 'utf8');
    },
    decode(bytes: Uint8Array): unknown {
      let text: string;
      try {
        text = decoder.decode(bytes);
      } catch (error) {
        throw new ParleyError('INVALID_ARGUMENT', 'frame is not valid UTF-8', {
          cause: error,
          details: { codec: 'json' },
        });
      }
      try {
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
