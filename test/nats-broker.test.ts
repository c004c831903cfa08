/**
 * The JetStream broker passes the broker conformance suite against the machine's NATS server
 * (real time: `advance` waits). Every broker of the run has its own prefix; their streams are
 * deleted at the end.
 */
import assert from 'node:assert/strict';
import { after, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createNatsBroker, type NatsBroker } from '../src/adapters/nats/nats-broker.ts';
import { createEnvelope, ParleyError, systemClock } from '../src/index.ts';
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
    skip: {
      'extendLease keeps a delivery from going to another consumer while its own works on it':
        'nats-server 2.9 sometimes hands a message whose lease is being extended (`working()` every ' +
        '400 ms, ack_wait 1 s) to another pull request of the same consumer, as a first delivery ' +
        '(delivery count 1), when pull requests expire around it (seen here in 4 of 42 runs of ' +
        'this file; reported upstream against 2.9 for competing pull clients); at least once holds, ' +
        'the lease does not',
    },
  });
  const fresh = async (options: { maxMessages?: number } = {}) => {
    const prefix = `ptest${process.pid}n${++n}`;
    made.push(prefix);
    return createNatsBroker({ url: BROKERS.nats.url, prefix, storage: 'memory', log: () => {}, ...options });
  };
  const event = (data: unknown) => createEnvelope({ source: '/t', type: 'history.t', data });

  it('a history reader behind what the stream limits removed is told it has a gap; one ahead of it is not', async () => {
    const b = await fresh({ maxMessages: 2 });
    try {
      const start = await b.history.latest('history.t');
      for (let i = 0; i < 5; i++) await b.publish(event(i));
      const behind = await b.history.read('history.t', start);
      assert.equal(behind.gap, true);
      assert.deepEqual(
        behind.entries.map((e) => e.envelope.data),
        [3, 4],
      );
      // Far behind, in small pages: the first page starts at the first kept message, not past it.
      const small = await b.history.read('history.t', start, { limit: 1 });
      assert.equal(small.gap, true);
      assert.deepEqual(
        small.entries.map((e) => e.envelope.data),
        [3],
      );
      const ahead = await b.history.read('history.t', String(Number(behind.entries[0]?.position) - 1));
      assert.equal(ahead.gap, false);
      assert.deepEqual(
        ahead.entries.map((e) => e.envelope.data),
        [3, 4],
      );
    } finally {
      await b.close();
    }
  });

  it('a dead letter replayed to its group is not a new event in the history', async () => {
    const b = await fresh();
    try {
      const c = await b.subscribe({ topic: 'history.t', group: 'g', maxAttempts: 1 }, async () => {
        throw new ParleyError('INVALID_ARGUMENT', 'no', { retryable: false });
      });
      const start = await b.history.latest('history.t');
      await b.publish(event('once'));
      for (let i = 0; i < 100 && (await b.deadLetters.list()).length === 0; i++) await sleep(20);
      await c.close();
      assert.equal(await b.deadLetters.replay(), 1);
      const read = await b.history.read('history.t', start);
      assert.deepEqual(
        read.entries.map((e) => e.envelope.data),
        ['once'],
      );
      assert.notEqual(read.next, read.entries[0]?.position, 'the read went past the replayed copy');
    } finally {
      await b.close();
    }
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
