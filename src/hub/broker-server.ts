/**
 * @module hub/broker-server
 * The hub's embedded broker, served over the hub's TCP port to clients that said hello as
 * `role: 'broker'` (see `hub/remote-broker`). A client's calls (`BrokerCall`) are answered with
 * `BrokerResult`; each delivery to one of its consumers goes out as a `Deliver` frame and is
 * settled by the client's `Settle` frame: ack, or a nack with the handler's error. The embedded
 * broker keeps every guarantee (leases, retries, dead letters, per-key order, `maxInFlight`); a
 * client that disconnects nacks what it held with UNAVAILABLE, and its consumers close. History
 * reads (`history.latest`, `history.read`, a wait bounded to 30 s) go to the broker's history.
 */
import type {
  Broker,
  BrokerPublishOptions,
  Consumer,
  DeadLetterFilter,
  Delivery,
  HistoryPage,
} from '../broker/broker.ts';
import {
  checkFilter,
  checkLease,
  checkLetterRoom,
  checkPublish,
  checkSpec,
  checkWhole,
} from '../broker/check.ts';
import { ParleyError } from '../errors.ts';
import { IdTable } from '../transport/id-table.ts';
import { FrameType, type FrameWriter, jsonObjectOf } from '../transport/tcp/frames.ts';
import { DEFAULT_MAX_PAYLOAD } from '../transport/transport.ts';

/** A result already in JSON: sent as it is. */
class Serialised {
  constructor(readonly json: string) {}
}

interface Held {
  delivery: Delivery;
  resolve(): void;
  reject(error: unknown): void;
}

/** One broker client connection on the hub. */
export class BrokerSession {
  private readonly consumers = new Map<number, Consumer>();
  private readonly held = new IdTable<Held>();
  private nextDelivery = 0;
  private closed = false;

  constructor(
    private readonly broker: Broker,
    private readonly writer: FrameWriter,
    /** The largest frame: a history page is cut to fit in one answer. */
    private readonly maxPayload: number = DEFAULT_MAX_PAYLOAD,
  ) {}

  /**
   * A `BrokerCall` frame: runs it, answers with `BrokerResult` under the same id. Settles once the
   * answer is handed to the writer (the hub counts the calls it runs for a connection).
   */
  call(id: number, payload: Buffer): Promise<void> {
    const request = jsonObjectOf(payload);
    if (request === undefined) {
      this.answer(id, {
        ok: false,
        error: new ParleyError('INVALID_ARGUMENT', 'broker call is not a JSON object').toWire(),
      });
      return Promise.resolve();
    }
    const args = request.args;
    const known = typeof args === 'object' && args !== null && !Array.isArray(args);
    return this.run(
      String(request.op),
      (known ? args : {}) as Record<string, unknown>,
      payload.byteLength,
    ).then(
      (value) =>
        value instanceof Serialised
          ? this.send(id, `{"ok":true,"value":${value.json}}`)
          : this.answer(id, { ok: true, value: value ?? null }),
      (error: unknown) => this.answer(id, { ok: false, error: ParleyError.from(error).toWire() }),
    );
  }

  /** A `Settle` frame: the client's handler finished delivery `id`. */
  settle(id: number, payload: Buffer): void {
    const h = this.held.take(id);
    if (h === undefined) return; // the client answered after it lost the delivery
    // Anything but `{ ok: true }` puts the delivery back. An unreadable outcome says nothing of
    // the message: retried like a lost lease, not dead-lettered for it.
    const outcome = jsonObjectOf(payload);
    if (outcome === undefined) h.reject(new ParleyError('UNAVAILABLE', 'unreadable settle frame'));
    else if (outcome.ok === true) h.resolve();
    else h.reject(ParleyError.fromWire(outcome.error));
  }

