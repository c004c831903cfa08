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

export function frameTooLarge(size: number, max: number): ParleyError {
  return new ParleyError('RESOURCE_EXHAUSTED', `frame of ${size} bytes exceeds the maximum of ${max}`, {
    details: { size, max },
  });
}
