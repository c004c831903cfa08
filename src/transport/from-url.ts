/**
 * @module transport/from-url
 * Transports by URL, as `PARLEY_TRANSPORT` names them: `memory:` (this process alone) and
 * `parley://host:port` (the hub), and the brokers' own: `nats://host:port`, `redis://host:port`,
 * `amqp://user:pass@host:port`, `mqtt://host:port`. An adapter's client
 * library is loaded only when its URL is used.
 */
import { createAmqpTransport } from '../adapters/amqp/amqp-transport.ts';
import { createMqttTransport } from '../adapters/mqtt/mqtt-transport.ts';
import { createNatsTransport } from '../adapters/nats/nats-transport.ts';
import { createRedisTransport } from '../adapters/redis/redis-transport.ts';
import { parseUrl, prefixOf, Schemes } from '../schemes.ts';
import { createMemoryNetwork } from './memory.ts';
import type { ParleyTlsOptions } from './tcp/sockets.ts';
import { createTcpTransport } from './tcp/tcp-transport.ts';
import type { Transport } from './transport.ts';

export interface TransportFactoryOptions {
  /** Shared token of the hub (`PARLEY_TOKEN`). */
  token?: string;
  maxPayload?: number;
  log?: (message: string) => void;
  tls?: ParleyTlsOptions;
}

export type TransportFactory = (url: string, options: TransportFactoryOptions) => Transport;

export class TransportRegistry {
  private readonly schemes = new Schemes<TransportFactory>('transport');

  constructor() {
    this.register('memory:', (_url, options) =>
      createMemoryNetwork().transport(
        options.maxPayload === undefined ? {} : { maxPayload: options.maxPayload },
      ),
    );
    this.register('parley:', (url, options) => {
      const tcp: Parameters<typeof createTcpTransport>[0] = { hub: url };
      if (options.token !== undefined) tcp.token = options.token;
      if (options.maxPayload !== undefined) tcp.maxPayload = options.maxPayload;
      if (options.log !== undefined) tcp.log = options.log;
      if (options.tls !== undefined) tcp.tls = options.tls;
      return createTcpTransport(tcp);
    });
    // The brokers' own, all transports over a bus; `?prefix=` keeps apps on one server apart.
    const buses = [
      ['nats:', createNatsTransport],
      ['redis:', createRedisTransport],
      ['amqp:', createAmqpTransport],
      ['mqtt:', createMqttTransport],
    ] as const;
    for (const [scheme, create] of buses) {
      this.register(scheme, (url, options) =>
        create({
          url,
          ...prefixOf(parseUrl(url, 'transport')),
          ...(options.maxPayload === undefined ? {} : { maxPayload: options.maxPayload }),
          ...(options.log === undefined ? {} : { log: options.log }),
        }),
      );
    }
  }

  register(scheme: string, factory: TransportFactory): void {
    this.schemes.set(scheme, factory);
  }

  /** INVALID_ARGUMENT, naming the known schemes, when no factory here opens `url`'s scheme. */
  check(url: string): void {
    this.schemes.check(url);
  }

  open(url: string, options: TransportFactoryOptions = {}): Transport {
    return this.schemes.lookup(url)(url, options);
  }
}
