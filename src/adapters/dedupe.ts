/**
 * @module adapters/dedupe
 * Publisher dedupe for brokers that have none of their own (RabbitMQ, MQTT): the idempotency key
 * is remembered for `windowMs`, at most `maxKeys` keys, in this publisher process. A publish
 * without a key is stored as it is: its envelope id is fresh (`node.publish` makes a new envelope
 * every time, and the outbox gives every relayed event a key), so remembering it never caught a
 * repeat and cost each publish a map entry and a promise.
 *
 * Cheap per publish, since every publish passes here: an entry keeps its publish's promise only
 * while the publish is unconfirmed; keys sit in a `Map` in insertion order, so the oldest is
 * first and trimming walks from the front only when the oldest key is due (or the map is full).
 */
import type { PublishReceipt } from '../broker/broker.ts';

interface Entry {
  at: number;
  /** The envelope id stored under the key. */
  id: string;
  /** The publish in flight; `undefined` once confirmed. A failed publish's entry is removed. */
  pending: Promise<PublishReceipt> | undefined;
}

export class DedupeWindow {
  private readonly keys = new Map<string, Entry>();
  /** `at` of the first key, or later: trimming is due when this is out of the window. */
  private oldest = Number.POSITIVE_INFINITY;

  constructor(
    private readonly windowMs: number,
    private readonly maxKeys: number,
  ) {}

  /**
   * Runs `store` unless `key` was stored within the window: then the first id, once that publish
   * is confirmed (a publish of it still in flight is waited for; one that failed is tried anew).
   * Without a key, runs `store`.
   */
  publish(
    key: string | undefined,
    id: string,
    now: number,
    store: () => Promise<void>,
  ): Promise<PublishReceipt> {
    if (key === undefined) return storeOnly(id, store);
    this.trim(now);
    const seen = this.keys.get(key);
    if (seen !== undefined) return this.again(seen, key, id, now, store);
    return this.fresh(key, id, now, store);
  }

  private async again(
    seen: Entry,
    key: string,
    id: string,
    now: number,
    store: () => Promise<void>,
  ): Promise<PublishReceipt> {
    if (seen.pending !== undefined) await seen.pending.catch(() => undefined);
    if (this.keys.get(key) === seen && seen.pending === undefined) return { id: seen.id, duplicate: true };
    return this.fresh(key, id, now, store);
  }

  private fresh(key: string, id: string, now: number, store: () => Promise<void>): Promise<PublishReceipt> {
    const entry: Entry = { at: now, id, pending: undefined };
    let stored: Promise<void>;
    try {
      stored = store();
    } catch (error) {
      return Promise.reject(error);
    }
    entry.pending = stored.then(
      () => {
        entry.pending = undefined;
        return { id, duplicate: false };
      },
      (error: unknown) => {
        if (this.keys.get(key) === entry) this.keys.delete(key);
        throw error;
      },
    );
    if (this.keys.size === 0) this.oldest = now;
    this.keys.set(key, entry);
    return entry.pending;
  }

  /** Drops keys older than the window, and the oldest beyond `maxKeys`; O(1) when nothing is due. */
  private trim(now: number): void {
    if (now - this.oldest <= this.windowMs && this.keys.size <= this.maxKeys) return;
    this.oldest = Number.POSITIVE_INFINITY;
    for (const [k, e] of this.keys) {
      if (now - e.at <= this.windowMs && this.keys.size <= this.maxKeys) {
        this.oldest = e.at;
        break;
      }
      this.keys.delete(k);
    }
  }
}

function storeOnly(id: string, store: () => Promise<void>): Promise<PublishReceipt> {
  try {
    return store().then(() => ({ id, duplicate: false }));
  } catch (error) {
    return Promise.reject(error);
  }
}
