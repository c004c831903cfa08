/**
 * @module runtime/abort
 * One listener per caller signal, however many calls share it. A caller that passes the same
 * AbortSignal to 100 000 calls would otherwise hang 100 000 listeners on it (and trip Node's
 * MaxListenersExceededWarning); here the signal gets one, and each call an entry in a set.
 */

import { RequestAbort } from '../transport/pending.ts';
import type { RequestSignal } from '../transport/transport.ts';

const watchers = new WeakMap<RequestSignal, Set<() => void>>();

/** Calls `fn` once when `signal` aborts; returns the function that stops watching. */
export function onAbort(signal: RequestSignal, fn: () => void): () => void {
  // A transport's signal belongs to one request: nothing shares it, so no multiplexing.
  if (signal instanceof RequestAbort) {
    signal.addEventListener('abort', fn);
    return () => signal.removeEventListener('abort', fn);
  }
  let set = watchers.get(signal);
  if (set === undefined) {
    const fresh = new Set<() => void>();
    set = fresh;
    watchers.set(signal, fresh);
    signal.addEventListener(
      'abort',
      () => {
        watchers.delete(signal);
        for (const f of [...fresh]) f();
      },
      { once: true },
    );
  }
  set.add(fn);
  const mine = set;
  return () => {
    mine.delete(fn);
  };
}
