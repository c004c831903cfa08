/**
 * @module transport/from-url
 * Transports by URL, as `PARLEY_TRANSPORT` names them: `memory:` (this process alone) and
 * `parley://host:port` (the hub). Adapters for real brokers register their schemes.
 */
import { ParleyError } from '../errors.ts';
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
  private readonly factories = new Map<string, TransportFactory>();

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
  }

  register(scheme: string, factory: TransportFactory): void {
    this.factories.set(scheme.endsWith(':') ? scheme : `${scheme}:`, factory);
  }

  open(url: string, options: TransportFactoryOptions = {}): Transport {
    const scheme = /^[a-z][a-z0-9+.-]*:/i.exec(url)?.[0]?.toLowerCase();
    const factory = scheme === undefined ? undefined : this.factories.get(scheme);
    if (factory === undefined) {
      throw new ParleyError(
        'INVALID_ARGUMENT',
        `no transport for ${url}; known schemes: ${[...this.factories.keys()].join(', ')}`,
      );
    }
    return factory(url, options);
  }
}
