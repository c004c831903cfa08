/**
 * @module adapters/mqtt/mqtt-consumer
 * One subscription of the MQTT broker (`mqtt-broker.ts`): a connection of its own, a persistent
 * session, the shared group consumer on top.
 *
 * - **Session**: clean start off, `sessionExpiryInterval` set, a client id made from the
 *   broker's `member` name and the (topic, group): a member that reconnects or restarts under
 *   the same name resumes its session, and the server sends again every message it had not
 *   acknowledged (DUP set) and what queued for it meanwhile. On a resumed session it also
 *   subscribes again, which mqtt.js does not (it trusts a resumed session to hold them), because
 *   Mosquitto 2.0 restores sessions after a restart without their shared subscriptions.
 * - **Subscriptions**: `$share/<group>/<prefix>/t/<topic>` (every message of the topic) and
 *   `$share/<group>/<prefix>/g/<group>/<topic>` (this group's hand-overs and replays), QoS 1.
 * - **Acks**: the PUBACK is sent once the message is settled (acked, or its dead letter stored).
 *   mqtt.js handles incoming packets one at a time and sends the PUBACK when `handleMessage`
 *   calls back, so holding that callback would stall the whole connection (later messages,
 *   SUBACKs, PINGRESPs). Instead `handleMessage` calls back with an error, which mqtt.js takes
 *   as "no PUBACK", and the PUBACK is written later through the client's internal
 *   `_sendPacket` (mqtt.js has no public way to write one: see `PacketWriter`).
 * - **Backpressure**: Receive Maximum = `maxInFlight` asks the server to send no more
 *   unacknowledged messages than that, and the consumer enforces it too: Mosquitto 2.0.11 honours
 *   it only until acks start to flow, then sends past it (seen: 32 unacknowledged with a Receive
 *   Maximum of 5). What comes past it waits here, unacknowledged, for a slot. Retries, deferrals
 *   and early delayed messages keep their slot (they are still unacknowledged).
 * - **Leases** are timed here (the server has none): a delivery not settled nor extended within
 *   its lease is published again to the group's own topic (attempts carried in `parley-attempt`)
 *   and only then acknowledged; the late handler's outcome is ignored. That frees a slot while
 *   the handler still runs, and the server shares messages round robin whatever a member's room,
 *   so a member full because of such handlers passes a message on (published again to the
 *   group's topic, uncounted) after `BOUNCE_MS` rather than sit on it.
 * - **A lost connection**: what the consumer held is the server's again (it sends it anew on the
 *   resumed session); the handlers still running finish, but their acks are dropped, so such a
 *   message is handled twice.
 */
import type { IClientSubscribeOptions, IPublishPacket, ISubscriptionMap } from 'mqtt';
import type { ConsumerHandler, ConsumerSpec } from '../../broker/broker.ts';
import { letterBodyRoom } from '../../broker/outcome.ts';
import { createJsonCodec } from '../../codec/json.ts';
import { ParleyError } from '../../errors.ts';
import { GroupConsumer, type RawMessage } from '../group-consumer.ts';
import { connectMqtt, endMqtt, type MqttClient } from './connect.ts';
import type { Letter } from './dead-letters.ts';
import { mqttError } from './errors.ts';
import {
  ATTEMPT,
  attemptsOf,
  groupTopicOf,
  ID,
  KEY,
  MQTT_MAX_PACKET,
  NOT_BEFORE,
  Publisher,
  prop,
  shared,
  topicOf,
} from './names.ts';

/** How long `close()` waits for the server to acknowledge what is in flight before it drops the socket. */
const CLOSE_MS = 2000;
/** How long a member over its `maxInFlight` holds a message before passing it on. */
const BOUNCE_MS = 100;
/** The error `handleMessage` calls back with so that mqtt.js sends no PUBACK. */
const NO_PUBACK_YET = new Error('parley: PUBACK sent once the message is settled');

/**
 * mqtt.js's internal packet writer (`MqttClient._sendPacket`, private in its types). The only
 * way to send a PUBACK after `handleMessage` returned; checked at connect, so an mqtt.js that
 * drops it fails at once rather than never acknowledging.
 */
interface PacketWriter {
  _sendPacket(packet: { cmd: 'puback'; messageId: number; reasonCode: number }): void;
}

/** What a consumer needs of its broker. */
export interface ConsumerHost {
  readonly url: string;
  readonly prefix: string;
  readonly sessionExpirySeconds: number;
  readonly publishTimeoutMs: number;
  readonly log: (message: string) => void;
  deadLetter(letter: Letter): Promise<void>;
}

type State = 'held' | 'waiting' | 'moving' | 'given' | 'done';

/**
 * One message handed to the group consumer: its state, its lease timer, and the broker operations
 * on it, which the consumer carries out (`Settling`, made once per consumer). An object per
 * delivery instead of six closures and a WeakMap entry, and an ack that returns nothing to wait
 * for: the subscriber of four groups used 8% less CPU (medians of 8 alternating runs).
 */
