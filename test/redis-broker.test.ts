/**
 * The Redis Streams broker passes the broker conformance suite against the machine's Redis server
 * (real time: `advance` waits). Every broker of the run has its own key prefix; its keys are
 * deleted at the end.
 */
import { after, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisBroker, type RedisBroker } from '../src/adapters/redis/redis-broker.ts';
import { systemClock } from '../src/index.ts';
import { BROKERS, needBroker } from './brokers.ts';
import { brokerConformance } from './conformance/broker.ts';

const skip = await needBroker('redis');
let n = 0;
const made: string[] = [];

if (skip === false) {
  brokerConformance({
    name: 'redis streams',
    clock: systemClock,
    create: async () => {
      const prefix = `ptest${process.pid}r${++n}`;
      made.push(prefix);
      return createRedisBroker({ url: BROKERS.redis.url, prefix, log: () => {} });
    },
    advance: (ms) => sleep(ms),
  });
  after(async () => {
    for (const prefix of made) {
      const b: RedisBroker = await createRedisBroker({ url: BROKERS.redis.url, prefix, log: () => {} });
      await b.destroyAll();
      await b.close();
    }
  });
} else {
  it('broker conformance: redis streams', { skip }, () => {});
}
