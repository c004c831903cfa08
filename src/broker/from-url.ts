/**
 * @module broker/from-url
 * Brokers by URL, as `PARLEY_BROKER` names them. Each scheme maps to a factory; adapters for real
 * brokers register theirs (`nats://`, `amqp://`, `redis://`, `kafka://`) and load their client
 * library only when their URL is used.
 */
import { ParleyError } from '../errors.ts';
import type { Clock } from '../runtime/clock.ts';
import type { Broker } from './broker.ts';
import { createEmbeddedBroker } from './embedded/embedded-broker.ts';

export interface BrokerFactoryOptions {
  clock?: Clock;
}

export type BrokerFactory = (url: URL | string, options: BrokerFactoryOptions) => Broker | Promise<Broker>;

/** The schemes this process knows. A registry is passed around, never a module global. */
export class BrokerRegistry {
  private readonly factories = new Map<string, BrokerFactory>();

  constructor() {
    // `embedded:./data/broker.db`, `embedded:/abs/path.db`, `embedded::memory:`.
    this.register('embedded:', (url, options) => {
      const path = String(url).slice('embedded:'.length);
      if (path === '')
        throw new ParleyError('INVALID_ARGUMENT', 'embedded: needs a path, e.g. embedded:./data/broker.db');
      return createEmbeddedBroker(options.clock === undefined ? { path } : { path, clock: options.clock });
    });
  }

  register(scheme: string, factory: BrokerFactory): void {
    this.factories.set(scheme.endsWith(':') ? scheme : `${scheme}:`, factory);
  }

  async open(url: string, options: BrokerFactoryOptions = {}): Promise<Broker> {
    const scheme = /^[a-z][a-z0-9+.-]*:/i.exec(url)?.[0]?.toLowerCase();
    const factory = scheme === undefined ? undefined : this.factories.get(scheme);
    if (factory === undefined) {
      throw new ParleyError(
        'INVALID_ARGUMENT',
        `no broker for ${url}; known schemes: ${[...this.factories.keys()].join(', ')}`,
      );
    }
    return factory(url, options);
  }
}
