/**
 * @module adapters/amqp/amqp-transport
 * The Parley transport over RabbitMQ: `createAmqpTransport({ url: 'amqp://guest:guest@127.0.0.1:5672' })`.
 * Discovery, heartbeats, cancels and notifications are those of every bus transport
 * (`adapters/bus-transport.ts`); this module is the bus.
 *
 * The bus: the subjects every node hears, `<prefix>.presence` and `<prefix>.broadcast`
 * (notifications), are durable fanout exchanges of those names (RabbitMQ copies each message to
 * every bound queue without looking at a key); node inboxes go through one durable topic exchange
 * `<prefix>.bus`, the subject (`<prefix>.node.<id>`) as routing key. Each subscription is a
 * server-named, exclusive, auto-delete queue bound with the subject, consumed without acks (the
 * bus is fire and forget: a node that is gone takes its queues with it). One channel per node
 * carries every publish and consumer, so order per subject from one publisher holds. A node gets
 * its own presence and broadcast messages back (AMQP has no "no local"); the bus transport drops
 * them by sender id.
 *
 * Requests go through the exchange to the callee's inbox queue; replies come back by direct
 * reply-to: the bus channel consumes the pseudo-queue `amq.rabbitmq.reply-to` (no acks, before
 * the first request), requests are published on that channel with `replyTo` set to it, and the
 * callee publishes each reply to the default exchange with the `replyTo` its request arrived
 * with, which RabbitMQ hands straight to the requester's channel: no reply queue, and no routing
 * through the bus exchange. Cancels travel with the requests. A reply whose requester is gone
 * (its channel closed) is dropped by RabbitMQ; the caller's deadline covers it.

 * Reconnects (`connect.ts`): the connection is dialled again with backoff; the channel, the
 * exchange and every subscription's queue are declared again (new queue names: the old ones went
 * with the old connection). While the connection is down, publishes fail and are logged by the
 * bus transport: a call in flight fails at its deadline, or with UNAVAILABLE once its callee
 * misses heartbeats; nothing is buffered. `destroy()` drops the socket, as a crash would: the
 * server deletes the node's queues and peers notice the missing heartbeat.
 *
 * Limits: frames are bounded by the transport's `maxPayload` (default 1 MiB − 1 KiB), far below
 * RabbitMQ's `max_message_size` (128 MiB by default). Anyone allowed on the vhost may publish on
 * the exchange (frames are not signed): protect the prefix with RabbitMQ permissions.
 */
import { ParleyError } from '../../errors.ts';
import { type Bus, BusTransport, type BusTransportOptions } from '../bus-transport.ts';
import { type AmqpChannel, AmqpLink, type ChannelModel } from './connect.ts';
import { amqpError } from './errors.ts';

export interface AmqpTransportOptions extends BusTransportOptions {
  /** `amqp://user:pass@host:port/vhost`. */
  url: string;
}

function checkPrefix(prefix: string): void {
  if (!/^[A-Za-z0-9_-]+$/.test(prefix)) {
    throw new ParleyError(
      'INVALID_ARGUMENT',
      `RabbitMQ: prefix ${JSON.stringify(prefix)} must be letters, digits, _ and - (it starts routing keys and names)`,
    );
  }
}

export function createAmqpTransport(options: AmqpTransportOptions): BusTransport {
  const prefix = options.prefix ?? 'parley';
  checkPrefix(prefix);
  const log = options.log ?? ((m: string) => process.stderr.write(`parley: ${m}\n`));
  return new BusTransport(async () => {
    const link = await AmqpLink.open({ url: options.url, name: `parley-transport ${prefix}`, log });
    try {
      return await amqpBus(
        link,
        { topic: `${prefix}.bus`, fanout: [`${prefix}.presence`, `${prefix}.broadcast`] },
        log,
      );
    } catch (error) {
      await link.close();
      throw error;
    }
  }, options);
}

/** RabbitMQ's pseudo-queue for direct reply-to. */
const REPLY_TO = 'amq.rabbitmq.reply-to';

interface Subscription {
  subject: string;
  onMessage: (message: Uint8Array, replyTo?: string) => void;
  channel?: AmqpChannel;
  tag?: string;
}

/** The exchanges of a bus: the topic exchange for inboxes, and one fanout exchange per every-node subject. */
interface Exchanges {
  topic: string;
  fanout: string[];
}

