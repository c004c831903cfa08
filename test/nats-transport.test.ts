/**
 * The NATS transport passes the transport conformance suite against the machine's NATS server.
 */
import type { BusTransport } from '../src/adapters/bus-transport.ts';
import { createNatsTransport } from '../src/adapters/nats/nats-transport.ts';
import { BROKERS, needBroker } from './brokers.ts';
import { transportConformance } from './conformance/transport.ts';

const skip = await needBroker('nats');
const prefix = `parley-test-${process.pid}`;

if (skip === false) {
  transportConformance({
    name: 'nats',
    create: ({ maxPayload }) =>
      createNatsTransport({
        url: BROKERS.nats.url,
        prefix,
        maxPayload,
        heartbeatMs: 100,
        heartbeatTimeoutMs: 600,
      }),
    crash: (transport) => (transport as BusTransport).destroy(),
  });
} else {
  const { it } = await import('node:test');
  it('transport conformance: nats', { skip }, () => {});
}
