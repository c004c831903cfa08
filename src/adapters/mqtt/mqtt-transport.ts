/**
 * @module adapters/mqtt/mqtt-transport
 * The Parley transport over MQTT 5: `createMqttTransport({ url: 'mqtt://127.0.0.1:1883' })`.
 * Requests go straight to the callee's inbox topic and the reply to the caller's (one hop through
 * the broker each way); discovery, heartbeats, cancels and notifications are those of every bus
 * transport (`adapters/bus-transport.ts`).
 *
 * Topics: a bus subject maps to a topic by turning `.` into `/`, so `<prefix>.node.<id>` is
 * `<prefix>/node/<id>`, and `<prefix>/presence`, `<prefix>/broadcast`. Node ids are already kept
 * to `[A-Za-z0-9_-]` by the bus transport; the prefix may not hold the MQTT wildcards `+` and `#`,
 * `/` (use `.` for levels), or start with `$` (reserved to the broker: `$SYS`, `$share`).
 *
 * Calls travel at QoS 0: requests, cancels and replies, at most once per hop, as on NATS and Redis
 * (the caller's deadline and retries cover a loss, and a request never runs twice because a hop
 * was repeated). At QoS 1 every request and reply was followed on the broker's socket by a PUBACK,
 * and the next small packet behind it waited for a delayed ACK (Mosquitto leaves Nagle's algorithm
 * on unless `set_tcp_nodelay true`): 44 ms a call one at a time, 1.4 k calls/s with 64 in flight,
 * against 0.5 ms and 59 k at QoS 0 on the same server. Presence and notifications stay QoS 1.
 * Every subscription is QoS 1 (a message arrives at the QoS it was published with); it is live
 * once the broker's SUBACK is in.
 * Subscriptions use the MQTT 5 options No Local (a node never gets its own presence or broadcast
 * back) and Retain Handling 2 (retained messages are never delivered; none are published).
 * Payloads are the bus frames, as binary. Sessions are clean and mqtt.js resubscribes on its own
 * after a reconnect (see `connect.ts`). `destroy()` drops the socket without a DISCONNECT, as a
 * crash would; no Last Will is set, so peers learn of a crash by the missing heartbeat.
 *
 * Groups: every subscription here is a plain one. The transport addresses one node's inbox (the
 * runtime picks the node), and presence and notifications go to every node, so MQTT 5 shared
 * subscriptions (`$share/<group>/...`) have no use at this level.
 *
 * MQTT 5 request/response: requests (and cancels) are published with the `Response Topic`
 * property set to this connection's reply topic, `<prefix>/reply/<client id>`, subscribed before
 * the first request; the callee publishes its replies to the Response Topic the request arrived
 * with, not to a topic of its own making. `Correlation Data` is not set: several requests may
 * travel in one message (the bus transport's batches), each frame carrying its own id, which is
 * what correlates a reply.

 * Payload size: Mosquitto's `max_packet_size` is unset by default (no limit short of MQTT's
 * 256 MiB). A broker that announces a smaller Maximum Packet Size in its CONNACK gets frames that
 * fit it: the transport lowers its `maxPayload` (default 1 MiB − 1 KiB) and its batches to that
 * size less room for the topics and headers (at least 1 KiB), with a log line, so a call or
 * notification over it fails at once with RESOURCE_EXHAUSTED. A later CONNACK (a reconnect) is
 * followed, down or back up. A message already batched or queued over the limit when it fell is
 * dropped with a log line instead of being sent (the broker would end the connection, and
 * mqtt.js would send a QoS 1 packet again on every reconnect).
 *
 * What MQTT does not guarantee here:
 * - A request, cancel or reply lost with a connection (QoS 0) is not sent again: the call fails
 *   at its deadline, or with UNAVAILABLE once the callee misses its heartbeats, and a retry policy
 *   may send it again (safe for idempotent actions). Notifications are QoS 1, at least once per
 *   hop: after a reconnect one may arrive twice.
 * - Order holds only per topic from one publisher: a notification and a reply, or a hello and a
 *   request, may arrive in either order; a redelivery after a reconnect may come out of order.
 * - Sessions are clean: the broker keeps nothing for a node that is away. A request sent to a node
 *   whose connection is down is lost; the call fails at its deadline, or with UNAVAILABLE once the
 *   node misses its heartbeats. Publishes made while this node's own connection is down are
 *   buffered in memory and sent on reconnect, or lost if the process stops first.
 * - Retained messages and Last Will are not used: a node joining learns who is there by asking
 *   (who-is-there on the presence topic), and a crash is noticed only after `heartbeatTimeoutMs`.
 * - The broker may drop messages for a node that cannot keep up (Mosquitto's
 *   `max_queued_messages`, default 1000 per client); anyone allowed on the topics may publish on
 *   them (frames are not signed): protect the prefix with the broker's ACLs.
 */