async function amqpBus(link: AmqpLink, exchanges: Exchanges, log: (message: string) => void): Promise<Bus> {
  const exchange = exchanges.topic;
  const fanout = new Set(exchanges.fanout);
  /** Where a subject is published: its fanout exchange (no key), or the topic exchange by key. */
  const route = (subject: string): [string, string] =>
    fanout.has(subject) ? [subject, ''] : [exchange, subject];
  const subs = new Set<Subscription>();
  let channel: AmqpChannel | undefined;
  let ending = false;
  let onReply: ((message: Uint8Array) => void) | undefined;

  /** Direct reply-to: consumed on the channel that publishes the requests, before the first. */
  async function listenReplies(ch: AmqpChannel): Promise<void> {
    if (onReply === undefined) return;
    const deliver = onReply;
    await ch.consume(
      REPLY_TO,
      (m) => {
        if (m === null) return;
        try {
          deliver(m.content);
        } catch (error) {
          log(`RabbitMQ: a reply failed: ${ParleyError.from(error).message}`);
        }
      },
      { noAck: true },
    );
  }

  function bodyOf(message: Uint8Array): Buffer {
    return Buffer.isBuffer(message)
      ? message
      : Buffer.from(message.buffer, message.byteOffset, message.byteLength);
  }

  function send(exchangeName: string, routingKey: string, message: Uint8Array, replyTo?: string): void {
    if (channel === undefined) throw new ParleyError('UNAVAILABLE', 'RabbitMQ: not connected (reconnecting)');
    try {
      channel.publish(exchangeName, routingKey, bodyOf(message), replyTo === undefined ? {} : { replyTo });
    } catch (error) {
      throw amqpError(error, `publishing on ${routingKey}`);
    }
  }

  async function listen(ch: AmqpChannel, s: Subscription): Promise<void> {
    const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true, durable: false });
    await ch.bindQueue(queue, ...route(s.subject));
    const { consumerTag } = await ch.consume(
      queue,
      (m) => {
        if (m === null) return; // cancelled by the server (queue deleted): the next reconnect redeclares
        try {
          s.onMessage(m.content, m.properties.replyTo as string | undefined);
        } catch (error) {
          log(`RabbitMQ: a message on ${s.subject} failed: ${ParleyError.from(error).message}`);
        }
      },
      { noAck: true, exclusive: true },
    );
    s.channel = ch;
    s.tag = consumerTag;
  }

  async function open(model: ChannelModel): Promise<void> {
    const ch = await model.createChannel();
    ch.on('error', (error: Error) => {
      if (!ending) log(amqpError(error, 'bus channel').message);
    });
    ch.on('close', () => {
      if (channel === ch) channel = undefined;
      // A channel closed by an error on a live connection: open another.
      if (!ending && link.current === model) setTimeout(() => void reopen(model), 250).unref();
    });
    await ch.assertExchange(exchange, 'topic', { durable: true });
    for (const f of fanout) await ch.assertExchange(f, 'fanout', { durable: true });
    await listenReplies(ch);
    for (const s of subs) await listen(ch, s);
    channel = ch;
  }

  let opening: Promise<void> | undefined;
  async function reopen(model: ChannelModel): Promise<void> {
    if (ending || channel !== undefined || opening !== undefined || link.current !== model) return;
    opening = open(model);
    try {
      await opening;
    } catch (error) {
      log(amqpError(error, 'reopening the bus channel').message);
    } finally {
      opening = undefined;
    }
  }

  await open(await link.connection());
  link.onReconnect(async (model) => {
    channel = undefined;
    await reopen(model);
  });

  return {
    publish(subject, message) {
      send(...route(subject), message);
    },

    replies: {
      request: (subject, message) => send(exchange, subject, message, REPLY_TO),
      reply: (address, message) => send('', address, message),
      async listen(deliver) {
        onReply = deliver;
        if (channel !== undefined) {
          try {
            await listenReplies(channel);
          } catch (error) {
            throw amqpError(error, 'consuming direct replies');
          }
        }
        return () => {
          onReply = undefined;
        };
      },
    },

    async subscribe(subject, onMessage) {
      const s: Subscription = { subject, onMessage };
      subs.add(s);
      // Down now: the reconnect declares it with the others.
      if (channel !== undefined) {
        try {
          await listen(channel, s);
        } catch (error) {
          subs.delete(s);
          throw amqpError(error, `subscribing to ${subject}`);
        }
      }
      return () => {
        subs.delete(s);
        const { channel: ch, tag } = s;
        // The queue is auto-delete: cancelling its only consumer deletes it.
        if (ch !== undefined && tag !== undefined && ch === channel)
          void ch.cancel(tag).catch(() => undefined);
      };
    },

    async close() {
      ending = true;
      const ch = channel;
      channel = undefined;
      // Closing the channel flushes what was published on it first.
      await ch?.close().catch(() => undefined);
      await link.close();
    },

    destroy() {
      ending = true;
      channel = undefined;
      link.destroy();
    },
  };
}
