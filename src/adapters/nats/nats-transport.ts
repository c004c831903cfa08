/**
 * @module adapters/nats/nats-transport
 * The Parley transport over NATS core: `createNatsTransport({ url: 'nats://127.0.0.1:4222' })`,
 * or `PARLEY_TRANSPORT=nats://127.0.0.1:4222`. Requests go straight to the callee's inbox subject
 * and the reply to the caller's (one hop through the NATS server each way); discovery, heartbeats,
 * cancels and notifications are those of every bus transport (`adapters/bus-transport.ts`).
 *
 * Size: frames are kept within the server's `max_payload` (1 MiB by default): a server set lower
 * lowers the transport's `maxPayload`, at start and after a reconnect (`bus-transport.ts`).
 *
 * Reconnects: nats.js reconnects without end and resubscribes; messages published meanwhile are
 * buffered by the client. Calls in flight while the server is away fail at their deadline, or
 * with UNAVAILABLE once the callee misses its heartbeats.
 */
import { type Bus, BusTransport, type BusTransportOptions } from '../bus-transport.ts';
import { connectNats } from './connect.ts';

export interface NatsTransportOptions extends BusTransportOptions {
  url: string;
}

export function createNatsTransport(options: NatsTransportOptions): BusTransport {
  return new BusTransport(async () => {
    // A node drops its own broadcasts and presence anyway: the server need not send them back.
    const { nc } = await connectNats(options.url, 'parley-transport', { noEcho: true });
    const bus: Bus = {
      // The server's max_payload, from its last INFO (a message over it is refused by nats.js);
      // undefined while reconnecting.
      get maxMessage() {
        return nc.info?.max_payload;
      },
      publish: (subject, message) => nc.publish(subject, message),
      async subscribe(subject, onMessage) {
        const sub = nc.subscribe(subject, {
          callback: (err, msg) => void (err === null && onMessage(msg.data)),
        });
        await nc.flush(); // the server has the subscription before start() returns
        return () => sub.unsubscribe();
      },
      close: async () => {
        await nc.drain().catch(() => nc.close());
      },
      destroy: () => void nc.close(),
    };
    return bus;
  }, options);
}