import { ParleyError } from '../../errors.ts';
import { type Bus, BusTransport, type BusTransportOptions } from '../bus-transport.ts';
import { connectMqtt, endMqtt, type MqttClient } from './connect.ts';
import { mqttError } from './errors.ts';
import { MQTT_MAX_PACKET, publishPacketSize } from './names.ts';

export interface MqttTransportOptions extends BusTransportOptions {
  url: string;
}

/** How long `close()` waits for the broker to acknowledge what is in flight before it drops the socket. */
const CLOSE_MS = 2000;
/** Least room left in a packet for the topics and the MQTT headers around a message. */
const HEADROOM = 1024;

/**
 * The most a publish packet adds around its payload for topics of these lengths (UTF-16 units):
 * 16 bytes of headers, lengths, packet id and property id at most, and 3 bytes per unit at most.
 */
/** A topic name a client may publish to: not empty, no wildcard, no NUL (MQTT 5, 4.7.3). */
const publishable = (topic: string) =>
  topic.length > 0 && !topic.includes('+') && !topic.includes('#') && !topic.includes('\u0000');

const aroundPayload = (topicLength: number, responseTopicLength: number) =>
  16 + 3 * (topicLength + responseTopicLength);

/** Wildcards, the level separator (subjects use `.`), NUL, and `$` (the broker's) first. */
function unsafe(text: string): boolean {
  return /[+#/]/.test(text) || text.includes('\u0000') || text.startsWith('$');
}

function checkPrefix(prefix: string): void {
  if (prefix === '' || unsafe(prefix)) {
    throw new ParleyError(
      'INVALID_ARGUMENT',
      `MQTT: prefix ${JSON.stringify(prefix)} is not usable in a topic: it must be non-empty, hold none of + # / and NUL, and not start with $`,
    );
  }
}

/** A bus subject as an MQTT topic: `.` separates levels. */
function topicOf(subject: string): string {
  if (unsafe(subject)) {
    throw new ParleyError('INVALID_ARGUMENT', `MQTT: subject ${JSON.stringify(subject)} is not a safe topic`);
  }
  return subject.replaceAll('.', '/');
}

function asBuffer(message: Uint8Array): Buffer {
  return Buffer.isBuffer(message)
    ? message
    : Buffer.from(message.buffer, message.byteOffset, message.byteLength);
}

export function createMqttTransport(options: MqttTransportOptions): BusTransport {
  checkPrefix(options.prefix ?? 'parley');
  const log = options.log ?? ((m: string) => process.stderr.write(`parley: ${m}\n`));
  return new BusTransport(async () => {
    const { client, connack } = await connectMqtt(options.url, log);
    const prefix = topicOf(options.prefix ?? 'parley');
    const replyTopic = `${prefix}/reply/${client.options.clientId}`;
    // The longest topic sent to is a peer's inbox (node ids are at most 255 bytes), with this
    // connection's Response Topic.
    const room = Math.max(HEADROOM, aroundPayload(prefix.length + '/node/'.length + 255, replyTopic.length));
    return mqttBus(client, replyTopic, connack.properties?.maximumPacketSize ?? MQTT_MAX_PACKET, room, log);
  }, options);
}

type OnMessage = (message: Uint8Array, replyTo?: string) => void;

function mqttBus(
  client: MqttClient,
  replyTopic: string,
  maxPacketSize: number,
  /** Room for the topics and headers: the largest message is the largest packet less this. */
  room: number,
  log: (message: string) => void,
): Bus {
  const handlers = new Map<string, Set<OnMessage>>();
  let ended = false;
  // The server's limit, again at each reconnect (its CONNACK may say another).
  let maxPacket = maxPacketSize;
  client.on('connect', (connack) => {
    maxPacket = connack.properties?.maximumPacketSize ?? MQTT_MAX_PACKET;
  });

  client.on('message', (topic, payload, packet) => {
    const set = handlers.get(topic);
    if (set === undefined) return;
    const replyTo = packet.properties?.responseTopic;
    for (const onMessage of set) {
      try {
        onMessage(payload, replyTo);
      } catch (error) {
        log(`MQTT: a message on ${topic} failed: ${ParleyError.from(error).message}`);
      }
    }
  });

  function send(topic: string, message: Uint8Array, qos: 0 | 1, responseTopic?: string): void {
    const payload = asBuffer(message);
    // Counted exactly only near the limit: below this bound no packet can be over it.
    if (payload.byteLength + aroundPayload(topic.length, responseTopic?.length ?? 0) > maxPacket) {
      const size = publishPacketSize(
        topic,
        payload,
        responseTopic === undefined ? { qos } : { qos, responseTopic },
      );
      if (size > maxPacket) {
        // Sent, the server would end the connection (reason 149), and mqtt.js would send a QoS 1
        // packet again on every reconnect: nothing else would get through. Its frames are lost
        // as on a lost connection: calls fail at their deadlines, notifications are at most once.
        log(
          `MQTT: dropped a message of ${size} bytes on ${topic}: over the server's maximum packet size of ${maxPacket} (lower maxPayload)`,
        );
        return;
      }
    }
    const options = responseTopic === undefined ? { qos } : { qos, properties: { responseTopic } };
    client.publish(topic, payload, options, (error) => {
      if (error !== undefined && error !== null && !ended)
        log(mqttError(error, `publishing on ${topic}`).message);
    });
  }

  async function listen(topic: string, onMessage: OnMessage): Promise<() => void> {
    let set = handlers.get(topic);
    if (set === undefined) {
      set = new Set();
      handlers.set(topic, set);
    }
    set.add(onMessage);
    try {
      // Resolves on the SUBACK (or at once when this client already holds the subscription).
      const granted = await client.subscribeAsync(topic, { qos: 1, nl: true, rh: 2 });
      const qos = granted[0]?.qos;
      if (qos !== undefined && qos < 1) log(`MQTT: ${topic} granted at QoS ${qos}: messages may be lost`);
    } catch (error) {
      set.delete(onMessage);
      if (set.size === 0) handlers.delete(topic);
      throw mqttError(error, `subscribing to ${topic}`);
    }
    const mine = set;
    return () => {
      if (!mine.delete(onMessage) || mine.size > 0) return;
      handlers.delete(topic);
      if (ended) return;
      client.unsubscribe(topic, (error) => {
        if (error !== undefined && error !== null && !ended)
          log(mqttError(error, `unsubscribing from ${topic}`).message);
      });
    };
  }

  return {
    get maxMessage() {
      return Math.max(0, maxPacket - room);
    },

    publish: (subject, message) => send(topicOf(subject), message, 1),

    replies: {
      request: (subject, message) => send(topicOf(subject), message, 0, replyTopic),
      // The address is whatever Response Topic the request carried. One that no client may publish
      // to is dropped here: Mosquitto answers a publish to a wildcard with DISCONNECT (reason 130)
      // and one with a NUL with reason 129, so a single such request from anyone on the server
      // cut this node off (its calls failing while it reconnected). A Parley caller never sends one.
      reply: (address, message) => {
        if (!publishable(address)) {
          log(
            `MQTT: dropped a reply to ${JSON.stringify(address.slice(0, 200))}: not a topic a client may publish to`,
          );
          return;
        }
        send(address, message, 0);
      },
      listen: (onReply) => listen(replyTopic, onReply),
    },

    subscribe: (subject, onMessage) => listen(topicOf(subject), onMessage),

    async close() {
      if (ended) return;
      ended = true;
      // Waits for the broker's acks of what is in flight (the bye among them), then DISCONNECT.
      await endMqtt(client, CLOSE_MS, log);
    },

    destroy() {
      if (ended) return;
      ended = true;
      client.end(true); // no DISCONNECT: the broker and the peers see a vanished client
    },
  };
}
