/**
 * @module adapters/amqp/confirms
 * The RabbitMQ broker's publishing channel (`amqp-broker.ts`): one confirm channel per
 * connection, opened on first use and again after it or its connection closes. Every publish is
 * a persistent message (unless the caller says otherwise) and resolves on the server's confirm.
 *
 * Once the channel is open, a publish writes at once, with no await before it, and costs one
 * promise: this path runs for every message.
 *
 * The publishes of one turn of the event loop leave in one socket write. amqplib queues each
 * publish's frames on its channel and, in a `setImmediate`, writes them to the socket one by one:
 * a system call per message, which costs the publisher more than the rest of the publish and
 * RabbitMQ a read per message. The first publish of a turn corks the connection's socket and
 * schedules the uncork for right after amqplib's writes of that turn (a `setImmediate` queued
 * from a `process.nextTick` comes after the one amqplib queued from its own `nextTick` during
 * the publish). Should the order ever differ, the writes simply go out one by one, as without it.
 */
import type { Options } from 'amqplib';
import { ParleyError } from '../../errors.ts';
import type { AmqpConfirmChannel, AmqpLink, ChannelModel } from './connect.ts';
import { amqpError } from './errors.ts';

interface Open {
  model: ChannelModel;
  channel: Promise<AmqpConfirmChannel>;
  /** The channel once open. */
  ready: AmqpConfirmChannel | undefined;
}

/** The part of an amqplib channel the cork needs (its connection's socket; not in amqplib's types). */
interface WithSocket {
  connection?: { stream?: { cork(): void; uncork(): void } };
}

export class ConfirmPublisher {
  private open: Open | undefined;
  /** The socket corked for this turn's publishes, until its uncork runs. */
  private corked: { uncork(): void } | undefined;

  constructor(
    private readonly link: Pick<AmqpLink, 'connection' | 'current'>,
    /** How long a publish waits for a lost connection to come back. */
    private readonly timeoutMs: number,
    private readonly log: (message: string) => void,
    /** The server's `max_message_size`: RabbitMQ does not say it, so it is configured. */
    private readonly maxMessageBytes: number,
  ) {}

  /**
   * Publishes and waits for the server's confirm (UNAVAILABLE if the channel closes first). A body
   * over `maxMessageBytes` is refused here (INVALID_ARGUMENT): sent, RabbitMQ closes the channel
   * (406), which fails every publish in flight on it as UNAVAILABLE, this one included, and a
   * retry (an outbox's) would send it again for ever.
   */
  publish(exchange: string, routingKey: string, body: Uint8Array, options: Options.Publish): Promise<void> {
    if (body.byteLength > this.maxMessageBytes) {
      return Promise.reject(
        new ParleyError(
          'INVALID_ARGUMENT',
          `RabbitMQ: a message of ${body.byteLength} bytes is over the server's max_message_size of ${this.maxMessageBytes}`,
          { details: { size: body.byteLength, maxMessageBytes: this.maxMessageBytes } },
        ),
      );
    }
    const content = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    const props = options.persistent === undefined ? { ...options, persistent: true } : options;
    const ch = this.open?.ready;
    if (ch !== undefined && this.open?.model === this.link.current)
      return this.send(ch, exchange, routingKey, content, props);
    return this.channel().then(
      (ch) => this.send(ch, exchange, routingKey, content, props),
      (error: unknown) => {
        throw amqpError(error, `publishing to ${exchange || 'queue'} ${routingKey}`);
      },
    );
  }

  /**
   * Writes one publish, settled by the server's confirm; the turn's first corks the socket until
   * amqplib has written the turn's frames.
   */
  private send(
    ch: AmqpConfirmChannel,
    exchange: string,
    routingKey: string,
    content: Buffer,
    props: Options.Publish,
  ): Promise<void> {
    const written = new Promise<void>((resolve, reject) => {
      const failed = (error: unknown) =>
        reject(amqpError(error, `publishing to ${exchange || 'queue'} ${routingKey}`));
      try {
        ch.publish(exchange, routingKey, content, props, (err: unknown) =>
          err === null || err === undefined ? resolve() : failed(err),
        );
      } catch (error) {
        failed(error);
      }
    });
    // After the write: amqplib's own `nextTick` must be queued before the one below.
    this.cork((ch as unknown as WithSocket).connection?.stream);
    return written;
  }

  private cork(socket: { cork(): void; uncork(): void } | undefined): void {
    if (socket === undefined || this.corked !== undefined) return;
    socket.cork();
    this.corked = socket;
    process.nextTick(() =>
      setImmediate(() => {
        this.corked = undefined;
        socket.uncork();
      }),
    );
  }

  private async channel(): Promise<AmqpConfirmChannel> {
    const model = await this.link.connection(this.timeoutMs);
    if (this.open?.model !== model) {
      const open: Open = { model, channel: model.createConfirmChannel(), ready: undefined };
      // Registered before any caller's `then`: `ready` is set before the first write.
      open.channel.then(
        (ch) => {
          ch.on('error', (e: Error) => this.log(amqpError(e, 'publish channel').message));
          ch.on('close', () => {
            if (this.open === open) this.open = undefined;
          });
          if (this.open === open) open.ready = ch;
        },
        () => {
          if (this.open === open) this.open = undefined;
        },
      );
      this.open = open;
    }
    return this.open.channel;
  }
}
