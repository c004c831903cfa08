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
import { prefixOf, Schemes } from '../schemes.ts';
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
    this.register('nats:', (url) => createNatsBroker({ url: String(url), ...prefixOf(checkedUrl(url)) }));
    // `redis://host:port[/db]`: Streams and consumer groups.
    this.register('redis:', (url) => createRedisBroker({ url: String(url), ...prefixOf(checkedUrl(url)) }));
    // `amqp://user:pass@host:port/vhost`: RabbitMQ quorum queues.
    this.register('amqp:', (url) => createAmqpBroker({ url: String(url), ...prefixOf(checkedUrl(url)) }));
    // `mqtt://[user:pass@]host:port[?prefix=…&member=…]`: MQTT 5 shared subscriptions.
    this.register('mqtt:', (url) => {
      const member = new URL(checkedUrl(url)).searchParams.get('member');
      return createMqttBroker({
        url: String(url).replace(/\?.*$/, ''),
        ...prefixOf(String(url)),
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

/**
 * `url` as a string that parses as a URL, or INVALID_ARGUMENT, as a scheme no broker has is. Until
 * 2026-12-03 a malformed `nats:`, `redis:`, `amqp:` or `mqtt:` URL (`redis://[::1`, a port over
 * 65535) failed with the URL parser's TypeError, an unexpected INTERNAL error.
 */
function checkedUrl(url: URL | string): string {
  const text = String(url);
  // The URL itself is left out of the message: it may hold a password.
  if (!URL.canParse(text))
    throw new ParleyError(
      'INVALID_ARGUMENT',
      `not a valid ${text.slice(0, text.indexOf(':') + 1)} broker URL`,
    );
  return text;
}
