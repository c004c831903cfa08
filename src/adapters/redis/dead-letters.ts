/**
 * @module adapters/redis/dead-letters
 * The Redis broker's dead-letter store (`redis-broker.ts`): the `<prefix>:dlq` hash and its
 * `<prefix>:dlq:seq` counter.
 *
 * - **Dead letters**: after `maxAttempts` the letter (with the key) goes into the `dlq` hash under
 *   an id from INCR, then the entry is acked. Replay appends the envelope to the topic stream
 *   again with `to` = its group (other groups ack and skip it), as a new entry (attempts start
 *   again), and deletes the letter, in one script. One stream per topic keeps the read path
 *   single; the cost is one skipped entry per other group.
 */

import { Buffer } from 'node:buffer';
import type { DeadLetter, DeadLetterFilter, DeadLetterStore, PublishReceipt } from '../../broker/broker.ts';
import { letterMatches, replayable, type StoredLetter, storedLetter } from '../../broker/outcome.ts';
import type { Codec } from '../../codec/codec.ts';
import type { Envelope } from '../../envelope/envelope.ts';
import type { NewDeadLetter } from '../group-consumer.ts';
import type { Redis } from './connect.ts';
import { redisError } from './errors.ts';
import { DEAD_LETTER } from './scripts.ts';

/** A dead letter as stored: with its message's key, for a replay. */
export interface Letter extends NewDeadLetter {
  key?: string;
}

/** What the store needs of its broker (`RedisBroker` has it; the store does not import the broker). */
export interface DeadLetterHost {
  readonly redis: Redis;
  readonly codec: Codec;
  /** `<prefix>:<name>`. */
  key(name: string): string;
  /** Appends an envelope to its topic's stream; deletes the dead letter `deleteLetter` in the same script. */
  append(
    topic: string,
    envelope: Envelope,
    fields: (string | Buffer)[],
    dedupe: string | undefined,
    deleteLetter: string,
  ): Promise<PublishReceipt>;
}

/** Dead letters in one hash (id → JSON letter); ids from a counter. Listing reads the hash. */
export class RedisDeadLetters implements DeadLetterStore {
  constructor(private readonly broker: DeadLetterHost) {}

  async add(letter: Letter): Promise<void> {
    try {
      await DEAD_LETTER.run(
        this.broker.redis,
        [this.broker.key('dlq'), this.broker.key('dlq:seq')],
        [Buffer.from(this.broker.codec.encode(letter))],
      );
    } catch (error) {
      throw redisError(error, 'storing a dead letter');
    }
  }

  private parse(id: string, json: string): StoredLetter {
    return storedLetter(Number(id), json, (b) => this.broker.codec.decode(b));
  }

  private async all(filter: DeadLetterFilter = {}, limit = Number.POSITIVE_INFINITY): Promise<DeadLetter[]> {
    let stored: Record<string, string>;
    try {
      stored =
        filter.ids === undefined
          ? await this.broker.redis.hgetall(this.broker.key('dlq'))
          : await this.some(filter.ids);
    } catch (error) {
      throw redisError(error, 'reading dead letters');
    }
    const out: DeadLetter[] = [];
    const ids = Object.keys(stored).sort((a, b) => Number(a) - Number(b));
    for (const id of ids) {
      if (out.length >= limit) break;
      const letter = this.parse(id, stored[id] as string);
      if (!letterMatches(letter, filter)) continue;
      out.push(letter);
    }
    return out;
  }

  private async some(ids: number[]): Promise<Record<string, string>> {
    if (ids.length === 0) return {};
    const values = await this.broker.redis.hmget(this.broker.key('dlq'), ...ids.map(String));
    const out: Record<string, string> = {};
    ids.forEach((id, i) => {
      const v = values[i];
      if (typeof v === 'string') out[String(id)] = v;
    });
    return out;
  }

  list(filter?: DeadLetterFilter, limit = 100): Promise<DeadLetter[]> {
    return this.all(filter, limit);
  }

  async get(id: number): Promise<DeadLetter | undefined> {
    const [letter] = await this.all({ ids: [id] });
    return letter;
  }

  async replay(filter?: DeadLetterFilter): Promise<number> {
    let n = 0;
    for (const letter of (await this.all(filter)).filter(replayable)) {
      const key = (letter as StoredLetter).key;
      const fields = ['to', letter.group, ...(key === undefined ? [] : ['key', key])];
      // To its group only, as a new entry (attempts start again), without dedupe; the letter is
      // deleted by the same script.
      await this.broker.append(letter.topic, letter.envelope, fields, undefined, String(letter.id));
      n++;
    }
    return n;
  }

  async purge(filter?: DeadLetterFilter): Promise<number> {
    const ids = (await this.all(filter)).map((l) => String(l.id));
    if (ids.length === 0) return 0;
    try {
      return await this.broker.redis.hdel(this.broker.key('dlq'), ...ids);
    } catch (error) {
      throw redisError(error, 'purging dead letters');
    }
  }
}
