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
    noHistory: 'history reads are not built on JetStream yet (the stream keeps the log; see the README)',
    clock: systemClock,
    create: async () => {
      const prefix = `ptest${process.pid}n${++n}`;
      made.push(prefix);
      return createNatsBroker({ url: BROKERS.nats.url, prefix, storage: 'memory', log: () => {} });
    },
    advance: (ms) => sleep(ms),
    skip: {
      'extendLease keeps a delivery from going to another consumer while its own works on it':
        'nats-server 2.9 sometimes hands a message whose lease is being extended (`working()` every ' +
        '400 ms, ack_wait 1 s) to another pull request of the same consumer, as a first delivery ' +
        '(delivery count 1), when pull requests expire around it (seen here in 4 of 42 runs of ' +
        'this file; reported upstream against 2.9 for competing pull clients); at least once holds, ' +
        'the lease does not',
    },
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
