/**
 * @module broker/outcome
 * What a failed delivery becomes, the same for every broker: put back without spending an attempt
 * (`details.deferMs`), dead-lettered at once (a failure someone declared permanent), or retried;
 * and what the dead letter of a body that was no envelope holds, and that it is not replayed.
 */
import { Buffer } from 'node:buffer';
import { assertEnvelope, type Envelope } from '../envelope/envelope.ts';
import { type ErrorCode, ParleyError } from '../errors.ts';
import type { DeadLetter } from './broker.ts';
import { LETTER_ROOM, MAX_DELAY_MS } from './check.ts';

/**
 * The deliveries a message had before, from a header or property any client may set (RabbitMQ's
 * `x-parley-attempt`, Kafka's `parley-attempts`, MQTT's `parley-attempt`): a whole number from 0,
 * anything else read as 0, as if absent. Each adapter read it its own way until 2026-12-03: on
 * MQTT `Infinity` made the handler's attempt `Infinity` and its dead letter unreadable, and on
 * RabbitMQ `2.5` made a fractional attempt.
 */
export function spentAttempts(text: string | undefined): number {
  const n = Number(text ?? 0);
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

/** `details.deferMs` on a handler's error: put the message back after that long, attempt unspent. */
export function deferOf(e: ParleyError): number | undefined {
  const ms = e.details?.deferMs;
  return typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 ? Math.min(ms, 3_600_000) : undefined;
}

/**
 * Straight to dead-letter only when someone decided the failure is permanent: not for a wrapped
 * foreign error, and not for a handler that ran out of time or was cancelled (a later try may
 * well succeed).
 */
export function permanent(e: ParleyError): boolean {
  return !e.retryable && !e.unexpected && e.code !== 'DEADLINE_EXCEEDED' && e.code !== 'CANCELLED';
}

/** The most characters of a failure's message a stored failure (a dead letter) keeps. */
export const MAX_LETTER_MESSAGE = 1000;

/**
 * A failure as every broker stores it with the message (a dead letter, a retry): its text cut at
 * {@link MAX_LETTER_MESSAGE} characters and marked, so a letter's size is bounded whatever a
 * handler throws (see `LETTER_ROOM` in `check.ts`).
 */
export function failure(e: ParleyError): { code: ErrorCode; message: string; retryable: boolean } {
  return { code: e.code, message: cutMessage(e.message), retryable: e.retryable };
}

/** The end of a cut message: `… (<its length> characters)`. */
const CUT_MARK = /^… \(\d{4,16} characters\)$/;

/**
 * A failure's text as stored: at most {@link MAX_LETTER_MESSAGE} characters, then the mark of
 * the cut. A text cut already (by a hub's client, on its way to the hub's broker) is kept as it
 * is, with the length it had before.
 */
function cutMessage(message: string): string {
  if (message.length <= MAX_LETTER_MESSAGE) return message;
  if (CUT_MARK.test(message.slice(MAX_LETTER_MESSAGE))) return message;
  return `${message.slice(0, MAX_LETTER_MESSAGE)}… (${message.length} characters)`;
}

/** A stored body that is not an envelope. */
export function badBody(e: ParleyError): ParleyError {
  return new ParleyError('INVALID_ARGUMENT', `stored message is not an envelope: ${e.message}`);
}

/**
 * Runs a handler; one that throws instead of rejecting is a rejection all the same, and one that
 * returns no promise (plain JavaScript, `(d) => { … }`) is done when it returns. Until 2026-12-03
 * such a handler threw an uncaught TypeError (`.then` of undefined) in the broker's consumer: the
 * process crashed, or, with the exception caught, its deliveries were never settled and the
 * consumer's close never ended.
 */
export function runHandler<T>(handler: (delivery: T) => Promise<void>, delivery: T): Promise<void> {
  try {
    // A native promise comes back as it is; any other value (or thenable) is settled by it.
    return Promise.resolve(handler(delivery));
  } catch (error) {
    return Promise.reject(error);
  }
}

/** Whether a dead letter matches a filter's topic, group and code (ids are each store's to look up). */
export function letterMatches(
  letter: { topic: string; group: string; code: string },
  filter: { topic?: string; group?: string; code?: string },
): boolean {
  return (
    (filter.topic === undefined || letter.topic === filter.topic) &&
    (filter.group === undefined || letter.group === filter.group) &&
    (filter.code === undefined || letter.code === filter.code)
  );
}

/** The source of the envelope a dead letter holds for a body that was no envelope. */
export const UNDECODABLE = '/parley/undecodable';

/**
 * Whether a dead letter may be replayed: not one that holds the bytes of a body that was no
 * envelope (its wrapper is no event of the topic, and the bytes would only be dead-lettered
 * again). Replays pass over these; they stay listed until purged.
 */
export function replayable(letter: { envelope: Envelope }): boolean {
  return letter.envelope.source !== UNDECODABLE;
}

/**
 * What a dead letter records for a stored body that is not an envelope, on every broker: its
 * bytes, base64, under the broker's id of the message, so nothing of it is lost.
 */
export function undecodableEnvelope(id: string, topic: string, body: Uint8Array | string): Envelope {
  return {
    specversion: '1.0',
    id,
    source: UNDECODABLE,
    type: topic,
    data: (typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body)).toString('base64'),
  };
}

