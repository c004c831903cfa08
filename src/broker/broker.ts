/**
 * @module broker
 * The seam for durable messaging, for adapter authors. This is the part the runtime needs today:
 * publish an envelope, and subscribe a consumer group to an event type with a handler whose
 * success acks and whose rejection nacks. The embedded broker and the semantics every adapter must
 * match (retries, dead-letter, ordering per key, replay) build on it.
 */
import type { Envelope } from '../envelope/envelope.ts';

export interface BrokerPublishOptions {
  /** Ordering key: same key, same group → handled one after another. */
  key?: string;
  /** Not delivered before this many ms have passed. */
  delay?: number;
}

export interface ConsumerSpec {
  /** Event type, e.g. `order.placed`. */
  type: string;
  /** Consumer group: one copy per group, consumers within it compete. */
  group: string;
  /** Deliveries before dead-letter. */
  maxAttempts?: number;
}

/** Resolve to ack; reject (with a ParleyError, ideally) to nack. */
export type ConsumerHandler = (envelope: Envelope) => Promise<void>;

export interface Consumer {
  /** Stops taking new messages; resolves when in-flight handlers have settled. */
  close(): Promise<void>;
}

export interface Broker {
  publish(envelope: Envelope, options?: BrokerPublishOptions): Promise<void>;
  subscribe(spec: ConsumerSpec, handler: ConsumerHandler): Promise<Consumer>;
  close(): Promise<void>;
}
