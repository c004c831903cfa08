/**
 * The NATS transport passes the transport conformance suite against the machine's NATS server.
 */
import { createNatsTransport } from '../src/adapters/nats/nats-transport.ts';
import { BROKERS, busConformance, needBroker } from './brokers.ts';

const skip = await needBroker('nats');
const prefix = `parley-test-${process.pid}`;

busConformance('nats', skip, (options) => createNatsTransport({ url: BROKERS.nats.url, ...options }), prefix);
