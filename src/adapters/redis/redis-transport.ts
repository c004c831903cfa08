/**
 * @module adapters/redis/redis-transport
 * The Parley transport over Redis pub/sub: `createRedisTransport({ url: 'redis://127.0.0.1:6379' })`,
 * or `PARLEY_TRANSPORT=redis://127.0.0.1:6379`. Each subject is a channel; requests go to the
 * callee's inbox channel and the reply to the caller's (one hop through Redis each way);
 * discovery, heartbeats, cancels and notifications are those of every bus transport
 * (`adapters/bus-transport.ts`).
 *
 * Two connections per transport: one in subscriber mode (a subscribed Redis connection can run
 * nothing else) and one for publishing, so messages from one publisher keep their order per
 * channel. Payloads travel as bytes (`messageBuffer` events, Buffers published as they are).
 * Frames are kept within the server's `proto-max-bulk-len` (`bus-transport.ts` lowers
 * `maxPayload` to it at start): a larger PUBLISH would be a protocol error that drops the
 * connection.
 *
 * Reconnects (`connect.ts`): ioredis reconnects without end and resubscribes; publishes made
 * meanwhile are queued and sent on reconnect, or dropped after a few failed reconnects; messages
 * published by others while this node's subscriber was away are lost (pub/sub keeps nothing).
 * Calls in flight fail at their deadline, or with UNAVAILABLE once the callee misses its
 * heartbeats.
 */
import { Buffer } from 'node:buffer';
import { type Bus, BusTransport, type BusTransportOptions } from '../bus-transport.ts';
import { connectRedis, maxBulkOf, type Redis } from './connect.ts';
import { redisError } from './errors.ts';

export interface RedisTransportOptions extends BusTransportOptions {
  url: string;
}

export function createRedisTransport(options: RedisTransportOptions): BusTransport {
  const log = options.log ?? ((m: string) => process.stderr.write(`parley redis transport: ${m}\n`));
  return new BusTransport(async () => {
    const { redis: pub, more } = await connectRedis(options.url, 'parley-transport-pub', log);
    let sub: Redis;
    try {
      sub = await more('parley-transport-sub');
    } catch (error) {
      pub.disconnect();
      throw error;
    }
    const handlers = new Map<string, (message: Uint8Array) => void>();
    sub.on('messageBuffer', (channel: Buffer, message: Buffer) => {
      handlers.get(channel.toString())?.(message);
    });
    let gone = false; // closed or destroyed: later publishes (a crashed node's last replies) are dropped
    const quiet = (p: Promise<unknown>, what: string) =>
      void p.catch((error: unknown) => log(`${what}: ${redisError(error, what).message}`));
    const maxMessage = await maxBulkOf(pub);
    const bus: Bus = {
      maxMessage,
      publish: (subject, message) => {
        if (gone) return;
        const bytes = Buffer.isBuffer(message)
          ? message
          : Buffer.from(message.buffer, message.byteOffset, message.byteLength);
        quiet(pub.publish(subject, bytes), `publish on ${subject}`);
      },
      async subscribe(subject, onMessage) {
        handlers.set(subject, onMessage);
        try {
          await sub.subscribe(subject); // resolves once Redis confirmed the subscription
        } catch (error) {
          handlers.delete(subject);
          throw redisError(error, `subscribing to ${subject}`);
        }
        return () => {
          if (handlers.get(subject) !== onMessage) return;
          handlers.delete(subject);
          if (sub.status === 'ready') quiet(sub.unsubscribe(subject), `unsubscribe from ${subject}`);
        };
      },
      close: async () => {
        gone = true;
        // Auto-pipelined publishes (the bye among them) leave on the next tick; then QUIT, which
        // is answered after every command sent before it.
        await new Promise((resolve) => setImmediate(resolve));
        await Promise.all([pub, sub].map((c) => c.quit().then(undefined, () => c.disconnect())));
      },
      destroy: () => {
        gone = true;
        pub.disconnect();
        sub.disconnect();
      },
    };
    return bus;
  }, options);
}
