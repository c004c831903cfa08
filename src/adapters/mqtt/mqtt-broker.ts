/**
 * @module adapters/mqtt/mqtt-broker
 * The Parley broker on MQTT 5 (tested on Mosquitto 2.0): `createMqttBroker({ url: 'mqtt://127.0.0.1:1883' })`.
 * MQTT is a routing protocol, not a store: most of what Parley promises is kept by the consumer
 * process here, and what the server does not keep is said below.
 *
 * How each guarantee maps onto MQTT:
 * - **Topics**: a Parley topic is published at `<prefix>/t/<topic>`, QoS 1; the publish resolves
 *   on the server's PUBACK. A topic no session subscribes to drops the message, as on every topic
 *   broker. Topics, groups and the prefix are one topic level each: no `+ # /`, no leading `$`.
 *   The envelope is the JSON payload; the ordering key, the not-before time, the deliveries so far
 *   (absent on a first publish: 0) and a message id travel as MQTT 5 user properties (`names.ts`).
 * - **Groups**: a shared subscription `$share/<group>/<prefix>/t/<topic>` held by a persistent
 *   session per consumer (`mqtt-consumer.ts`): the server queues a member's share while it is
 *   away and sends it when the session resumes. A group exists only while some member's session
 *   does: a group that never subscribed, or whose sessions all expired, misses what is published
 *   meanwhile, and `startFrom: 'beginning'` cannot be honoured (MQTT keeps no history).
 * - **Delivery**: at least once per group. The PUBACK goes only after the handler settled, so a
 *   crashed member's unacknowledged messages are sent again when its session resumes (same
 *   `member` name). Leases are timed in the consumer, which hands an expired delivery to its
 *   group's own topic, `<prefix>/g/<group>/<topic>`.
 * - **Retry**: MQTT has no negative ack and no delay. A failed message stays unacknowledged in
 *   the consumer that holds it and runs again there after Parley's backoff; attempts are counted
 *   in that process (and carried in `parley-attempt` when a lease hands it over).
 * - **Per-key order**: within one consumer (the shared group consumer); members of a group share
 *   messages round robin, so a key's messages can reach different members.
 * - **Delayed publish**: published at once with `parley-not-before`; the consumer that gets it
 *   holds it until then (there is no server-side delay), using one of its `maxInFlight` slots.
 * - **Backpressure**: Receive Maximum = `maxInFlight` per consumer connection, and enforced by
 *   the consumer as well (Mosquitto 2.0.11 sends past it once acks flow; see `mqtt-consumer.ts`).
 * - **Dead letters**: retained messages, one per letter (`dead-letters.ts`).
 * - **Dedupe**: MQTT has none. The idempotency key is remembered for `dedupeWindowMs` (default
 *   2 min, at most `dedupeMaxKeys`) in this publisher process only; a publish without one is
 *   stored as it is (`dedupe.ts`).
 *
 * What MQTT does not guarantee (Mosquitto 2.0.11, as tested in `test/mqtt-broker.test.ts`):
 * - Shared subscriptions are served round robin whatever a member's state: a member that is
 *   slow, full, or away (its session kept) still gets its share, queued for it. A member that
 *   never comes back under its `member` name loses its queued and unacknowledged messages when
 *   its session expires (`sessionExpirySeconds`, default 1 h): the server does not give them to
 *   the rest of the group. Give each process a stable, unique `member` name (the default is
 *   random: fine for tests, lossy for services that restart).
 * - Mosquitto drops messages beyond `max_queued_messages` (default 1000) per session: raise it
 *   (or set 0, no limit) for groups whose members may be away or slow.
 * - Retries, deferrals and early delayed messages wait in the consumer's memory: if the process
 *   dies, they come back only when its session resumes, and their attempt count starts again.
 * - After a lost connection the server sends again what the consumer held; a handler still
 *   running then runs twice for that message.
 * - Dedupe is per publisher process; two processes publishing the same key both store it.
 * - Delivery from the server is only as durable as its persistence (`persistence true` with the
 *   autosave interval: a server crash loses what arrived since the last save).
 * - A server restart leaves a window in which a group misses messages. With `persistence true`
 *   Mosquitto 2.0 saves each session (queued and unacknowledged messages included: those come
 *   back) but not its shared subscriptions (`persist__subs_save` writes the plain subscribers of
 *   each topic only). So after a restart no `$share/<group>/...` subscription exists until a
 *   member's consumer reconnects and subscribes again (it does, on every resumed session:
 *   `mqtt-consumer.ts`), and the server drops what is published to the topic meanwhile; the
 *   publish still succeeds (PUBACK reason 16, no subscribers, or 0 if another group is back).
 *   No client can close it: the publisher cannot tell a group not back yet from no group, and
 *   the server keeps no record of the group to queue for. The window is the consumers' reconnect
 *   (mqtt.js retries every 250 ms) plus one SUBSCRIBE round trip; `test/broker-restart.test.ts`
 *   measures it (a few messages at full publishing speed) and asserts nothing is lost outside it.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type {
  Broker,
  BrokerPublishOptions,
  Consumer,
  ConsumerHandler,
  ConsumerSpec,
  DeadLetterStore,
  PublishReceipt,
} from '../../broker/broker.ts';
import { checkPublish, checkSpec } from '../../broker/check.ts';
import type { Codec } from '../../codec/codec.ts';
import { createJsonCodec } from '../../codec/json.ts';
import type { Envelope } from '../../envelope/envelope.ts';
import { ParleyError } from '../../errors.ts';
import { DedupeWindow } from '../dedupe.ts';
import { connectMqtt, endMqtt, type MqttClient, type MqttConnection } from './connect.ts';
import { type Letter, MqttDeadLetters } from './dead-letters.ts';
import { MqttConsumer } from './mqtt-consumer.ts';
import { checkName, ID, KEY, NOT_BEFORE, Publisher, topicOf } from './names.ts';

/** How long `close()` waits for the server to acknowledge what is in flight before it drops the socket. */
const CLOSE_MS = 2000;

