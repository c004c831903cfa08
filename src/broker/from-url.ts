/**
 * @module broker/from-url
 * Brokers by URL, as `PARLEY_BROKER` names them. Each scheme maps to a factory: `embedded:PATH`,
 * and the adapters for real brokers (`nats://`, `redis://`, `amqp://`, `mqtt://`, `kafka://`), which load
 * their client library only when their URL is used.
 */
import { createAmqpBroker } from '../adapters/amqp/amqp-broker.ts';
import { kafkaBrokerFromUrl } from '../adapters/kafka/kafka-broker.ts';
import { createMqttBroker } from '../adapters/mqtt/mqtt-broker.ts';
import { createNatsBroker } from '../adapters/nats/nats-broker.ts';
import { createRedisBroker } from '../adapters/redis/redis-broker.ts';
import { ParleyError } from '../errors.ts';
import type { Clock } from '../runtime/clock.ts';
import { parseUrl, prefixOf, Schemes } from '../schemes.ts';
import type { Broker } from './broker.ts';
import { createEmbeddedBroker } from './embedded/embedded-broker.ts';

export interface BrokerFactoryOptions {
  clock?: Clock;
}

export type BrokerFactory = (url: URL | string, options: BrokerFactoryOptions) => Broker | Promise<Broker>;

/** The schemes this process knows. A registry is passed around, never a module global. */
export class BrokerRegistry {
  private readonly schemes = new Schemes<BrokerFactory>('broker');

  constructor() {
    // `embedded:./data/broker.db`, `embedded:/abs/path.db`, `embedded::memory:`.
    this.register('embedded:', (url, options) => {
      const path = String(url).slice('embedded:'.length);
      if (path === '')
        throw new ParleyError('INVALID_ARGUMENT', 'embedded: needs a path, e.g. embedded:./data/broker.db');
      return createEmbeddedBroker(options.clock === undefined ? { path } : { path, clock: options.clock });
    });
    // `nats://host:port`: JetStream (the server runs with -js).
    this.register('nats:', (url) =>
      createNatsBroker({ url: String(url), ...prefixOf(parseUrl(String(url), 'broker')) }),
    );
    // `redis://host:port[/db]`: Streams and consumer groups.
    this.register('redis:', (url) =>
      createRedisBroker({ url: String(url), ...prefixOf(parseUrl(String(url), 'broker')) }),
    );
    // `amqp://user:pass@host:port/vhost`: RabbitMQ quorum queues.
    this.register('amqp:', (url) =>
      createAmqpBroker({ url: String(url), ...prefixOf(parseUrl(String(url), 'broker')) }),
    );
    // `mqtt://[user:pass@]host:port[?prefix=…&member=…]`: MQTT 5 shared subscriptions.
    this.register('mqtt:', (url) => {
      const parsed = parseUrl(String(url), 'broker');
      const member = parsed.searchParams.get('member');
      return createMqttBroker({
        url: String(url).replace(/\?.*$/, ''),
        ...prefixOf(parsed),
        ...(member === null || member === '' ? {} : { member }),
      });
    });
    // `kafka://host:port[,host:port…][?namespace=…]`.
    this.register('kafka:', (url) => kafkaBrokerFromUrl(String(url)));
  }

  register(scheme: string, factory: BrokerFactory): void {
    this.schemes.set(scheme, factory);
  }

  /** INVALID_ARGUMENT, naming the known schemes, when no factory here opens `url`'s scheme. */
  check(url: string): void {
    this.schemes.check(url);
  }

  async open(url: string, options: BrokerFactoryOptions = {}): Promise<Broker> {
    return this.schemes.lookup(url)(url, options);
  }
}
