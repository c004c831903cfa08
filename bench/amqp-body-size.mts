/**
 * What RabbitMQ's rate owes to a message's body and its properties: raw amqplib on a quorum queue
 * (a topic exchange, persistent messages, publisher confirms 1,000 at a time, one consumer with a
 * prefetch of 500 acking each message), 1 → 1, for the bodies and properties a Parley event could
 * be sent with. Rounds alternate the cases, so that a slow stretch of the machine hits them alike;
 * medians. Needs RabbitMQ on 127.0.0.1:5672 (guest/guest).
 *   node --import tsx bench/amqp-body-size.mts [messages a run, default 40000] [rounds, default 5]
 */
import amqplib, { type Options } from 'amqplib';

const URL = 'amqp://guest:guest@127.0.0.1:5672';
const messages = Number(process.argv[2] ?? 40_000);
const rounds = Number(process.argv[3] ?? 5);

interface Case {
  name: string;
  bytes: number;
  props: () => Options.Publish;
}

let seq = 0;
const CASES: Case[] = [
  { name: '100 B body, no properties (the raw row)', bytes: 100, props: () => ({ persistent: true }) },
  {
    name: '100 B body, six properties (binary mode)',
    bytes: 100,
    props: () => ({
      persistent: true,
      messageId: '0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b',
      contentType: 'application/json',
      type: 'bench.tick',
      appId: '/parley/vm-16450-4c085d',
      timestamp: Date.now(),
    }),
  },
  {
    name: '300 B body, two properties (structured, as sent)',
    bytes: 300,
    props: () => ({
      persistent: true,
      messageId: `JsE0Ur_DI2yx.${(++seq).toString(36)}`,
      contentType: 'application/json',
    }),
  },
  { name: '300 B body, no properties', bytes: 300, props: () => ({ persistent: true }) },
];

async function run(c: Case): Promise<number> {
  const name = `parley-bench-size-${process.pid}-${seq++}`;
  const body = Buffer.from(JSON.stringify({ pad: 'x'.repeat(c.bytes - 10) }));
  const sub = await amqplib.connect(URL);
  const sch = await sub.createChannel();
  await sch.prefetch(500);
  await sch.assertExchange(name, 'topic', { durable: true });
  await sch.assertQueue(name, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
  await sch.bindQueue(name, name, 'bench.tick');
  let got = 0;
  let resolve: () => void = () => undefined;
  const done = new Promise<void>((r) => {
    resolve = r;
  });
  await sch.consume(name, (m) => {
    if (m === null) return;
    sch.ack(m);
    if (++got === messages) resolve();
  });
  const pub = await amqplib.connect(URL);
  const ch = await pub.createConfirmChannel();
  const t0 = performance.now();
  for (let i = 0; i < messages; i++) {
    if (!ch.publish(name, 'bench.tick', body, c.props())) await new Promise((r) => ch.once('drain', r));
    if (i % 1000 === 999) await ch.waitForConfirms();
  }
  await ch.waitForConfirms();
  await done;
  const rate = messages / ((performance.now() - t0) / 1000);
  await pub.close();
  await sch.deleteQueue(name);
  await sch.deleteExchange(name);
  await sub.close();
  return rate;
}

const rates = new Map<Case, number[]>(CASES.map((c) => [c, []]));
for (let r = 0; r < rounds; r++) {
  for (const c of CASES) rates.get(c)?.push(await run(c));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
process.stdout.write(`| case | median msg/s | min–max |\n| --- | --- | --- |\n`);
for (const c of CASES) {
  const xs = rates.get(c) ?? [];
  const k = (x: number) => `${(x / 1000).toFixed(1)} k`;
  process.stdout.write(`| ${c.name} | ${k(median(xs))} | ${k(Math.min(...xs))}–${k(Math.max(...xs))} |\n`);
}
