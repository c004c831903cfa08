/**
 * The JetStream broker passes the broker conformance suite against the machine's NATS server
 * (real time: `advance` waits). Every broker of the run has its own prefix; their streams are
 * deleted at the end.
 */
import { after, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createNatsBroker, type NatsBroker } from '../src/adapters/nats/nats-broker.ts';
import { systemClock } from '../src/index.ts';
import { BROKERS, needBroker } from './brokers.ts';
import { brokerConformance } from './conformance/broker.ts';

const skip = await needBroker('nats');
let n = 0;
const made: string[] = [];

if (skip === false) {
  brokerConformance({
    name: 'nats jetstream',
    clock: systemClock,
    create: async () => {
      const prefix = `ptest${process.pid}n${++n}`;
      made.push(prefix);
      return createNatsBroker({ url: BROKERS.nats.url, prefix, storage: 'memory', log: () => {} });
    },
    advance: (ms) => sleep(ms),
  });
  after(async () => {
    for (const prefix of made) {
      const b: NatsBroker = await createNatsBroker({ url: BROKERS.nats.url, prefix });
      await b.destroyAll();
      await b.close();
    }
  });
} else {
  it('broker conformance: nats jetstream', { skip }, () => {});
}