export interface MqttBrokerOptions {
  /** `mqtt://[user:pass@]host:port` (MQTT 5). */
  url: string;
  /** First level of every topic: brokers with different prefixes share nothing. Default `parley`. */
  prefix?: string;
  /** This process's name in its groups: sessions resume under it. Default random (see the module comment). */
  member?: string;
  /** How long the server keeps a consumer's session while it is away, s. Default 3600. */
  sessionExpirySeconds?: number;
  /** Publisher dedupe window, ms, per publisher process. Default 120 000. */
  dedupeWindowMs?: number;
  /** Most keys the dedupe window remembers. Default 100 000. */
  dedupeMaxKeys?: number;
  /** How long a publish waits for its PUBACK (a lost connection included). Default 10 000. */
  publishTimeoutMs?: number;
  log?: (message: string) => void;
}

export class MqttBroker implements Broker {
  readonly deadLetters: DeadLetterStore;
  readonly prefix: string;
  readonly member: string;
  readonly sessionExpirySeconds: number;
  readonly publishTimeoutMs: number;
  readonly log: (message: string) => void;
  private readonly letters: MqttDeadLetters;
  private readonly publisher: Publisher;
  private readonly codec: Codec = createJsonCodec();
  private readonly dedupe: DedupeWindow;
  private readonly consumers = new Set<MqttConsumer>();
  /** Session slots in use per (topic, group), and every client id ever used (for `destroyAll`). */
  private readonly slots = new Map<string, Set<number>>();
  private readonly clientIds = new Set<string>();
  private closed = false;

  private readonly client: MqttClient;

  private constructor(
    connection: MqttConnection,
    private readonly options: MqttBrokerOptions,
    prefix: string,
    log: (message: string) => void,
  ) {
    this.client = connection.client;
    this.prefix = prefix;
    this.log = log;
    this.member = options.member ?? randomBytes(4).toString('hex');
    this.sessionExpirySeconds = options.sessionExpirySeconds ?? 3600;
    this.publishTimeoutMs = options.publishTimeoutMs ?? 10_000;
    this.publisher = new Publisher(connection, this.publishTimeoutMs);
    this.dedupe = new DedupeWindow(options.dedupeWindowMs ?? 120_000, options.dedupeMaxKeys ?? 100_000);
    this.letters = new MqttDeadLetters(connection.client, this.publisher, prefix);
    this.deadLetters = this.letters;
  }

  get url(): string {
    return this.options.url;
  }

