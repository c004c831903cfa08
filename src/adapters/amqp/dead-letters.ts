/**
 * @module adapters/amqp/dead-letters
 * The RabbitMQ broker's dead-letter store (`amqp-broker.ts`).
 *
 * - **Dead letters**: a stream `<prefix>.dlq` (shared by every process, kept `deadLetterMaxAge`,
 *   default 30 days): one record per letter, with the error code and message in its headers (the
 *   reason); the letter's id is its stream offset. Replay and purge append tombstones (streams
 *   are append-only); replay publishes to the group's queue only, as a new message (attempts
 *   start again). Each broker instance indexes the stream in memory, reading from where it last
 *   stopped: every `list`/`get`/`replay`/`purge` first appends a marker and reads up to it.
 */
import { randomUUID } from 'node:crypto';
import type { ConsumeMessage, Options } from 'amqplib';
import type { DeadLetter, DeadLetterFilter, DeadLetterStore } from '../../broker/broker.ts';
import { replayable, storedLetter } from '../../broker/outcome.ts';
import { createJsonCodec } from '../../codec/json.ts';
import type { Envelope } from '../../envelope/envelope.ts';
import { ParleyError } from '../../errors.ts';
import type { NewDeadLetter } from '../group-consumer.ts';
import type { AmqpChannel, AmqpLink } from './connect.ts';
import { amqpError } from './errors.ts';
import { header, MARK, RECORD } from './names.ts';

/** A dead letter as stored: with its message's key, for a replay. */
export interface Letter extends NewDeadLetter {
  key?: string;
}

/** What the store needs of its broker (`AmqpBroker` has it; the store does not import the broker). */
export interface DeadLetterHost {
  /** The stream's name. */
  readonly dlq: string;
  readonly link: Pick<AmqpLink, 'connection'>;
  readonly options: { readonly deadLetterMaxAge?: string };
  readonly log: (message: string) => void;
  /** Declares once per broker instance. */
  once(name: string, fn: () => Promise<void>): Promise<void>;
  declare<T>(what: string, fn: (ch: AmqpChannel) => Promise<T>): Promise<T>;
  publishConfirmed(
    exchange: string,
    routingKey: string,
    body: Uint8Array,
    options: Options.Publish,
  ): Promise<void>;
  /** Puts an envelope straight into one group's queue. */
  sendToGroup(topic: string, group: string, envelope: Envelope, key: string | undefined): Promise<void>;
}

/**
 * Dead letters in the stream `<prefix>.dlq`: see the module comment. Records: a letter (its
 * offset is its id), a tombstone (ids replayed or purged), a marker (where a read stops).
 */
export class AmqpDeadLetters implements DeadLetterStore {
  private readonly codec = createJsonCodec();
  private readonly index = new Map<number, DeadLetter & { key?: string }>();
  private next = 0;
  private tail: Promise<void> = Promise.resolve();
  private queued: Promise<void> | undefined;

  constructor(private readonly broker: DeadLetterHost) {}

  private ready(): Promise<void> {
    const { broker } = this;
    return broker.once(`stream ${broker.dlq}`, () =>
      broker.declare(`declaring ${broker.dlq}`, async (ch) => {
        await ch.assertQueue(broker.dlq, {
          durable: true,
          arguments: {
            'x-queue-type': 'stream',
            'x-max-age': broker.options.deadLetterMaxAge ?? '30D',
            'x-stream-max-segment-size-bytes': 16_000_000,
          },
        });
      }),
    );
  }

  private async append(record: string, body: unknown, headers: Record<string, unknown> = {}): Promise<void> {
    await this.ready();
    await this.broker.publishConfirmed('', this.broker.dlq, this.codec.encode(body), {
      contentType: this.codec.contentType,
      headers: { [RECORD]: record, ...headers },
    });
  }

  async add(letter: Letter): Promise<void> {
    await this.append('letter', letter, {
      'x-parley-topic': letter.topic,
      'x-parley-group': letter.group,
      'x-parley-code': letter.code,
      'x-parley-reason': letter.message.slice(0, 1000),
      'x-parley-attempts': letter.attempts,
    });
  }

