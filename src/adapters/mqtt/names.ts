/**
 * @module adapters/mqtt/names
 * What the MQTT broker's parts agree on: the topics under a prefix, the MQTT 5 user properties a
 * message carries, what a topic or group name may hold, and a QoS 1 publish that resolves on the
 * server's PUBACK with its reason code. See `mqtt-broker.ts` for what each is for.
 */
import { checkLetterRoom } from '../../broker/check.ts';
import { spentAttempts } from '../../broker/outcome.ts';
import { ParleyError } from '../../errors.ts';
import type { MqttConnection } from './connect.ts';
import { mqttError } from './errors.ts';

/** User properties (MQTT 5) of a stored message. */
export const ID = 'parley-id';
export const KEY = 'parley-key';
export const NOT_BEFORE = 'parley-not-before';
/** Deliveries the message had before this copy was published (a lease hand-over, a replay: 0). */
export const ATTEMPT = 'parley-attempt';

/** Wildcards, the level separator, NUL, and `$` first (the server's own topics). */
function unsafe(text: string): boolean {
  return text === '' || /[+#/]/.test(text) || text.includes('\u0000') || text.startsWith('$');
}

/** A prefix, topic or group must be one MQTT topic level (and a valid `$share` name). */
export function checkName(what: string, name: string): void {
  if (unsafe(name))
    throw new ParleyError(
      'INVALID_ARGUMENT',
      `MQTT: ${what} ${JSON.stringify(name)} must be non-empty, hold none of + # / and NUL, and not start with $`,
    );
}

/** Where a topic's messages are published: every group subscribes here. */
export function topicOf(prefix: string, topic: string): string {
  return `${prefix}/t/${topic}`;
}

/** One group's own topic: lease hand-overs and replays reach that group only. */
export function groupTopicOf(prefix: string, group: string, topic: string): string {
  return `${prefix}/g/${group}/${topic}`;
}

export function deadLetterTopic(prefix: string, id: number | '+'): string {
  return `${prefix}/dlq/${id}`;
}

export function shared(group: string, topic: string): string {
  return `$share/${group}/${topic}`;
}

/** One string user property (MQTT allows repeats; the first counts). */
export function prop(props: Record<string, string | string[]> | undefined, name: string): string | undefined {
  const v = props?.[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The deliveries a message had before (`parley-attempt`): see `spentAttempts`. */
export function attemptsOf(props: Record<string, string | string[]> | undefined): number {
  return spentAttempts(prop(props, ATTEMPT));
}

export interface PublishOptions {
  retain?: boolean;
  userProperties?: Record<string, string>;
  contentType?: string;
  /**
   * A new message (not a letter, a retry or a hand-over): refused unless its dead letter would fit
   * under the server's maximum too (`checkLetterRoom`).
   */
  needsLetterRoom?: boolean;
}

/** MQTT's largest packet: a Remaining Length of at most 268,435,455 bytes, after its 5-byte header. */
export const MQTT_MAX_PACKET = 268_435_455 + 5;

/** Bytes of a Variable Byte Integer holding `n`. */
function varIntBytes(n: number): number {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4;
}

/**
 * The size of a QoS 1 PUBLISH packet (MQTT 5): fixed header, topic, packet id, properties (each
 * user property, the content type and the response topic as UTF-8 strings), payload; at QoS 0,
 * no packet id.
 */
export function publishPacketSize(
  topic: string,
  payload: Uint8Array | string,
  options: PublishOptions & { responseTopic?: string; qos?: 0 | 1 },
): number {
  let properties = 0;
  if (options.responseTopic !== undefined) properties += 1 + 2 + Buffer.byteLength(options.responseTopic);
  for (const [k, v] of Object.entries(options.userProperties ?? {}))
    properties += 1 + 2 + Buffer.byteLength(k) + 2 + Buffer.byteLength(v);
  if (options.contentType !== undefined) properties += 1 + 2 + Buffer.byteLength(options.contentType);
  const rest =
    2 +
    Buffer.byteLength(topic) +
    (options.qos === 0 ? 0 : 2) +
    varIntBytes(properties) +
    properties +
    Buffer.byteLength(payload);
  return 1 + varIntBytes(rest) + rest;
}

/** A publish awaiting its PUBACK. */
interface Waiting {
  readonly deadline: number;
  readonly topic: string;
  readonly reject: (error: ParleyError) => void;
}

/**
 * QoS 1 publishes that resolve on the server's PUBACK. mqtt.js hands its caller the stored
 * PUBLISH, not the PUBACK, so the reason code (16: no subscriber) is read from the PUBACK as it
 * arrives (`packetreceive` comes before the publish's callback).
 *
 * Every publish waits the same `timeoutMs`, so deadlines come in the order publishes were sent:
 * one timer, armed for the oldest waiting publish, serves them all (a timer per publish was a few
 * percent of a publisher's CPU).
 */
export class Publisher {
  private readonly reasons = new Map<number, number>();
  /** Publishes awaiting their PUBACK, oldest first (a Set keeps insertion order). */
  private readonly waiting = new Set<Waiting>();
  private timer: NodeJS.Timeout | undefined;
  private readonly client: MqttConnection['client'];
  /** The server's Maximum Packet Size (its CONNACK, again at each reconnect), else MQTT's own. */
  private maxPacket: number;

  get largestPacket(): number {
    return this.maxPacket;
  }

  constructor(
    connection: MqttConnection,
    private readonly timeoutMs: number,
  ) {
    const client = connection.client;
    this.client = client;
    this.maxPacket = connection.connack.properties?.maximumPacketSize ?? MQTT_MAX_PACKET;
    client.on('connect', (connack) => {
      this.maxPacket = connack.properties?.maximumPacketSize ?? MQTT_MAX_PACKET;
    });
    client.on('packetreceive', (packet) => {
      if (packet.cmd === 'puback' && packet.messageId !== undefined)
        this.reasons.set(packet.messageId, packet.reasonCode ?? 0);
    });
  }

  /**
   * Resolves with the PUBACK's reason code; UNAVAILABLE (retryable: it may yet be sent) after the
   * timeout. A publish over the server's Maximum Packet Size is refused here (INVALID_ARGUMENT):
   * sent, the server would end the connection (reason 149), and mqtt.js would send it again on
   * every reconnect, taking the connection down for every other publish with it.
   */
  send(topic: string, body: Uint8Array | string, options: PublishOptions = {}): Promise<number> {
    const payload =
      typeof body === 'string' || Buffer.isBuffer(body)
        ? body
        : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    const size = publishPacketSize(topic, payload, options);
    if (options.needsLetterRoom === true) {
      try {
        checkLetterRoom(size, this.maxPacket, 'MQTT', "the server's maximum packet size");
      } catch (error) {
        return Promise.reject(error);
      }
    } else if (size > this.maxPacket) {
      return Promise.reject(
        new ParleyError(
          'INVALID_ARGUMENT',
          `MQTT: a publish to ${topic} of ${size} bytes is over the server's maximum packet size of ${this.maxPacket}`,
          { details: { size, maxPacketSize: this.maxPacket } },
        ),
      );
    }
    return new Promise<number>((resolve, reject) => {
      const entry: Waiting = { deadline: Date.now() + this.timeoutMs, topic, reject };
      this.waiting.add(entry);
      this.timer ??= setTimeout(this.expire, this.timeoutMs);
      const properties: { userProperties?: Record<string, string>; contentType?: string } = {};
      if (options.userProperties !== undefined) properties.userProperties = options.userProperties;
      if (options.contentType !== undefined) properties.contentType = options.contentType;
      this.client.publish(
        topic,
        payload,
        { qos: 1, retain: options.retain ?? false, properties },
        (error, packet) => {
          const id = packet?.messageId;
          const reason = id === undefined ? 0 : (this.reasons.get(id) ?? 0);
          if (id !== undefined) this.reasons.delete(id);
          // Gone from `waiting`: it timed out, and its caller has its answer already.
          if (!this.waiting.delete(entry)) return;
          if (this.waiting.size === 0) {
            clearTimeout(this.timer);
            this.timer = undefined;
          }
          if (error !== undefined && error !== null) {
            reject(mqttError(error, `publishing to ${topic}`));
            return;
          }
          resolve(reason);
        },
      );
    });
  }

  /**
   * Fails every publish still waiting for its PUBACK (UNAVAILABLE, retryable: the server may have
   * it), once the connection is ended: mqtt.js calls none of them back then. Until 2026-12-03 they
   * waited for their deadline (`publishTimeoutMs`) after `close()`, and its timer held the process.
   */
  close(why: string): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const waiting = [...this.waiting];
    this.waiting.clear();
    for (const entry of waiting)
      entry.reject(
        new ParleyError('UNAVAILABLE', `MQTT: ${why}: no PUBACK for ${entry.topic}`, { retryable: true }),
      );
  }

  /** Fails the publishes past their deadline, then waits for the next oldest one's. */
  private readonly expire = (): void => {
    this.timer = undefined;
    const now = Date.now();
    for (const entry of this.waiting) {
      if (entry.deadline > now) {
        this.timer = setTimeout(this.expire, entry.deadline - now);
        return;
      }
      this.waiting.delete(entry);
      entry.reject(
        new ParleyError('UNAVAILABLE', `MQTT: no PUBACK for ${entry.topic} within ${this.timeoutMs} ms`, {
          retryable: true,
        }),
      );
    }
  };
}