  static async connect(options: MqttBrokerOptions): Promise<MqttBroker> {
    const prefix = options.prefix ?? 'parley';
    checkName('prefix', prefix);
    if (options.member !== undefined) checkName('member', options.member);
    const log = options.log ?? ((m: string) => process.stderr.write(`parley mqtt broker: ${m}\n`));
    return new MqttBroker(await connectMqtt(options.url, log), options, prefix, log);
  }

  async publish(envelope: Envelope, options: BrokerPublishOptions = {}): Promise<PublishReceipt> {
    if (this.closed) throw new ParleyError('UNAVAILABLE', 'the broker is closed');
    checkPublish(envelope, options);
    checkName('topic', envelope.type);
    return this.dedupe.publish(envelope.idempotencykey, envelope.id, Date.now(), () =>
      this.store(envelope, options),
    );
  }

  private async store(envelope: Envelope, options: BrokerPublishOptions): Promise<void> {
    // No `parley-attempt` on a first publish: absent reads as 0 (one property less to write).
    const userProperties: Record<string, string> = { [ID]: randomUUID() };
    if (options.key !== undefined) userProperties[KEY] = options.key;
    if ((options.delay ?? 0) > 0) userProperties[NOT_BEFORE] = String(Date.now() + (options.delay ?? 0));
    // Its dead letter (a retained message holding it) must fit the server's maximum too.
    await this.publisher.send(topicOf(this.prefix, envelope.type), this.codec.encode(envelope), {
      userProperties,
      contentType: this.codec.contentType,
      needsLetterRoom: true,
    });
  }

  /** @internal Stores a consumer's dead letter. */
  deadLetter(letter: Letter): Promise<void> {
    return this.letters.add(letter);
  }

  async subscribe(spec: ConsumerSpec, handler: ConsumerHandler): Promise<Consumer & { crash(): void }> {
    if (this.closed) throw new ParleyError('UNAVAILABLE', 'the broker is closed');
    checkSpec(spec);
    checkName('topic', spec.topic);
    checkName('group', spec.group);
    // A session per (member, topic, group, slot): the lowest free slot, so a restart resumes it.
    const which = `${spec.topic}\u0000${spec.group}`;
    const used = this.slots.get(which) ?? new Set<number>();
    this.slots.set(which, used);
    let slot = 0;
    while (used.has(slot)) slot++;
    used.add(slot);
    const hash = createHash('sha256').update(which).digest('hex').slice(0, 12);
    const clientId = `${this.prefix}-${this.member}-${hash}-${slot}`;
    this.clientIds.add(clientId);
    const consumer = new MqttConsumer(this, spec, handler, clientId);
    try {
      await consumer.open();
    } catch (error) {
      used.delete(slot);
      throw error;
    }
    this.consumers.add(consumer);
    const release = () => {
      this.consumers.delete(consumer);
      used.delete(slot);
    };
    return {
      close: async () => {
        await consumer.close();
        release();
      },
      crash: () => {
        consumer.crash();
        release();
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.consumers].map((c) => c.close()));
    await endMqtt(this.client, CLOSE_MS, this.log);
    this.publisher.close('the broker closed');
  }

  /**
   * Ends every session this instance's consumers used and deletes the prefix's dead letters
   * (tests, and tearing down an environment). Works after `close()`, on connections of its own.
   */
  async destroyAll(): Promise<void> {
    await this.destroySessions();
    const connection = await connectMqtt(this.options.url, () => undefined, {
      options: { reconnectPeriod: 0 },
    });
    const { client } = connection;
    try {
      await new MqttDeadLetters(client, new Publisher(connection, 10_000), this.prefix).purge();
    } finally {
      await client.endAsync(true);
    }
  }

  /** Ends the sessions of this instance's closed consumers: their groups stop receiving. */
  async destroySessions(): Promise<void> {
    for (const clientId of this.clientIds) {
      // A clean start discards the stored session; expiry 0 keeps none after this connection.
      const { client } = await connectMqtt(this.options.url, () => undefined, {
        options: { clientId, clean: true, reconnectPeriod: 0, properties: { sessionExpiryInterval: 0 } },
      });
      await client.endAsync(true);
    }
  }
}

export function createMqttBroker(options: MqttBrokerOptions): Promise<MqttBroker> {
  return MqttBroker.connect(options);
}
