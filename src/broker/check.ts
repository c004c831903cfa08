/**
 * @module broker/check
 * What every broker refuses before it stores anything: a value that is not an envelope, publish
 * options of the wrong type, a subscription whose settings are not what they must be (and, for
 * the hub, a dead-letter filter from one of its TCP clients). Typed callers never send these;
 * untyped ones (JavaScript, a client of the hub's broker over TCP) can. Unchecked, the embedded
 * broker stored envelopes its consumers then dead-lettered, or failed a whole turn of other
 * publishers' messages with a retryable UNAVAILABLE (it writes a turn's publishes in one
 * transaction); the other brokers handed them to their clients unchecked. Refused with
 * INVALID_ARGUMENT (not retryable): nothing is stored.
 */
import { Buffer } from 'node:buffer';
import { assertEnvelope, type Envelope } from '../envelope/envelope.ts';
import { ParleyError } from '../errors.ts';
import type { BrokerPublishOptions, ConsumerSpec, DeadLetterFilter } from './broker.ts';

/** The longest delay a publish may ask for, ms: the most a timer can wait (about 24.8 days). */
export const MAX_DELAY_MS = 2 ** 31 - 1;

/** The lease of a delivery whose subscription sets none (`ConsumerSpec.lease`), ms: every broker's. */
export const DEFAULT_LEASE_MS = 30_000;

export function checkPublish(envelope: unknown, options: unknown): asserts envelope is Envelope {
  assertEnvelope(envelope);
  if (options === undefined) return;
  if (!isRecord(options)) throw invalid('publish options must be an object');
  const { key, delay } = options as BrokerPublishOptions;
  if (key !== undefined && typeof key !== 'string') throw invalid('the ordering key must be a string');
  if (delay !== undefined && !(typeof delay === 'number' && delay >= 0 && delay <= MAX_DELAY_MS))
    throw invalid(`delay must be a number of ms from 0 to ${MAX_DELAY_MS}`);
}

/**
 * Room a dead letter needs besides the message it holds (topic, group, code, counts, times, and
 * the failure's text as `failure` in `outcome.ts` cuts it, even if every character is escaped).
 * A broker whose messages have a size limit refuses a publish that leaves less than this under
 * it: stored, such a message could never be dead-lettered, and would come back for ever.
 */
export const LETTER_ROOM = 8 * 1024;

/**
 * INVALID_ARGUMENT for a message of `bytes` (and its `key`, which its dead letter holds too) on a
 * broker that takes at most `limit`, when a dead letter holding it would not fit ({@link LETTER_ROOM}).
 */
export function checkLetterRoom(
  body: number,
  limit: number,
  broker: string,
  limitName: string,
  key?: string,
): void {
  const bytes = key === undefined ? body : body + Buffer.byteLength(key);
  if (bytes + LETTER_ROOM <= limit) return;
  throw new ParleyError(
    'INVALID_ARGUMENT',
    `${broker}: a message of ${bytes} bytes is over the largest this broker takes, ${limit - LETTER_ROOM} ` +
      `(${limitName} ${limit} less ${LETTER_ROOM} for its dead letter, should it fail)`,
    { details: { size: bytes, max: limit - LETTER_ROOM } },
  );
}

/** The most deliveries one consumer may hold at once. */
export const MAX_IN_FLIGHT = 1_000_000;

/** Refuses a subscription a broker could not honour (a topic that is no name, a lease of 'x'). */
export function checkSpec(spec: unknown): asserts spec is ConsumerSpec {
  if (!isRecord(spec)) throw invalid('a subscription must be an object');
  const { topic, group, maxAttempts, maxInFlight, lease, startFrom, backoff } = spec;
  if (typeof topic !== 'string' || topic === '') throw invalid('topic must be a non-empty string');
  if (typeof group !== 'string' || group === '') throw invalid('group must be a non-empty string');
  if (maxAttempts !== undefined) checkWhole('maxAttempts', maxAttempts, 1, 1_000_000);
  if (maxInFlight !== undefined) checkWhole('maxInFlight', maxInFlight, 1, MAX_IN_FLIGHT);
  if (lease !== undefined) checkLease(lease);
  if (startFrom !== undefined && startFrom !== 'beginning' && startFrom !== 'now')
    throw invalid("startFrom must be 'beginning' or 'now'");
  if (backoff === undefined) return;
  if (!isRecord(backoff)) throw invalid('backoff must be an object');
  for (const name of ['initial', 'max'] as const) {
    const v = backoff[name];
    if (v !== undefined && !(typeof v === 'number' && v >= 0 && v <= MAX_DELAY_MS))
      throw invalid(`backoff.${name} must be a number of ms from 0 to ${MAX_DELAY_MS}`);
  }
  const m = backoff.multiplier;
  if (m !== undefined && !(typeof m === 'number' && m >= 1 && m <= 1000))
    throw invalid('backoff.multiplier must be a number from 1 to 1000');
}

/** Refuses a dead-letter filter whose fields are not what they must be. */
export function checkFilter(filter: unknown): asserts filter is DeadLetterFilter {
  if (filter === undefined) return;
  if (!isRecord(filter)) throw invalid('a dead-letter filter must be an object');
  for (const name of ['topic', 'group', 'code'] as const) {
    if (filter[name] !== undefined && typeof filter[name] !== 'string')
      throw invalid(`filter.${name} must be a string`);
  }
  const { ids } = filter;
  if (ids !== undefined && !(Array.isArray(ids) && ids.every((id) => Number.isSafeInteger(id))))
    throw invalid('filter.ids must be a list of dead-letter ids');
}

/** A lease, or a lease extension: ms above 0, at most what a timer can wait. */
export function checkLease(ms: unknown): asserts ms is number {
  if (!(typeof ms === 'number' && ms > 0 && ms <= MAX_DELAY_MS))
    throw invalid(`a lease is a number of ms above 0 and at most ${MAX_DELAY_MS}`);
}

/** A count, a limit (from 1) or an id (from 0: a RabbitMQ or Kafka offset): a whole number. */
export function checkWhole(
  name: string,
  value: unknown,
  least = 1,
  most = Number.MAX_SAFE_INTEGER,
): asserts value is number {
  if (!(Number.isSafeInteger(value) && (value as number) >= least && (value as number) <= most))
    throw invalid(`${name} must be a whole number from ${least} to ${most}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function invalid(message: string): ParleyError {
  return new ParleyError('INVALID_ARGUMENT', message, { retryable: false });
}
