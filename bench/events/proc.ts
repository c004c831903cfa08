/**
 * One side of an event benchmark, as its own process.
 *   subscribe <system> <topic> <groups> <count> → {ready}, then {done, at, received}
 *   publish <system> <topic> <count>            → {start: at} (set up, first message next), then
 *                                                 {published: at}
 *   cleanup <system> <topic> <groups>           → {cleaned}
 * Times are epoch milliseconds with sub-millisecond precision, comparable across processes.
 */
import { say } from '../lib/proc.ts';
import { eventSystems } from './systems.ts';

const now = () => performance.timeOrigin + performance.now();
const [role, name, topic = '', a = '1', b = '0'] = process.argv.slice(2);
const system = eventSystems[name ?? ''];
if (system === undefined) throw new Error(`unknown system ${name}`);
const payload = Buffer.from(JSON.stringify({ seq: 0, note: 'x'.repeat(80) }));

if (role === 'subscribe') {
  const groups = Number(a);
  const expected = Number(b);
  const sub = await system.subscribe(topic, groups, expected);
  say({ ready: true });
  await sub.done;
  say({ done: true, at: now(), received: sub.received() });
  await sub.close();
  process.exit(0);
} else if (role === 'publish') {
  const count = Number(a);
  await system.publish(topic, count, payload, () => say({ start: now() }));
  say({ published: now() });
  process.exit(0);
} else {
  await system.cleanup(topic, Number(a));
  say({ cleaned: true });
  process.exit(0);
}