class Held implements RawMessage {
  state: State = 'held';
  lease: NodeJS.Timeout | undefined;
  readonly body: Uint8Array;
  readonly key: string | undefined;
  readonly notBefore: number | undefined;

  constructor(
    private readonly settling: Settling,
    readonly client: MqttClient,
    readonly packet: IPublishPacket,
    readonly generation: number,
    readonly id: string,
    readonly deliveries: number,
  ) {
    const props = packet.properties?.userProperties;
    const notBefore = Number(prop(props, NOT_BEFORE));
    this.body = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    this.key = prop(props, KEY);
    this.notBefore = Number.isFinite(notBefore) ? notBefore : undefined;
  }

  /** Done at once (the PUBACK is written now): nothing to wait for, unless it failed. */
  ack(): Promise<void> | undefined {
    try {
      this.settling.ack(this);
      return undefined;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  retry(delayMs: number): Promise<void> {
    try {
      this.settling.retry(this, delayMs);
      return DONE;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  extend(ms: number): Promise<void> {
    if (this.state === 'held') this.settling.startLease(this, ms > 0 ? ms : undefined);
    return DONE;
  }
}

/** What the consumer does for its `Held` deliveries. */
interface Settling {
  ack(h: Held): void;
  retry(h: Held, delayMs: number): void;
  /** Starts (again) the lease of `h`: `ms`, or the group's lease. */
  startLease(h: Held, ms: number | undefined): void;
}

const DONE: Promise<void> = Promise.resolve();

export class MqttConsumer {
  readonly group: GroupConsumer;
  private client: MqttClient | undefined;
  private publisher: Publisher | undefined;
  /** Bumped when a connection closes: acks of what the old one delivered are dropped. */
  private generation = 0;
  /** Messages of this connection handed to the group consumer and not acknowledged yet. */
  private active = 0;
  /** Messages the server sent past `maxInFlight`, waiting here (unacknowledged) for room. */
  private overflow: IPublishPacket[] = [];
  /**
   * Handlers still running on messages of this connection whose lease ended (acknowledged, handed
   * over). Zeroed with `active` when the connection closes: a handler of an old connection that
   * ends later frees nothing (`settle` checks the generation), so a count kept across a reconnect
   * never came down, and once it reached `maxInFlight` every message was passed on for ever.
   */
  private orphans = 0;
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Deliveries seen per message id: a resent message (DUP) goes on counting. */
  private readonly seen = new Map<string, number>();
  private readonly settling: Settling = {
    ack: (h) => {
      // Ack first, then free the slot (which may hand it to a waiting message at once).
      if (h.state === 'held') this.puback(h.client, h.packet, h.generation);
      this.settle(h);
      this.seen.delete(h.id);
    },
    retry: (h, delay) => {
      // The message keeps its slot while it waits (it is still unacknowledged).
      clearTimeout(h.lease);
      if (h.state !== 'held') {
        this.settle(h);
        return;
      }
      h.state = 'waiting';
      this.later(delay, () => {
        if (h.generation !== this.generation || this.closed || this.group.isClosed) return;
        this.deliver(h.client, h.packet, h.generation, h.id, h.deliveries + 1);
      });
    },
    startLease: (h, ms) => {
      clearTimeout(h.lease);
      // One callback for every delivery, the delivery as its argument: no closure per lease.
      h.lease = setTimeout(this.expire, ms ?? this.group.lease, h);
      h.lease.unref();
    },
  };
  private closed = false;

  constructor(
    private readonly host: ConsumerHost,
    readonly spec: ConsumerSpec,
    handler: ConsumerHandler,
    private readonly clientId: string,
  ) {
    this.group = new GroupConsumer(spec, handler, {
      codec: createJsonCodec(),
      deadLetter: async (letter, raw) => {
        // A message whose lease ended is no longer this consumer's to settle (handed over).
        if (raw instanceof Held && raw.state !== 'held') {
          host.log(`MQTT: dropped the dead letter of a message whose lease had ended (${raw.id})`);
          return;
        }
        await host.deadLetter(raw.key === undefined ? letter : { ...letter, key: raw.key });
      },
      // Letters are retained messages on the same server: its maximum packet size bounds them.
      letterBodyRoom: () => letterBodyRoom(this.publisher?.largestPacket ?? MQTT_MAX_PACKET),
      log: host.log,
    });
  }

  async open(): Promise<void> {
    const connection = await connectMqtt(this.host.url, this.host.log, {
      options: {
        clean: false,
        clientId: this.clientId,
        properties: {
          receiveMaximum: this.group.maxInFlight,
          sessionExpiryInterval: this.host.sessionExpirySeconds,
        },
      },
      onClient: (c) => {
        c.handleMessage = (packet, callback) => {
          if (packet.qos === 0) {
            callback();
            void this.adopt(packet);
            return;
          }
          this.arrive(c, packet);
          callback(NO_PUBACK_YET);
        };
        c.on('close', () => {
          // What the old connection delivered is the server's again: it sends it anew.
          this.generation++;
          this.active = 0;
          this.orphans = 0;
          this.overflow = [];
        });
        c.on('connect', (connack) => {
          // mqtt.js resubscribes only when the session is gone; a resumed one is trusted to hold
          // its subscriptions, which Mosquitto 2.0 breaks across a restart (see `subscribeAgain`).
          if (this.client !== undefined && connack.sessionPresent === true) this.subscribeAgain(c);
        });
      },
    });
    const { client } = connection;
    if (typeof (client as unknown as Partial<PacketWriter>)._sendPacket !== 'function') {
      client.end(true);
      throw new ParleyError('FAILED_PRECONDITION', 'MQTT: this mqtt.js has no _sendPacket: cannot ack late');
    }
    this.client = client;
    this.publisher = new Publisher(connection, this.host.publishTimeoutMs);
    const { topic, group } = this.spec;
    try {
      await client.subscribeAsync(this.filters(), { qos: 1 });
    } catch (error) {
      client.end(true);
      throw mqttError(error, `subscribing ${group} to ${topic}`);
    }
  }

  /** The group's two shared subscriptions: the topic, and the group's own topic. */
  private filters(): string[] {
    const { prefix } = this.host;
    const { topic, group } = this.spec;
    return [shared(group, topicOf(prefix, topic)), shared(group, groupTopicOf(prefix, group, topic))];
  }

  /**
   * Subscribes again on a resumed session. Mosquitto 2.0 saves a session's plain subscriptions
   * in its persistence file but not its shared ones (`persist__subs_save` walks only the plain
   * subscribers of each topic), so after a restart the session comes back (queued and
   * unacknowledged messages included, `sessionPresent` set) without its `$share/...`
   * subscriptions, and the group would get nothing more. Subscribing again to a subscription the
   * session still holds only replaces it (MQTT 5, 3.8.4; Mosquitto does the same for a shared
   * one), so where nothing was lost it costs one round trip.
   */
  private subscribeAgain(client: MqttClient): void {
    const { topic, group } = this.spec;
    // `resubscribe: true` makes mqtt.js send it: otherwise it skips filters it believes it holds
    // and calls back at once with nothing granted.
    const map: ISubscriptionMap = Object.assign(
      Object.fromEntries(this.filters().map((f): [string, IClientSubscribeOptions] => [f, { qos: 1 }])),
      { resubscribe: true },
    );
    client.subscribe(map, (error, granted) => {
      const refused = granted?.find((g) => g.qos === 128);
      if ((error === null || error === undefined) && refused === undefined && (granted?.length ?? 0) > 0) {
        this.host.log(`MQTT: subscribed ${group} to ${topic} again on the resumed session`);
        return;
      }
      const why = error ?? new Error(refused === undefined ? 'nothing granted' : `${refused.topic} refused`);
      this.host.log(
        `${mqttError(why, `subscribing ${group} to ${topic} again`).message} (tried again when the session next resumes)`,
      );
    });
  }

  /**
   * A message another client published at QoS 0 reaches the group at QoS 0 too: the server keeps
   * no copy and takes no acknowledgement, so a retry held here or a lease handed over would have
   * nothing to come back from. It is first published again at QoS 1 on the group's own topic,
   * where it is delivered (to this member or another) like every other message. If that copy
   * cannot be made, the message is lost, as its sender's QoS allowed: said in the log, not
   * silently. Its order against other messages of its key is not kept.
   */
  private async adopt(packet: IPublishPacket): Promise<void> {
    const attempts = attemptsOf(packet.properties?.userProperties);
    if (await this.republish(packet, attempts)) return;
    this.host.log(
      `MQTT: a message published at QoS 0 on ${packet.topic} could not be kept for group ${this.spec.group}: lost (QoS 0 is at most once)`,
    );
  }

  private arrive(client: MqttClient, packet: IPublishPacket): void {
    const generation = this.generation;
    const props = packet.properties?.userProperties;
    const id = prop(props, ID) ?? `${packet.topic}#${packet.messageId}#${Date.now()}`;
    const before = attemptsOf(props);
    const seen = packet.dup ? this.seen.get(id) : undefined;
    const deliveries = Math.max(before, seen ?? 0) + 1;
    // Closing: left unacknowledged, the message comes back when the session resumes.
    if (this.closed || this.group.isClosed) return;
    if (this.active + this.orphans < this.group.maxInFlight) {
      this.active++;
      this.deliver(client, packet, generation, id, deliveries);
    } else if (this.orphans > 0) {
      // Full because handlers overran their leases: this member looks stuck, pass it on.
      this.later(BOUNCE_MS, () => void this.handOver(client, packet, generation, before));
    } else {
      // Mosquitto 2.0.11 sends past the Receive Maximum once acks flow: wait here for room.
      this.overflow.push(packet);
    }
  }

  /** A slot freed: the oldest waiting message takes it. */
  private drain(client: MqttClient): void {
    while (!this.closed && this.active + this.orphans < this.group.maxInFlight) {
      const next = this.overflow.shift();
      if (next === undefined) return;
      this.arrive(client, next);
    }
  }

  private deliver(
    client: MqttClient,
    packet: IPublishPacket,
    generation: number,
    id: string,
    deliveries: number,
  ): void {
    this.seen.set(id, deliveries);
    if (this.seen.size > 10_000) this.seen.delete(this.seen.keys().next().value as string);
    const held = new Held(this.settling, client, packet, generation, id, deliveries);
    this.settling.startLease(held, undefined);
    this.group.deliver(held);
  }

  /** The lease ran out: the message goes to the group's own topic, then is acknowledged here. */
  private readonly expire = async (h: Held): Promise<void> => {
    if (h.state !== 'held' || h.generation !== this.generation) return;
    h.state = 'moving';
    this.host.log(`MQTT: the lease on ${h.id} ended: handed to group ${this.spec.group} again`);
    if (!(await this.republish(h.packet, h.deliveries))) {
      if (h.state === 'moving') {
        h.state = 'held';
        this.settling.startLease(h, undefined);
      }
      return;
    }
    // The handler may have settled while the copy was on its way (`state` changes across the await).
    const settled = (h.state as State) === 'done';
    h.state = settled ? 'done' : 'given';
    this.puback(h.client, h.packet, h.generation);
    // Its slot is free; a handler still running holds one as an orphan until it ends.
    if (!settled && h.generation === this.generation) this.orphans++;
    this.free(h.client, h.generation);
  };

  /** The handler is done with it; its slot frees if this consumer still owned it. */
  private settle(h: Held): void {
    clearTimeout(h.lease);
    if (h.state === 'given' && h.generation === this.generation) {
      this.orphans--;
      this.drain(h.client);
    }
    if (h.state === 'held') this.free(h.client, h.generation);
    h.state = 'done';
  }

  /** Publishes a copy to the group's own topic; true once the server has it. */
  private async republish(packet: IPublishPacket, attempt: number): Promise<boolean> {
    const publisher = this.publisher;
    if (publisher === undefined) return false;
    const props = packet.properties?.userProperties ?? {};
    const userProperties: Record<string, string> = {};
    for (const [k, v] of Object.entries(props)) userProperties[k] = Array.isArray(v) ? (v[0] ?? '') : v;
    userProperties[ATTEMPT] = String(attempt);
    const contentType = packet.properties?.contentType;
    try {
      await publisher.send(
        groupTopicOf(this.host.prefix, this.spec.group, this.spec.topic),
        packet.payload,
        contentType === undefined ? { userProperties } : { userProperties, contentType },
      );
      return true;
    } catch (error) {
      this.host.log(mqttError(error, 'handing a message over').message);
      return false;
    }
  }

  /** Over capacity: back to the group (uncounted), then acknowledged. */
  private async handOver(
    client: MqttClient,
    packet: IPublishPacket,
    generation: number,
    attempt: number,
  ): Promise<void> {
    if (generation !== this.generation || this.closed) return;
    if (await this.republish(packet, attempt)) this.puback(client, packet, generation);
    else this.host.log('MQTT: could not pass a message on; it waits for the session to resume');
  }

  /** A delivery of connection `generation` no longer holds a slot. */
  private free(client: MqttClient, generation: number): void {
    if (generation !== this.generation) return;
    this.active--;
    this.drain(client);
  }

  private puback(client: MqttClient, packet: IPublishPacket, generation: number): void {
    if (generation !== this.generation || !client.connected || packet.messageId === undefined) return;
    (client as unknown as PacketWriter)._sendPacket({
      cmd: 'puback',
      messageId: packet.messageId,
      reasonCode: 0,
    });
  }

  private later(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
  }

  /**
   * Takes nothing more and waits for running handlers; what is left unacknowledged (waiting for
   * a retry, its key or its time) stays in the session, and comes back when it resumes.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.group.close();
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    const client = this.client;
    if (client === undefined) return;
    // DISCONNECT: the session, its subscription and what it holds stay for sessionExpirySeconds.
    await endMqtt(client, CLOSE_MS, this.host.log);
    this.publisher?.close('the consumer closed');
  }

  /** Drops the connection without a DISCONNECT, as a crash would (tests). */
  crash(): void {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.client?.stream.destroy();
    this.client?.end(true);
  }
}