  /** The connection is gone: what the client held is nacked, its consumers close. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const h of this.held.values())
      h.reject(new ParleyError('UNAVAILABLE', 'the broker client went away'));
    this.held.clear();
    await Promise.allSettled([...this.consumers.values()].map((c) => c.close()));
    this.consumers.clear();
  }

  private answer(id: number, result: unknown): void {
    this.send(id, JSON.stringify(result));
  }

  private send(id: number, json: string): void {
    if (this.closed) return;
    const frame = Buffer.from(json);
    // An answer over the largest frame would cost the client its connection (its reader refuses
    // it): a list of many large dead letters, say. It gets an error saying so instead.
    if (frame.byteLength > this.maxPayload) {
      const error = new ParleyError(
        'RESOURCE_EXHAUSTED',
        `the answer of ${frame.byteLength} bytes is over the largest frame, ${this.maxPayload}: ask for less (a limit)`,
        { details: { size: frame.byteLength, max: this.maxPayload } },
      );
      this.writer.send(
        FrameType.BrokerResult,
        id,
        Buffer.from(JSON.stringify({ ok: false, error: error.toWire() })),
      );
      return;
    }
    this.writer.send(FrameType.BrokerResult, id, frame);
  }

  private async run(op: string, a: Record<string, unknown>, size: number): Promise<unknown> {
    const b = this.broker;
    switch (op) {
      case 'publish': {
        // A client of the hub is any program on the network: what it sends is checked here,
        // whatever broker the hub serves. Its delivery and its dead letter travel in frames of
        // the same maximum, with a little more around the envelope than its publish frame has.
        const options = a.options ?? undefined;
        checkPublish(a.envelope, options);
        checkLetterRoom(size, this.maxPayload, 'the hub', 'its largest frame');
        return b.publish(a.envelope, options as BrokerPublishOptions | undefined);
      }
      case 'subscribe':
        return this.subscribe(a.consumer, a.spec);
      case 'unsubscribe': {
        const consumer = this.consumers.get(a.consumer as number);
        this.consumers.delete(a.consumer as number);
        await consumer?.close();
        return null;
      }
      case 'extendLease': {
        const h = this.held.get(a.delivery as number);
        if (h === undefined) throw new ParleyError('FAILED_PRECONDITION', 'the lease was lost');
        checkLease(a.ms);
        await h.delivery.extendLease(a.ms);
        return null;
      }
      case 'history.latest':
        return this.history().latest(topicOf(a.topic));
      case 'history.read':
        return this.fit(
          await this.history().read(topicOf(a.topic), String(a.after), {
            limit: a.limit as number | undefined,
            waitMs: Math.min(30_000, Number(a.waitMs) || 0),
            ...(a.until === undefined || a.until === null ? {} : { until: String(a.until) }),
          }),
        );
      case 'dlq.list': {
        const limit = a.limit ?? undefined;
        if (limit !== undefined) checkWhole('limit', limit);
        return b.deadLetters.list(filterOf(a.filter), limit);
      }
      case 'dlq.get':
        checkWhole('a dead-letter id', a.id, 0);
        return (await b.deadLetters.get(a.id)) ?? null;
      case 'dlq.replay':
        return b.deadLetters.replay(filterOf(a.filter));
      case 'dlq.purge':
        return b.deadLetters.purge(filterOf(a.filter));
      default:
        throw new ParleyError('UNIMPLEMENTED', `no broker operation ${op}`);
    }
  }

  /**
   * The page as JSON, each entry serialised once: as many entries as fit in one frame (the reader
   * asks again from the last one). An entry too large for any frame could not have been published
   * through the hub; one written to the file by another process is passed over.
   */
  private fit(page: HistoryPage): Serialised {
    const room = this.maxPayload - 4096;
    const parts: string[] = [];
    let used = 0;
    let next = page.next;
    for (const entry of page.entries) {
      const json = JSON.stringify(entry);
      used += Buffer.byteLength(json) + 1;
      if (used > room) {
        next = page.entries[parts.length - 1]?.position ?? entry.position;
        break;
      }
      parts.push(json);
    }
    return new Serialised(
      `{"entries":[${parts.join(',')}],"next":${JSON.stringify(next)},"gap":${page.gap}}`,
    );
  }

  private history(): NonNullable<Broker['history']> {
    if (this.broker.history === undefined) {
      throw new ParleyError('UNIMPLEMENTED', "the hub's broker keeps no history");
    }
    return this.broker.history;
  }

  /** The client names the consumer: deliveries may arrive before the answer to `subscribe`. */
  private async subscribe(id: unknown, spec: unknown): Promise<null> {
    if (typeof id !== 'number' || !Number.isInteger(id) || this.consumers.has(id)) {
      throw new ParleyError('INVALID_ARGUMENT', 'subscribe needs a new integer consumer id');
    }
    checkSpec(spec);
    const consumerId = id;
    const consumer = await this.broker.subscribe(spec, (delivery) => {
      if (this.closed) return Promise.reject(new ParleyError('UNAVAILABLE', 'the broker client went away'));
      this.nextDelivery = this.nextDelivery >= 0xffffffff ? 1 : this.nextDelivery + 1;
      const id = this.nextDelivery;
      return new Promise<void>((resolve, reject) => {
        this.held.set(id, { delivery, resolve, reject });
        const body = { consumer: consumerId, envelope: delivery.envelope, attempt: delivery.attempt };
        const frame = Buffer.from(JSON.stringify(body));
        if (frame.byteLength > this.maxPayload) {
          // Sent, it would cost the client its connection, and come back on the next one for
          // ever: dead-lettered instead, saying why (a message put in the broker another way).
          this.held.delete(id);
          reject(
            new ParleyError(
              'INVALID_ARGUMENT',
              `a delivery of ${frame.byteLength} bytes is over the largest frame, ${this.maxPayload}`,
              { retryable: false },
            ),
          );
          return;
        }
        this.writer.send(FrameType.Deliver, id, frame);
      });
    });
    // The client went away while the broker was subscribing: its close found nothing to close.
    // Kept, this consumer would take the group's messages and fail every one of them.
    if (this.closed) {
      await consumer.close();
      throw new ParleyError('UNAVAILABLE', 'the broker client went away');
    }
    this.consumers.set(consumerId, consumer);
    return null;
  }
}

/** A client's dead-letter filter, checked (absent: every letter). */
function filterOf(filter: unknown): DeadLetterFilter {
  const f = filter ?? {};
  checkFilter(f);
  return f;
}

function topicOf(topic: unknown): string {
  if (typeof topic !== 'string' || topic === '')
    throw new ParleyError('INVALID_ARGUMENT', 'topic must be a non-empty string');
  return topic;
}
