/**
 * @module transport/pending
 * Pieces every transport needs: a reply promise that the caller's signal can abandon, and the
 * error for a frame over the size limit.
 */
import { ParleyError } from '../errors.ts';
import type { RequestSignal } from './transport.ts';

export interface PendingReply {
  resolve(frame: Uint8Array): void;
  reject(error: unknown): void;
}

/**
 * A promise for one reply. `start` registers the pending entry and sends; if `signal` aborts
 * first, `forget` drops the entry (and may tell the peer) and the promise rejects with the
 * signal's reason. The abort listener is removed however the promise settles.
 */
export function awaitReply(
  signal: RequestSignal | undefined,
  forget: () => void,
  start: (pending: PendingReply) => void,
): Promise<Uint8Array> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<Uint8Array>((resolve, reject) => {
    const onAbort = () => {
      forget();
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    start({
      resolve: (reply) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(reply);
      },
      reject: (error) => {
        signal?.removeEventListener('abort', onAbort);
        reject(error);
      },
    });
  });
}

/**
 * A frame (a request or its reply) over a transport's limit. Not retryable: the same call makes
 * the same frame, so a retry fails the same way (and, counted by a breaker, would open it for a
 * healthy target: the caller's own payload is no sign the target is unwell).
 */
export function frameTooLarge(size: number, max: number): ParleyError {
  return new ParleyError('RESOURCE_EXHAUSTED', `frame of ${size} bytes exceeds the maximum of ${max}`, {
    details: { size, max },
    retryable: false,
  });
}

/** A light abort signal a transport hands to its handler for one request (see `RequestSignal`). */
export class RequestAbort implements RequestSignal {
  aborted = false;
  reason: unknown;
  private listeners: (() => void)[] | undefined;

  addEventListener(_type: 'abort', listener: () => void): void {
    if (this.aborted) return;
    this.listeners ??= [];
    this.listeners.push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    if (this.listeners !== undefined) this.listeners = this.listeners.filter((l) => l !== listener);
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const listeners = this.listeners;
    this.listeners = undefined;
    if (listeners !== undefined) for (const l of listeners) l();
  }
}

/**
 * Whether the callee should be told that its caller gave up: not when the deadline passed, since
 * the callee holds the same deadline and stops by itself (with DEADLINE_EXCEEDED, the true reason).
 */
export function worthTelling(reason: unknown): boolean {
  return !(reason instanceof ParleyError && reason.code === 'DEADLINE_EXCEEDED');
}
