/**
 * @module adapters/amqp/connect
 * One connection to RabbitMQ from an `amqp://user:pass@host:port/vhost` URL (`amqps://` for TLS;
 * the vhost is the path, URL-encoded: `/%2F` or no path is the default vhost `/`; `?heartbeat=`
 * in seconds, default 10), kept open across failures. Loaded only when an `amqp:` URL is used.
 *
 * Reconnects: amqplib's plain `connect` does not reconnect, and channels and consumers die with
 * their connection whatever the driver does (its optional `recovery` mode reopens the connection
 * only). `AmqpLink` owns that: the first connection must succeed (a wrong URL or password fails
 * `start()` / `createAmqpBroker()` at once); after that, a lost connection is dialled again with
 * exponential backoff and full jitter (100 ms doubling to 5 s, without end) until `close()`.
 * Every user of the link registers a hook (`onReconnect`) that rebuilds its channels,
 * declarations and consumers on the new connection. While the link is down, `connection()` waits
 * up to its timeout for the next connection and then fails with UNAVAILABLE.
 */
import type { ChannelModel, Options } from 'amqplib';
import { ParleyError } from '../../errors.ts';
import { loadDriver } from '../driver.ts';
import { amqpError } from './errors.ts';

export type AmqpModule = typeof import('amqplib');
export type { Channel as AmqpChannel, ChannelModel, ConfirmChannel as AmqpConfirmChannel } from 'amqplib';

/** The connection options of an `amqp://` URL (amqplib's own URL parser leaves the vhost and heartbeat rules implicit). */
export function connectOptions(url: string): Options.Connect {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ParleyError('INVALID_ARGUMENT', `RabbitMQ: not a URL: ${url}`);
  }
  if (u.protocol !== 'amqp:' && u.protocol !== 'amqps:')
    throw new ParleyError('INVALID_ARGUMENT', `RabbitMQ: expected an amqp: or amqps: URL, got ${u.protocol}`);
  const tls = u.protocol === 'amqps:';
  const heartbeat = Number(u.searchParams.get('heartbeat') ?? 10);
  const frameMax = u.searchParams.get('frameMax');
  return {
    protocol: tls ? 'amqps' : 'amqp',
    hostname: u.hostname,
    port: u.port === '' ? (tls ? 5671 : 5672) : Number(u.port),
    username: u.username === '' ? 'guest' : decodeURIComponent(u.username),
    password: u.password === '' ? 'guest' : decodeURIComponent(u.password),
    vhost: u.pathname.length > 1 ? decodeURIComponent(u.pathname.slice(1)) : '/',
    heartbeat: Number.isFinite(heartbeat) ? heartbeat : 10,
    ...(frameMax === null ? {} : { frameMax: Number(frameMax) }),
  };
}

export interface AmqpLinkOptions {
  url: string;
  /** The connection name shown by `rabbitmqctl list_connections client_properties`. */
  name: string;
  log: (message: string) => void;
}

/** A RabbitMQ connection that comes back: see the module comment. */
export class AmqpLink {
  private model: ChannelModel | undefined;
  private readonly hooks = new Set<(model: ChannelModel) => Promise<void>>();
  private waiters: ((model: ChannelModel | undefined) => void)[] = [];
  private closed = false;
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  /** The server's version, from the connection's server properties. */
  serverVersion = 'unknown';

  private constructor(
    private readonly amqp: AmqpModule,
    private readonly options: AmqpLinkOptions,
  ) {}

  /** Loads amqplib and makes the first connection (which must succeed). */
  static async open(options: AmqpLinkOptions): Promise<AmqpLink> {
    const amqp = await loadDriver<AmqpModule>('amqplib', 'amqp:');
    const link = new AmqpLink(amqp, options);
    link.attach(await link.dial());
    return link;
  }

