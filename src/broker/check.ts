/**
 * @module broker/check
 * What every broker refuses before it stores anything: a value that is not an envelope, and
 * publish options of the wrong type. Typed callers never send these; untyped ones (JavaScript,
 * a client of the hub's broker over TCP) can, and without this check one broker would store
 * what its consumers then dead-letter, another fail a whole batch of other publishers' messages
 * with it (the embedded broker writes a turn's publishes in one transaction), and a third wait
 * forever on a delay of `NaN`. Refused with INVALID_ARGUMENT (not retryable): nothing is stored.
 */
import { assertEnvelope, type Envelope } from '../envelope/envelope.ts';
import { ParleyError } from '../errors.ts';
import type { BrokerPublishOptions } from './broker.ts';

/** The longest delay a publish may ask for, ms: the most a timer can wait (about 24.8 days). */
export const MAX_DELAY_MS = 2 ** 31 - 1;

export function checkPublish(envelope: unknown, options: unknown): asserts envelope is Envelope {
  assertEnvelope(envelope);
  if (options === undefined) return;
  if (typeof options !== 'object' || options === null || Array.isArray(options))
    throw invalid('publish options must be an object');
  const { key, delay } = options as BrokerPublishOptions;
  if (key !== undefined && typeof key !== 'string') throw invalid('the ordering key must be a string');
  if (delay !== undefined && !(typeof delay === 'number' && delay >= 0 && delay <= MAX_DELAY_MS))
    throw invalid(`delay must be a number of ms from 0 to ${MAX_DELAY_MS}`);
}

function invalid(message: string): ParleyError {
  return new ParleyError('INVALID_ARGUMENT', message, { retryable: false });
}