/**
 * The most bytes of a body that was no envelope a dead letter can hold, in base64 (4 characters
 * for 3 bytes), under a store whose records take at most `limit` bytes, with {@link LETTER_ROOM}
 * kept for the letter's other fields. Parley's own publishes are refused when their letter would
 * not fit (`checkLetterRoom`); another writer's body is not checked, and its letter, whole, could
 * be over the limit: the store then refused it, the message was not acknowledged, and it came
 * back for ever.
 */
export function letterBodyRoom(limit: number): number {
  return Math.max(0, Math.floor((limit - LETTER_ROOM) / 4) * 3);
}

/**
 * The dead letter's envelope and failure for a body that was no envelope (`why`): all its bytes,
 * or, over `room` ({@link letterBodyRoom}), its first `room` bytes with the failure's message
 * saying how many of how many it keeps.
 */
export function undecodableLetter(
  id: string,
  topic: string,
  given: Uint8Array | string,
  why: ParleyError,
  room = Number.POSITIVE_INFINITY,
): { envelope: Envelope; error: ParleyError } {
  const body = typeof given === 'string' ? Buffer.from(given, 'utf8') : given;
  if (body.byteLength <= room) return { envelope: undecodableEnvelope(id, topic, body), error: why };
  const kept = Math.max(0, Math.floor(room));
  return {
    envelope: undecodableEnvelope(id, topic, body.subarray(0, kept)),
    error: new ParleyError(
      why.code,
      `the letter keeps the first ${kept} of its ${body.byteLength} bytes (whole, it would be over the broker's largest message); ${why.message}`,
      why.details === undefined ? {} : { details: why.details },
    ),
  };
}

/**
 * INVALID_ARGUMENT for a not-before time (epoch ms) further ahead than any publish may delay a
 * message ({@link MAX_DELAY_MS}): only another writer, or a corrupted header, sets one. Kept
 * waiting, such a message looped for ever (RabbitMQ refuses a delay queue's TTL over 2³² − 1 ms;
 * Kafka held its key, its wake timer over Node's longest firing every millisecond).
 */
export function farNotBefore(notBefore: number | undefined, now: number): ParleyError | undefined {
  if (notBefore === undefined || !(notBefore - now > MAX_DELAY_MS)) return undefined;
  return new ParleyError(
    'INVALID_ARGUMENT',
    `its not-before time ${notBefore} is more than ${MAX_DELAY_MS} ms ahead, which no publish sets`,
  );
}

/** A dead letter as a store keeps it: the letter and the key its message had. */
export type StoredLetter = DeadLetter & { key?: string };

const isText = (v: unknown): v is string => typeof v === 'string';
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/**
 * A dead letter read back from a store, checked. What this store wrote passes as it was; what
 * another program or version left there is still listed, never dropped from view nor thrown on:
 * a letter whose envelope is none holds that envelope's text as an undecodable one (replays pass
 * over it), and a record that is no letter at all (not decodable, or missing its topic, group,
 * code, message, counts) is an unreadable letter, `DATA_LOSS`, with its whole text, so that it
 * can be seen and purged by id.
 */
export function storedLetter(
  id: number,
  bytes: Uint8Array | string,
  decode: (bytes: Uint8Array) => unknown,
): StoredLetter {
  const data = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
  let value: unknown;
  try {
    value = decode(data);
  } catch {
    value = undefined;
  }
  const l = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  if (
    !isText(l.topic) ||
    !isText(l.group) ||
    !isText(l.code) ||
    !isText(l.message) ||
    typeof l.retryable !== 'boolean' ||
    !isCount(l.attempts) ||
    !isCount(l.firstFailureAt) ||
    !isCount(l.lastFailureAt)
  ) {
    return {
      id,
      topic: '',
      group: '',
      envelope: undecodableEnvelope(`letter-${id}`, '', data),
      code: 'DATA_LOSS',
      message: 'the stored dead letter is not readable: its bytes are kept as the envelope',
      retryable: false,
      attempts: 0,
      firstFailureAt: 0,
      lastFailureAt: 0,
    };
  }
  let envelope: Envelope;
  try {
    envelope = assertEnvelope(l.envelope);
  } catch {
    envelope = undecodableEnvelope(`letter-${id}`, l.topic, JSON.stringify(l.envelope) ?? '');
  }
  const letter: StoredLetter = {
    id,
    topic: l.topic,
    group: l.group,
    envelope,
    code: ParleyError.fromWire({ code: l.code }).code,
    message: l.message,
    retryable: l.retryable,
    attempts: l.attempts,
    firstFailureAt: l.firstFailureAt,
    lastFailureAt: l.lastFailureAt,
  };
  if (isText(l.key)) letter.key = l.key;
  return letter;
}