  private async dial(): Promise<ChannelModel> {
    const options = connectOptions(this.options.url);
    // amqplib hands these to `net.connect` (its types know only some of them).
    const socket = {
      clientProperties: { connection_name: this.options.name, product: 'parley' },
      // amqplib leaves Nagle's algorithm on: a small frame written while an earlier one is
      // unacknowledged then waits for the peer's delayed ACK (40 ms on Linux). Calls and
      // confirms are small frames that someone waits for.
      noDelay: true,
      // The publisher corks the socket for a turn's publishes (`confirms.ts`) so they leave in
      // one write; amqplib stops handing frames to a socket that holds more than this, so the
      // default 16 KiB would end the turn's write after some 40 messages.
      writableHighWaterMark: 1 << 20,
    };
    try {
      return await this.amqp.connect(options, socket);
    } catch (error) {
      throw amqpError(error, `connecting to ${options.hostname}:${options.port}`);
    }
  }

  private attach(model: ChannelModel): void {
    this.model = model;
    const version = model.connection.serverProperties.version;
    if (typeof version === 'string') this.serverVersion = version;
    model.on('error', (error: Error) => {
      if (!this.closed) this.options.log(amqpError(error, 'connection').message);
    });
    model.on('blocked', (reason: string) =>
      this.options.log(`RabbitMQ: the server blocks publishes: ${reason}`),
    );
    model.on('unblocked', () => this.options.log('RabbitMQ: the server takes publishes again'));
    model.on('close', () => {
      if (this.model === model) this.model = undefined;
      if (this.closed) return;
      this.options.log('RabbitMQ: lost the connection; reconnecting');
      this.schedule();
    });
    for (const w of this.waiters.splice(0)) w(model);
  }

  private schedule(): void {
    if (this.closed || this.timer !== undefined) return;
    const cap = Math.min(5000, 100 * 2 ** this.attempt);
    this.attempt++;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.redial();
    }, Math.random() * cap);
  }

  private async redial(): Promise<void> {
    let model: ChannelModel;
    try {
      model = await this.dial();
    } catch (error) {
      this.options.log(`${ParleyError.from(error).message}; trying again`);
      this.schedule();
      return;
    }
    if (this.closed) {
      await model.close().catch(() => undefined);
      return;
    }
    this.attempt = 0;
    // Hooks first, then the waiters: a publish after a reconnect finds the topology rebuilt.
    const waiting = this.waiters.splice(0);
    this.model = model;
    this.attach(model);
    for (const hook of this.hooks) {
      try {
        await hook(model);
      } catch (error) {
        this.options.log(`RabbitMQ: restoring after a reconnect failed: ${ParleyError.from(error).message}`);
      }
    }
    this.options.log('RabbitMQ: reconnected');
    for (const w of waiting) w(this.model);
  }

  /** The open connection, or the next one (UNAVAILABLE after `timeoutMs`, or once closed). */
  connection(timeoutMs = 10_000): Promise<ChannelModel> {
    if (this.model !== undefined) return Promise.resolve(this.model);
    if (this.closed)
      return Promise.reject(new ParleyError('UNAVAILABLE', 'RabbitMQ: the connection is closed'));
    return new Promise((resolve, reject) => {
      const waiter = (model: ChannelModel | undefined) => {
        clearTimeout(timer);
        if (model === undefined) reject(new ParleyError('UNAVAILABLE', 'RabbitMQ: the connection is closed'));
        else resolve(model);
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(
          new ParleyError('UNAVAILABLE', `RabbitMQ: not connected after ${timeoutMs} ms (reconnecting)`),
        );
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** The open connection, if any, now. */
  get current(): ChannelModel | undefined {
    return this.model;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Runs `hook` on every new connection after a loss; the returned function removes it. */
  onReconnect(hook: (model: ChannelModel) => Promise<void>): () => void {
    this.hooks.add(hook);
    return () => this.hooks.delete(hook);
  }

  private stop(): ChannelModel | undefined {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const w of this.waiters.splice(0)) w(undefined);
    const model = this.model;
    this.model = undefined;
    return model;
  }

  /** Closes the connection (the server requeues what its channels held unacknowledged). */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.stop()
      ?.close()
      .catch(() => undefined);
  }

  /** Drops the socket without a word, as a crash would (tests). */
  destroy(): void {
    if (this.closed) return;
    const model = this.stop();
    const socket = (model?.connection as unknown as { stream?: { destroy(error: Error): void } } | undefined)
      ?.stream;
    // With an error: amqplib tears the connection down (and stops its heartbeat timers) only on one.
    socket?.destroy(new Error('destroyed'));
  }
}
