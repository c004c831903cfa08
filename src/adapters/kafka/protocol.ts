/**
 * @module adapters/kafka/protocol
 * What the Kafka broker writes into Kafka: topic names, record headers, and the dead-letter
 * records. Kept apart so that the consumer, the dead-letter store and the publisher agree.
 */
import { createHash } from 'node:crypto';
import type { DeadLetter } from '../../broker/broker.ts';
import { undecodableLetter } from '../../broker/outcome.ts';
import { createJsonCodec } from '../../codec/json.ts';
import { assertEnvelope, type Envelope } from '../../envelope/envelope.ts';
import { ParleyError } from '../../errors.ts';
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

/** Bytes librdkafka counts for a record besides its key and value (at most 36, for a record without headers). */
const RECORD_OVERHEAD = 64;

/**
 * A dead letter as a record of at most `maxBytes` can hold it: whole when it fits; else without
 * its key; else with the first `room` bytes of its envelope's text only (an undecodable letter,
 * not replayed), the message saying what was left out. Another writer's record is not checked
 * like a Parley publish (`checkLetterRoom`): its key alone may take most of a record. Until
 * 2026-12-03 such a letter was refused by the producer, written again every 5 s, and held its
 * key and its partition's commit for ever.
 */
export function fittingLetter(record: DeadRecord, maxBytes: number, room: number): DeadRecord {
  const fits = (r: DeadRecord) => Buffer.byteLength(JSON.stringify(r)) + RECORD_OVERHEAD <= maxBytes;
  if (fits(record)) return record;
  if (record.key !== null) {
    const keyless: DeadRecord = {
      ...record,
      key: null,
      message: `the letter keeps no key (its ${Buffer.byteLength(record.key)} bytes would be over the broker's largest message); ${record.message}`,
    };
    if (fits(keyless)) return keyless;
  }
  const { envelope, error } = undecodableLetter(
    record.envelope.id,
    record.topic,
    Buffer.from(JSON.stringify(record.envelope)),
    new ParleyError(record.code, record.message),
    room,
  );
  return { ...record, key: null, envelope, message: error.message };
}

/** Written after a replay or purge: these dead letters are gone. */
export interface RemovedRecord {
  kind: 'removed';
  ids: number[];
}

export type DeadLetterRecord = DeadRecord | RemovedRecord;
