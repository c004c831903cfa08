/**
 * How long the JetStream broker takes to read a topic's history after a long gap (what a push
 * client resuming 10,000 events behind costs): the whole log in pages of 200, by message-gets
 * and through an ordered consumer, in the same run, medians of 5. Against the machine's NATS.
 *   node --import tsx bench/history-read.mts [events]
 */
import { createNatsBroker } from '../src/adapters/nats/nats-broker.ts';
import { createEnvelope } from '../src/index.ts';

const events = Number(process.argv[2] ?? 10_000);
const topic = 'bench.history';
const prefix = `hbench${process.pid}`;
const broker = await createNatsBroker({ url: 'nats://127.0.0.1:4222', prefix, log: () => {} });
// The same stream read by a second client that never uses a consumer.
const gets = await createNatsBroker({
  url: 'nats://127.0.0.1:4222',
  prefix,
  historyConsumerFrom: Number.MAX_SAFE_INTEGER,
  log: () => {},
});
try {
  const data = { orderId: 'o-1', customer: 'c-1', status: 'CONFIRMED', note: 'x'.repeat(40) };
  const published: Promise<unknown>[] = [];
  for (let i = 0; i < events; i++)
    published.push(broker.publish(createEnvelope({ source: '/b', type: topic, data })));
  await Promise.all(published);
  const readAll = async (b: typeof broker) => {
    const started = performance.now();
    let at = '0';
    let n = 0;
    for (;;) {
      const page = await b.history.read(topic, at, { limit: 200 });
      n += page.entries.length;
      if (page.next === at) break;
      at = page.next;
    }
    if (n !== events) throw new Error(`read ${n} of ${events}`);
    return performance.now() - started;
  };
  const times = { gets: [] as number[], consumer: [] as number[] };
  for (let run = 0; run < 5; run++) {
    times.gets.push(await readAll(gets));
    times.consumer.push(await readAll(broker));
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
  const g = median(times.gets);
  const c = median(times.consumer);
  console.log(`${events} events in pages of 200, medians of 5:`);
  console.log(`  message-gets       ${g.toFixed(0)} ms (${times.gets.map((t) => t.toFixed(0)).join(', ')})`);
  console.log(
    `  ordered consumer   ${c.toFixed(0)} ms (${times.consumer.map((t) => t.toFixed(0)).join(', ')})`,
  );
  console.log(`  ratio              ${(g / c).toFixed(1)}× faster through the consumer`);
} finally {
  await broker.destroyAll();
  await gets.close();
  await broker.close();
}
