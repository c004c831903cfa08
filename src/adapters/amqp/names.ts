/**
 * @module adapters/amqp/names
 * Names the RabbitMQ adapter agrees on: the `x-parley-*` headers it reads and writes, the queue
 * of a (topic, group), the delay buckets, and what a topic may be. Shared by the broker, its
 * consumers and its dead letters; see `amqp-broker.ts` for what each is for.
 */
import type { ConsumeMessage } from 'amqplib';
import { spentAttempts } from '../../broker/outcome.ts';
import { ParleyError } from '../../errors.ts';

export const KEY = 'x-parley-key';
export const NOT_BEFORE = 'x-parley-not-before';
export const ATTEMPT = 'x-parley-attempt';
/** Routing header of the delay exchange (a headers exchange ignores `x-` headers when matching). */
export const DELAY = 'parley-delay';
export const RECORD = 'x-parley-record';
export const MARK = 'x-parley-mark';

const BUCKETS = [10, 12, 15, 20, 25, 30, 40, 50, 60, 80];

/** The delay bucket a delay falls in: the smallest bucket not shorter than it. */
export function bucketOf(ms: number): number {
  let scale = 1;
  for (;;) {
    for (const b of BUCKETS) if (b * scale >= ms) return b * scale;
    scale *= 10;
  }
}

export function fnv(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

export function checkTopic(topic: string): void {
  if (Buffer.byteLength(topic) > 255)
    throw new ParleyError('INVALID_ARGUMENT', `RabbitMQ: topic over 255 bytes: ${topic.slice(0, 40)}...`);
  if (topic.split('.').some((w) => w === '*' || w === '#'))
    throw new ParleyError('INVALID_ARGUMENT', `RabbitMQ: topic ${topic} holds a * or # word (a wildcard)`);
}

export function header(m: ConsumeMessage, name: string): string | undefined {
  const v: unknown = m.properties.headers?.[name];
  if (v === undefined || v === null) return undefined;
  return Buffer.isBuffer(v) ? v.toString() : String(v);
}

/** A count in a header: a whole number from 0, anything else 0 (`spentAttempts`). */
export function count(m: ConsumeMessage, name: string): number {
  return spentAttempts(header(m, name));
}

/** The queue of a (topic, group): `<prefix>.<topic>.<group>`, hashed when that would be ambiguous. */
export function groupQueueName(prefix: string, topic: string, group: string): string {
  const plain = `${prefix}.${topic}.${group}`;
  if (!group.includes('.') && topic !== 'delay' && topic !== 'delay-topic' && Buffer.byteLength(plain) <= 255)
    return plain;
  const readable = `${topic}.${group}`.replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 120);
  return `${prefix}.q.${readable}.${fnv(`${topic}\u0000${group}`)}`;
}
