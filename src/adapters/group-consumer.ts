/**
 * @module adapters/group-consumer
 * The consumer half of the `Broker` contract, once for every adapter whose broker hands over raw
 * messages one by one (JetStream, Redis Streams, RabbitMQ). The adapter delivers each message with
 * the broker's own primitives attached — ack, put back after a delay, keep reserved — and this
 * class does what Parley promises on top:
 *
 * - **Attempts**: the broker's delivery count, less the deliveries this consumer put back without
 *   spending an attempt (`details.deferMs`, or a delayed message that came early). After
 *   `maxAttempts`, or at once for a permanent error, the message goes to the dead-letter sink with
 *   code, message and attempts, then is acked. Otherwise it is put back with exponential backoff
 *   and full jitter.
 * - **Per-key order**: a keyed message waits while an earlier message of its key is being handled
 *   or waits for its retry; its lease is kept alive meanwhile. Other keys flow. The key's turn is
 *   held by the retried message until it comes back; if the broker gives it to another consumer
 *   of the group, the turn is released after the retry delay plus one lease.
 * - **Delayed delivery**: a message carrying a not-before time is put back until then.
 * - **Backpressure**: at most `maxInFlight` messages held (handled or waiting for their key); the
 *   adapter asks `room` before taking more and is told by `onRoom` when some frees.
 *
 * What is counted in memory (deferrals, the first failure's time) is this process's: if another
 * consumer of the group gets the message, a deferral may count as an attempt there. Broker
 * operations that fail (a lost connection) are logged; the broker redelivers the message when its
 * lease ends, so nothing is lost (at least once).
 */

import type { ConsumerHandler, ConsumerSpec, DeadLetter } from '../broker/broker.ts';
import { checkLease, DEFAULT_LEASE_MS, MAX_DELAY_MS } from '../broker/check.ts';
import {
  badBody,
  deferOf,
  failure,
  farNotBefore,
  permanent,
  runHandler,
  undecodableLetter,
} from '../broker/outcome.ts';
import type { Codec } from '../codec/codec.ts';
import { assertEnvelope, type Envelope } from '../envelope/envelope.ts';
import { ParleyError } from '../errors.ts';
import { type Backoff, backoffDelay, DEFAULT_BACKOFF } from '../resilience/backoff.ts';

/** One delivered message, with the broker's operations on it. */
export interface RawMessage {
  /** Stable identity of the message in its group (stream sequence, entry id, message id). */
  readonly id: string;
  /**
   * The stored bytes, or the body as text from a client that reads strings (the adapter has made
   * sure that text was valid UTF-8: it goes to the codec's `decodeText`).
   */
  readonly body: Uint8Array | string;
  /** Ordering key, when published with one. */
  readonly key: string | undefined;
  /** Not to be handled before this time (epoch ms), when published with a delay. */
  readonly notBefore: number | undefined;
  /** The broker's count of deliveries of this message to this group, 1 on the first. */
  readonly deliveries: number;
  /**
   * Settles the message with the broker. `undefined` when the ack is queued or done at once (the
   * message's room frees now, without a promise and a turn of the microtask queue for it).
   */
  ack(): Promise<void> | undefined;
  /** Back to the group, to be delivered again after `delayMs`. */
  retry(delayMs: number): Promise<void>;
  /** Keeps the message reserved for this consumer for `ms` more (or a whole lease). */
  extend(ms: number): Promise<void>;
}

export type NewDeadLetter = Omit<DeadLetter, 'id'>;

export interface GroupConsumerOptions {
  codec: Codec;
  /** Stores a dead letter (`raw` for what the adapter keeps besides, like the key); acked after. */
  deadLetter(letter: NewDeadLetter, raw: RawMessage): Promise<void>;
  /**
   * The most bytes of a body that was no envelope its dead letter may hold (`letterBodyRoom` of
   * the store's largest record); unset: all of them.
   */
  letterBodyRoom?(): number;
  /** Room freed: the adapter may take more. */
  onRoom?(): void;
  random?: () => number;
  log?: (message: string) => void;
}

interface KeyTurn {
  owner: string;
  waiting: RawMessage[];
  release: NodeJS.Timeout | undefined;
}

