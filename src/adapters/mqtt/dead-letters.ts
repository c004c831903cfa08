/**
 * @module adapters/mqtt/dead-letters
 * The MQTT broker's dead-letter store (`mqtt-broker.ts`): one retained message per letter, at
 * `<prefix>/dlq/<id>`, so letters outlive every process and a server restart (Mosquitto with
 * `persistence true` saves retained messages). The id is a random 53-bit integer: retained
 * messages cannot be created only-if-absent, so ids are drawn from a space where two letters
 * meeting is out of reach, instead of counted.
 *
 * Reading: a snapshot subscribes (QoS 0) to `<prefix>/dlq/+` and to a marker topic of its own,
 * then publishes the marker. The server queues a subscription's retained messages while it
 * handles the SUBSCRIBE and sends one client's messages in order, so once the marker is back,
 * every letter has arrived. Purge publishes an empty retained payload on a letter's topic (which
 * deletes it); replay publishes the envelope to the group's own topic, then purges the letter
 * (a crash in between replays it twice, never zero times). A replay to a group no session
 * subscribes to would be dropped by the server; the PUBACK says so (reason 16) and the letter is
 * kept, with FAILED_PRECONDITION.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { DeadLetter, DeadLetterFilter, DeadLetterStore } from '../../broker/broker.ts';
import { letterMatches, replayable, storedLetter } from '../../broker/outcome.ts';
import { createJsonCodec } from '../../codec/json.ts';
import { ParleyError } from '../../errors.ts';
import type { NewDeadLetter } from '../group-consumer.ts';
import type { MqttClient } from './connect.ts';
import { mqttError, NO_MATCHING_SUBSCRIBERS } from './errors.ts';
import { ATTEMPT, deadLetterTopic, groupTopicOf, ID, KEY, type Publisher } from './names.ts';

/** A dead letter as stored: with its message's key, for a replay. */
export interface Letter extends NewDeadLetter {
  key?: string;
}

type Stored = DeadLetter & { key?: string };

/** How long a snapshot waits for its marker. */
const SNAPSHOT_MS = 10_000;

export class MqttDeadLetters implements DeadLetterStore {
  private readonly codec = createJsonCodec();
  /** Snapshots run one at a time: each subscribes and unsubscribes the same filter. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly client: MqttClient,
    private readonly publisher: Publisher,
    private readonly prefix: string,
  ) {}

  async add(letter: Letter): Promise<void> {
    const id = Number(randomBytes(8).readBigUInt64BE() >> 11n) || 1; // 53 random bits: a safe integer
    await this.publisher.send(deadLetterTopic(this.prefix, id), this.codec.encode(letter), {
      retain: true,
      contentType: this.codec.contentType,
    });
  }

  /** Every stored letter (see the module comment), by id. */
  private snapshot(): Promise<Map<number, Stored>> {
    const run = this.tail.catch(() => undefined).then(() => this.read());
    this.tail = run;
    return run;
  }

  private async read(): Promise<Map<number, Stored>> {
    const letters = new Map<number, Stored>();
    const filter = deadLetterTopic(this.prefix, '+');
    const mark = `${this.prefix}/mark/${randomUUID()}`;
    const base = `${this.prefix}/dlq/`;
    let marked = (): void => {};
    const back = new Promise<void>((resolve) => (marked = resolve));
    const listener = (topic: string, payload: Buffer): void => {
      if (topic === mark) {
        marked();
        return;
      }
      if (!topic.startsWith(base)) return;
      const id = Number(topic.slice(base.length));
      if (!Number.isSafeInteger(id)) return;
      // An empty payload is a purge that happened while this snapshot ran.
      if (payload.length === 0) {
        letters.delete(id);
        return;
      }
      letters.set(
        id,
        storedLetter(id, payload, (b) => this.codec.decode(b)),
      );
    };
    // One deadline for the whole snapshot: the SUBSCRIBE, the marker's publish and its return.
    // Until 2026-12-03 it covered the marker's return only, and its timer was left running when a
    // step before failed: it fired later with nobody waiting (an unhandled rejection, which ends
    // a Node process), and a SUBACK that never came (a connection up but not answering) held the
    // snapshot for ever.
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new ParleyError('UNAVAILABLE', 'MQTT: reading the dead letters timed out')),
        SNAPSHOT_MS,
      );
    });
    this.client.on('message', listener);
    try {
      const steps = async () => {
        await this.client.subscribeAsync([filter, mark], { qos: 0 });
        await this.publisher.send(mark, '');
        await back;
      };
      await Promise.race([steps(), timeout]);
      return letters;
    } catch (error) {
      throw mqttError(error, 'reading the dead letters');
    } finally {
      clearTimeout(timer);
      this.client.off('message', listener);
      // Not waited for: packets leave in order, so the next snapshot's SUBSCRIBE follows it.
      this.client.unsubscribe([filter, mark], () => undefined);
    }
  }

  private async matching(filter: DeadLetterFilter = {}): Promise<Stored[]> {
    const ids = filter.ids === undefined ? undefined : new Set(filter.ids);
    return [...(await this.snapshot()).values()]
      .filter((l) => (ids === undefined || ids.has(l.id)) && letterMatches(l, filter))
      .sort((a, b) => a.lastFailureAt - b.lastFailureAt || a.id - b.id);
  }

  async list(filter?: DeadLetterFilter, limit = 100): Promise<DeadLetter[]> {
    return (await this.matching(filter)).slice(0, limit).map(({ key: _key, ...letter }) => letter);
  }

  async get(id: number): Promise<DeadLetter | undefined> {
    const letter = (await this.snapshot()).get(id);
    if (letter === undefined) return undefined;
    const { key: _key, ...rest } = letter;
    return rest;
  }

  async replay(filter?: DeadLetterFilter): Promise<number> {
    let n = 0;
    for (const letter of (await this.matching(filter)).filter(replayable)) {
      const userProperties: Record<string, string> = { [ID]: randomUUID(), [ATTEMPT]: '0' };
      if (letter.key !== undefined) userProperties[KEY] = letter.key;
      const reason = await this.publisher.send(
        groupTopicOf(this.prefix, letter.group, letter.topic),
        this.codec.encode(letter.envelope),
        { userProperties, contentType: this.codec.contentType },
      );
      if (reason === NO_MATCHING_SUBSCRIBERS)
        throw new ParleyError(
          'FAILED_PRECONDITION',
          `MQTT: no session of group ${letter.group} subscribes to ${letter.topic}: letter ${letter.id} kept (${n} replayed)`,
        );
      await this.remove(letter.id);
      n++;
    }
    return n;
  }

  async purge(filter?: DeadLetterFilter): Promise<number> {
    const letters = await this.matching(filter);
    for (const letter of letters) await this.remove(letter.id);
    return letters.length;
  }

  private async remove(id: number): Promise<void> {
    await this.publisher.send(deadLetterTopic(this.prefix, id), '', { retain: true });
  }
}