  /** Brings the index up to date (reads queue up: one read runs, one waits, later callers join it). */
  private sync(): Promise<void> {
    if (this.queued !== undefined) return this.queued;
    const run: Promise<void> = this.tail
      .catch(() => undefined)
      .then(() => {
        if (this.queued === run) this.queued = undefined;
        return this.read();
      });
    this.queued = run;
    this.tail = run;
    return run;
  }

  private async read(): Promise<void> {
    const token = randomUUID();
    await this.append('mark', {}, { [MARK]: token });
    const model = await this.broker.link.connection();
    let ch: AmqpChannel;
    try {
      ch = await model.createChannel();
    } catch (error) {
      throw amqpError(error, 'reading the dead letters');
    }
    ch.on('error', () => undefined);
    try {
      await ch.prefetch(1000);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new ParleyError('UNAVAILABLE', 'RabbitMQ: reading the dead letters timed out')),
          10_000,
        );
        ch.on('close', () =>
          reject(new ParleyError('UNAVAILABLE', 'RabbitMQ: the channel closed while reading dead letters')),
        );
        ch.consume(
          this.broker.dlq,
          (m) => {
            if (m === null)
              return reject(new ParleyError('UNAVAILABLE', 'RabbitMQ: the dead-letter stream went away'));
            ch.ack(m);
            const offset = Number(m.properties.headers?.['x-stream-offset']);
            if (!Number.isFinite(offset) || offset < this.next) return;
            this.next = offset + 1;
            this.apply(offset, m);
            if (header(m, RECORD) === 'mark' && header(m, MARK) === token) {
              clearTimeout(timer);
              resolve();
            }
          },
          { noAck: false, arguments: { 'x-stream-offset': this.next } },
        ).catch(reject);
      });
    } catch (error) {
      throw amqpError(error, 'reading the dead letters');
    } finally {
      await ch.close().catch(() => undefined);
    }
  }

  private apply(offset: number, m: ConsumeMessage): void {
    const record = header(m, RECORD);
    try {
      if (record === 'letter') {
        this.index.set(
          offset,
          storedLetter(offset, m.content, (b) => this.codec.decode(b)),
        );
      } else if (record === 'gone') {
        const ids: unknown = this.codec.decode(m.content);
        if (!Array.isArray(ids)) throw new Error('not a list');
        for (const id of ids) if (typeof id === 'number') this.index.delete(id);
      }
    } catch {
      this.broker.log(`skipped an unreadable record at ${offset} of ${this.broker.dlq}`);
    }
  }

  private async matching(filter: DeadLetterFilter = {}): Promise<(DeadLetter & { key?: string })[]> {
    await this.sync();
    const ids = filter.ids === undefined ? undefined : new Set(filter.ids);
    return [...this.index.values()]
      .filter(
        (l) =>
          (ids === undefined || ids.has(l.id)) &&
          (filter.topic === undefined || l.topic === filter.topic) &&
          (filter.group === undefined || l.group === filter.group) &&
          (filter.code === undefined || l.code === filter.code),
      )
      .sort((a, b) => a.id - b.id);
  }

  async list(filter?: DeadLetterFilter, limit = 100): Promise<DeadLetter[]> {
    return (await this.matching(filter)).slice(0, limit);
  }

  async get(id: number): Promise<DeadLetter | undefined> {
    await this.sync();
    return this.index.get(id);
  }

  async replay(filter?: DeadLetterFilter): Promise<number> {
    let n = 0;
    for (const letter of (await this.matching(filter)).filter(replayable)) {
      // To its group only, as a new message; then the tombstone (a crash between replays it twice).
      await this.broker.sendToGroup(letter.topic, letter.group, letter.envelope, letter.key);
      await this.append('gone', [letter.id]);
      this.index.delete(letter.id);
      n++;
    }
    return n;
  }

  async purge(filter?: DeadLetterFilter): Promise<number> {
    const ids = (await this.matching(filter)).map((l) => l.id);
    if (ids.length === 0) return 0;
    await this.append('gone', ids);
    for (const id of ids) this.index.delete(id);
    return ids.length;
  }
}
