import { createEmbeddedBroker, createFakeClock } from '../src/index.ts';
import { createRandom } from '../src/transport/faults.ts';
import { brokerConformance } from './conformance/broker.ts';

const clock = createFakeClock();

brokerConformance({
  name: 'embedded (SQLite, fake clock)',
  clock,
  create: () => createEmbeddedBroker({ path: ':memory:', clock, random: createRandom(1) }),
  advance: (ms) => clock.tick(ms),
  noInject: 'the embedded broker lives inside its process: only Parley writes to it',
  noInjectLetter:
    "this harness's broker is in memory: only its process writes its dead letters (a shared file's " +
    'foreign rows: test/embedded-foreign-rows.test.ts)',
});
