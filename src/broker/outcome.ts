/**
 * @module broker/outcome
 * What a failed delivery becomes, the same for every broker: put back without spending an attempt
 * (`details.deferMs`), dead-lettered at once (a failure someone declared permanent), or retried;
 * and what the dead letter of a body that was no envelope holds, and that it is not replayed.
 */
import type { Envelope } from '../envelope/envelope.ts';
import { ParleyError } from '../errors.ts';

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

export function failure(e: ParleyError): { code: string; message: string; retryable: boolean } {
  return { code: e.code, message: e.message, retryable: e.retryable };
}

/** A stored body that is not an envelope. */
export function badBody(e: ParleyError): ParleyError {
  return new ParleyError('INVALID_ARGUMENT', `stored message is not an envelope: ${e.message}`);
}

/** Runs a handler; one that throws instead of rejecting is a rejection all the same. */
export function runHandler<T>(handler: (delivery: T) => Promise<void>, delivery: T): Promise<void> {
  try {
    return handler(delivery);
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
