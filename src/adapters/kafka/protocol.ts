/**
 * @module adapters/kafka/protocol
 * What the Kafka broker writes into Kafka: topic names, record headers, and the dead-letter
 * records. Kept apart so that the consumer, the dead-letter store and the publisher agree.
 */
import { createHash } from 'node:crypto';
import type { DeadLetter } from '../../broker/broker.ts';
import { createJsonCodec } from '../../codec/json.ts';
import { assertEnvelope, type Envelope } from '../../envelope/envelope.ts';
import type { Headers } from './driver.ts';

/** Record headers (Kafka headers are bytes; ours are ASCII). */
export const HEADER = {
  /** Not handed to a handler before this epoch ms (delayed publish). */
  notBefore: 'parley-not-before',
  /** Only this consumer group handles the record; other groups skip it (replay, lease handover). */
  group: 'parley-group',
  /** Attempts already spent on the envelope (a lease handed over to another member). */
  attempts: 'parley-attempts',
  /** The Parley ordering key, when a record was written to a partition chosen by us. */
  key: 'parley-key',
} as const;

export function headers(values: Partial<Record<keyof typeof HEADER, string | number | undefined>>): Headers {
  const out: Headers = [];
  for (const [name, value] of Object.entries(values))
    if (value !== undefined) out.push({ [HEADER[name as keyof typeof HEADER]]: String(value) });
  return out;
}

const json = createJsonCodec();

/**
 * A record's value as an envelope, decoded by Parley's JSON codec like every other broker's
 * messages (UTF-8 checked; `__proto__` and `constructor.prototype` keys refused); throws
 * INVALID_ARGUMENT saying why when it is not one.
 */
export function envelopeOfRecord(value: Buffer | null | undefined): Envelope {
  return assertEnvelope(json.decode(value ?? Buffer.alloc(0)));
}

/**
 * One Kafka topic per Parley topic, under the broker's namespace. Kafka allows `[a-zA-Z0-9._-]`
 * and 249 characters: anything else is escaped as `_xx` (hex, `_` itself included) so distinct
 * Parley topics never share a Kafka topic; names that grow too long end in a hash.
 */
export function kafkaTopicName(namespace: string, topic: string): string {
  const escaped = [...Buffer.from(topic, 'utf8')]
    .map((b) => {
      const c = String.fromCharCode(b);
      return /[a-zA-Z0-9.-]/.test(c) ? c : `_${b.toString(16).padStart(2, '0')}`;
    })
    .join('');
  const name = `${namespace}.${escaped}`;
  if (name.length <= 200) return name;
  const hash = createHash('sha256').update(topic).digest('hex').slice(0, 16);
  return `${name.slice(0, 180)}_${hash}`;
}

export function deadLetterTopicName(namespace: string): string {
  return `${namespace}._dead-letters`;
}

/** A dead letter as written to the dead-letter topic (its id is the record's offset + 1). */
export type DeadRecord = Omit<DeadLetter, 'id'> & { kind: 'dead'; key: string | null };

/** Written after a replay or purge: these dead letters are gone. */
export interface RemovedRecord {
  kind: 'removed';
  ids: number[];
}

export type DeadLetterRecord = DeadRecord | RemovedRecord;