export class GroupConsumer {
  readonly maxInFlight: number;
  readonly lease: number;
  private readonly maxAttempts: number;
  private readonly backoff: Backoff;
  private readonly random: () => number;
  private readonly log: (message: string) => void;
  private held = 0;
  private running = 0;
  private closed = false;
  private idle: (() => void) | undefined;
  private readonly keys = new Map<string, KeyTurn>();
  private readonly deferred = new Map<string, number>();
  private readonly firstFailure = new Map<string, number>();
  private keepAlive: NodeJS.Timeout | undefined;

  constructor(
    readonly spec: ConsumerSpec,
    private readonly handler: ConsumerHandler,
    private readonly options: GroupConsumerOptions,
  ) {
    this.maxInFlight = Math.max(1, spec.maxInFlight ?? 64);
    this.maxAttempts = Math.max(1, spec.maxAttempts ?? 5);
    this.backoff = { ...DEFAULT_BACKOFF, ...spec.backoff };
    this.lease = spec.lease ?? DEFAULT_LEASE_MS;
    this.random = options.random ?? Math.random;
    this.log =
      options.log ?? ((m) => process.stderr.write(`parley consumer ${spec.group}/${spec.topic}: ${m}\n`));
  }

  /** How many more messages this consumer may take now. */
  get room(): number {
    return this.closed ? 0 : this.maxInFlight - this.held;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** A message the broker delivered to this consumer. */
  deliver(raw: RawMessage): void {
    if (this.closed) {
      void this.op(raw.retry(0), 'put back a message after close');
      return;
    }
    this.held++;
    // One past any delay is not waited for: `run` dead-letters it.
    const wait = raw.notBefore === undefined ? 0 : raw.notBefore - Date.now();
    if (wait > 0 && wait <= MAX_DELAY_MS) {
      this.putBack(raw, wait, true);
      return;
    }
    if (raw.key !== undefined) {
      const turn = this.keys.get(raw.key);
      if (turn === undefined) this.keys.set(raw.key, { owner: raw.id, waiting: [], release: undefined });
      else if (turn.owner === raw.id) {
        clearTimeout(turn.release);
        turn.release = undefined;
      } else {
        // A redelivery of a message already waiting replaces it (the newer handle is the live one).
        const i = turn.waiting.findIndex((w) => w.id === raw.id);
        if (i >= 0) {
          turn.waiting[i] = raw;
          this.held--;
        } else turn.waiting.push(raw);
        this.watchWaiting();
        return;
      }
    }
    this.run(raw);
  }

  private run(raw: RawMessage): void {
    this.running++;
    const attempt = Math.max(1, raw.deliveries - (this.deferred.get(raw.id) ?? 0));
    let envelope: Envelope;
    try {
      envelope = assertEnvelope(decodeBody(this.options.codec, raw.body));
    } catch (error) {
      const e = ParleyError.from(error, 'INVALID_ARGUMENT');
      const letter = undecodableLetter(
        raw.id,
        this.spec.topic,
        raw.body,
        e.code === 'INVALID_ARGUMENT' ? e : badBody(e),
        this.options.letterBodyRoom?.(),
      );
      this.dead(raw, letter.error, attempt, letter.envelope);
      return;
    }
    const far = farNotBefore(raw.notBefore, Date.now());
    if (far !== undefined) {
      this.dead(raw, far, attempt, envelope);
      return;
    }
    runHandler(this.handler, { envelope, attempt, extendLease: (ms: number) => extendChecked(raw, ms) }).then(
      () => {
        this.forget(raw.id);
        this.finish(raw, raw.ack(), 'ack', true);
      },
      (error: unknown) => {
        const e = ParleyError.from(error);
        const defer = deferOf(e);
        if (defer !== undefined) {
          this.running--;
          this.putBack(raw, defer, true);
        } else if (permanent(e) || attempt >= this.maxAttempts) {
          this.dead(raw, e, attempt, envelope);
        } else {
          if (!this.firstFailure.has(raw.id)) this.firstFailure.set(raw.id, Date.now());
          this.running--;
          this.putBack(raw, backoffDelay(this.backoff, attempt, this.random), false);
        }
      },
    );
  }

  private dead(raw: RawMessage, e: ParleyError, attempts: number, envelope: Envelope): void {
    const now = Date.now();
    const letter: NewDeadLetter = {
      topic: this.spec.topic,
      group: this.spec.group,
      envelope,
      ...failure(e),
      attempts,
      firstFailureAt: this.firstFailure.get(raw.id) ?? now,
      lastFailureAt: now,
    };
    this.forget(raw.id);
    // Acked only once the dead letter is stored: a crash in between stores it twice, never zero times.
    this.finish(
      raw,
      this.options.deadLetter(letter, raw).then(() => raw.ack()),
      'dead-letter',
      true,
    );
  }

  /** The handler is done with `raw` and the broker is told; `done` frees the key's turn. */
  private finish(raw: RawMessage, settling: Promise<void> | undefined, what: string, done: boolean): void {
    // One `then` (this runs once per message): not `op(...).finally(...)`, which costs three promises.
    const after = () => {
      this.running--;
      this.held--;
      if (done) this.releaseKey(raw);
      this.settled();
    };
    if (settling === undefined) {
      after();
      return;
    }
    settling.then(after, (error: unknown) => {
      // The broker redelivers when the lease ends: logged, not lost.
      this.log(`could not ${what}: ${ParleyError.from(error).message}`);
      after();
    });
  }

  /** Back to the broker for `delay` ms. `free`: the attempt is not spent (deferral, early delivery). */
  private putBack(raw: RawMessage, delay: number, free: boolean): void {
    if (free) this.deferred.set(raw.id, (this.deferred.get(raw.id) ?? 0) + 1);
    const turn = raw.key === undefined ? undefined : this.keys.get(raw.key);
    if (turn !== undefined && turn.owner === raw.id) {
      // The key's turn stays with this message while it waits; released if it never comes back.
      clearTimeout(turn.release);
      turn.release = setTimeout(() => this.releaseKey(raw), delay + this.lease + 1000);
      turn.release.unref();
    }
    void this.op(raw.retry(delay), 'put back').finally(() => {
      this.held--;
      this.settled();
    });
  }

  private releaseKey(raw: RawMessage): void {
    if (raw.key === undefined) return;
    const turn = this.keys.get(raw.key);
    if (turn === undefined || turn.owner !== raw.id) return;
    clearTimeout(turn.release);
    turn.release = undefined;
    const next = turn.waiting.shift();
    if (next === undefined) {
      this.keys.delete(raw.key);
      return;
    }
    turn.owner = next.id;
    this.run(next);
  }

  private forget(id: string): void {
    this.deferred.delete(id);
    this.firstFailure.delete(id);
  }

  private settled(): void {
    if (this.closed) {
      if (this.running === 0) this.idle?.();
      return;
    }
    this.options.onRoom?.();
  }

  /** Waiting messages keep their leases while an earlier message of their key is handled. */
  private watchWaiting(): void {
    if (this.keepAlive !== undefined) return;
    this.keepAlive = setInterval(
      () => {
        let any = false;
        for (const turn of this.keys.values()) {
          for (const w of turn.waiting) {
            any = true;
            void this.op(w.extend(this.lease), 'extend a waiting message');
          }
        }
        if (!any) {
          clearInterval(this.keepAlive);
          this.keepAlive = undefined;
        }
      },
      Math.max(50, this.lease / 3),
    );
    this.keepAlive.unref();
  }

  private async op(p: Promise<void>, what: string): Promise<void> {
    try {
      await p;
    } catch (error) {
      // The broker redelivers when the lease ends: logged, not lost.
      this.log(`could not ${what}: ${ParleyError.from(error).message}`);
    }
  }

  /** Takes nothing more; waiting messages go back at once; resolves when handlers have settled. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.keepAlive);
    for (const turn of this.keys.values()) {
      clearTimeout(turn.release);
      for (const w of turn.waiting.splice(0)) {
        this.held--;
        void this.op(w.retry(0), 'put back a waiting message');
      }
    }
    if (this.running > 0) await new Promise<void>((resolve) => (this.idle = resolve));
  }
}

function decodeBody(codec: Codec, body: Uint8Array | string): unknown {
  if (typeof body !== 'string') return codec.decode(body);
  return codec.decodeText !== undefined ? codec.decodeText(body) : codec.decode(Buffer.from(body, 'utf8'));
}

/** A handler's `extendLease`: the broker's own, for a lease it can hold. */
async function extendChecked(raw: RawMessage, ms: number): Promise<void> {
  // Until 2026-12-03 NaN or Infinity reached the broker: a timer or an idle time that ends at once
  // or never.
  checkLease(ms);
  await raw.extend(ms);
}
