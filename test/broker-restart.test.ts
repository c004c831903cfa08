/**
 * A broker restart during traffic, per real broker: a publisher publishes numbered messages one
 * after another, awaiting each confirmation (a publish that fails while the broker is away is
 * retried: it may or may not have been stored, which is where duplicates come from); two
 * consumers of one group consume concurrently; midway the broker process is stopped and, about a
 * second later, started again. Every confirmed message must be consumed (lost = 0), nothing
 * unpublished may appear (unexpected = 0); duplicates are counted and reported.
 *
 * NATS and Redis run as private servers on a free loopback port with their own data directory
 * (JetStream file storage; Redis AOF with `appendfsync always`), so the machine's brokers are not
 * touched. RabbitMQ is the machine's node, restarted with `rabbitmqctl stop_app` / `start_app`
 * (the Erlang VM stays up; quorum queues survive); `start_app` always runs, and the case waits
 * for port 5672 before it ends. MQTT is a private Mosquitto with `persistence true`, its
 * consumers with stable `member` names so their sessions resume; Mosquitto 2.0 keeps the sessions
 * but not their shared subscriptions, so between its restart and a member subscribing again the
 * group has no subscription and the server drops what is published to it (PUBACK reason 16).
 * That window is the case's `gap`: what is lost in it is counted apart, lost = 0 holds outside it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createAmqpBroker } from '../src/adapters/amqp/amqp-broker.ts';
import { createMqttBroker } from '../src/adapters/mqtt/mqtt-broker.ts';
import { createNatsBroker } from '../src/adapters/nats/nats-broker.ts';
import { createRedisBroker } from '../src/adapters/redis/redis-broker.ts';
import type { Broker, Consumer } from '../src/broker/broker.ts';
import { ParleyError } from '../src/errors.ts';
import { createEnvelope } from '../src/index.ts';
import { BROKERS, needBroker } from './brokers.ts';
import {
  cleanupPrivateServers,
  freePort,
  MOSQUITTO,
  needBinary,
  PrivateServer,
  privateMosquitto,
  waitForPort,
} from './private-server.ts';

/** Messages per case. */
const COUNT = 2000;
/** Consumer lease: what a consumer held when its ack was lost comes back after it. */
const LEASE = 4000;
/** How long the broker stays down. */
const DOWN_MS = 1000;
const CASE_TIMEOUT = 90_000;

// --- processes and ports ---

let rabbitStopped = false;
/** The cases still running: a case the runner ended early (an unhandled rejection) still cleans up. */
const running = new Set<Promise<unknown>>();

after(async () => {
  await Promise.race([Promise.allSettled(running), sleep(60_000, undefined, { ref: false })]);
  cleanupPrivateServers();
  if (rabbitStopped) await rabbitmqctl('start_app').catch(() => undefined);
});

/** Runs a case's body, known to `after` until it has finished (cleanup included). */
function tracked(body: () => Promise<void>): Promise<void> {
  const run = body();
  running.add(run);
  void run.catch(() => undefined).finally(() => running.delete(run));
  return run;
}

function rabbitmqctl(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('rabbitmqctl', args, { timeout: 60_000 }, (error, stdout, stderr) =>
      error === null
        ? resolve(stdout)
        : reject(new Error(`rabbitmqctl ${args.join(' ')}: ${stderr || error.message}`)),
    );
  });
}

// --- the scenario ---

interface Setup {
  name: string;
  /**
   * A broker instance (a connection of its own), for the publisher or one consumer; `who` is
   * stable across the case (`publisher`, `consumer-1`, `consumer-2`).
   */
  connect(log: (m: string) => void, who: string): Promise<Broker>;
  /** Stops the broker, waits about a second, starts it again; resolves once it answers. */
  restart(): Promise<void>;
  /** Extra text for a failure (the server's log). */
  context?(): string;
  /**
   * A documented window in which the broker itself drops confirmed messages (MQTT on Mosquitto
   * 2.0: see the case). It opens when the restart begins and closes at the first adapter log line
   * matching `closedBy`. A message whose confirmed publish was sent while it was open is exposed:
   * if lost, it is counted apart. The window must close, and every other message must still be
   * consumed (lost = 0 outside it).
   */
  gap?: { closedBy: RegExp; what: string };
}

/**
 * Publish errors after which the publisher tries the same envelope again: the broker is away
 * (UNAVAILABLE), or the confirmation did not come in time (DEADLINE_EXCEEDED: nats.js buffers a
 * publish while it reconnects and times the request out). Either way the message may or may not
 * be stored. Any other error fails the case.
 */
const RETRY_ON = new Set(['UNAVAILABLE', 'DEADLINE_EXCEEDED']);

async function restartDuringTraffic(t: TestContext, setup: Setup): Promise<void> {
  const started = Date.now();
  const logs: string[] = [];
  let restartBegan = false;
  let gapClosed = false;
  const log = (who: string) => (m: string) => {
    logs.push(`${Date.now() - started}ms ${who}: ${m}`);
    if (restartBegan && !gapClosed && setup.gap?.closedBy.test(m) === true) {
      gapClosed = true;
      logs.push(`${Date.now() - started}ms test: the gap closed`);
    }
  };
  const topic = `restart.${setup.name}`;
  const group = 'workers';
  const brokers: Broker[] = [];
  const consumers: Consumer[] = [];
  const consumed: number[] = [];
  const unique = new Set<number>();
  const perConsumer: number[] = [];
  const confirmed = new Set<number>();
  /** Confirmed after the restart began by a publish sent while the gap was open. */
  const exposed = new Set<number>();
  const retriedBy = new Map<string, number>();
  let retried = 0;
  let restarting: Promise<void> | undefined;
  let restartTook = 0;
  let stop = false;
  const deadline = started + CASE_TIMEOUT - 15_000;
  try {
    const publisher = await setup.connect(log('publisher'), 'publisher');
    brokers.push(publisher);
    for (const [c, who] of ['consumer-1', 'consumer-2'].entries()) {
      perConsumer[c] = 0;
      const broker = await setup.connect(log(who), who);
      brokers.push(broker);
      consumers.push(
        await broker.subscribe(
          { topic, group, lease: LEASE, maxInFlight: 32, startFrom: 'beginning' },
          async (d) => {
            const n = d.envelope.data as number;
            consumed.push(n);
            perConsumer[c] = (perConsumer[c] ?? 0) + 1;
            unique.add(n);
          },
        ),
      );
    }

    for (let i = 0; i < COUNT && !stop; i++) {
      if (i === COUNT / 2) {
        const t0 = Date.now();
        restartBegan = true;
        logs.push(`${t0 - started}ms test: restarting the broker after ${confirmed.size} confirmations`);
        restarting = setup.restart().then(() => {
          restartTook = Date.now() - t0;
          logs.push(`${Date.now() - started}ms test: the broker answers again`);
        });
        restarting.catch(() => undefined);
      }
      const envelope = createEnvelope({ source: '/test/restart', type: topic, data: i });
      for (;;) {
        // Sent before the gap closed (a publish sent after it is routed to the group again).
        const sentInGap = setup.gap !== undefined && !gapClosed;
        try {
          await publisher.publish(envelope);
          confirmed.add(i);
          if (sentInGap && restartBegan) exposed.add(i);
          break;
        } catch (error) {
          const e = ParleyError.from(error);
          if (!RETRY_ON.has(e.code) || Date.now() > deadline) throw e;
          retried++;
          retriedBy.set(e.code, (retriedBy.get(e.code) ?? 0) + 1);
          if (retried <= 3)
            logs.push(`${Date.now() - started}ms test: publish ${i} failed: ${e.code} ${e.message}`);
          await sleep(100);
        }
      }
    }
    await restarting;

    // Every confirmed message consumed (those dropped in a gap never come), then one more lease
    // for late redeliveries (duplicates).
    const missing = () => [...confirmed].filter((n) => !unique.has(n));
    const due = () => missing().filter((n) => !exposed.has(n));
    const waitUntil = Math.min(deadline, Date.now() + 30_000);
    while (due().length > 0 && Date.now() < waitUntil) await sleep(50);
    if (due().length === 0) await sleep(LEASE + 1500);

    const lost = due();
    const lostInGap = missing().filter((n) => exposed.has(n));
    const unexpected = [...unique].filter((n) => !(Number.isInteger(n) && n >= 0 && n < COUNT));
    const duplicates = consumed.length - unique.size;
    const codes = [...retriedBy].map(([code, n]) => `${code} ${n}`).join(', ');
    t.diagnostic(
      `${setup.name}: published ${COUNT} (confirmed ${confirmed.size}, retried ${retried}${codes === '' ? '' : `: ${codes}`}), ` +
        `consumed ${consumed.length} (${perConsumer.join(' + ')}), lost ${lost.length}, unexpected ${unexpected.length}, duplicates ${duplicates}; ` +
        (setup.gap === undefined
          ? ''
          : `dropped in the gap (${setup.gap.what}) ${lostInGap.length} of ${exposed.size} sent in it${lostInGap.length === 0 ? '' : `: ${lostInGap.slice(0, 10).join(' ')}`}; `) +
        `restart took ${restartTook} ms, case ${Date.now() - started} ms`,
    );
    const why = () =>
      `adapter logs (last 40):\n${logs.slice(-40).join('\n')}\n${setup.context?.() ?? ''}`.slice(0, 20_000);
    assert.equal(confirmed.size, COUNT, `every publish was confirmed in the end\n${why()}`);
    if (setup.gap !== undefined) assert.ok(gapClosed, `the gap closed (${setup.gap.what})\n${why()}`);
    assert.deepEqual(lost.slice(0, 20), [], `lost = 0 (${lost.length} lost)\n${why()}`);
    assert.deepEqual(unexpected, [], 'unexpected = 0');
  } finally {
    stop = true;
    await restarting?.catch(() => undefined);
    await Promise.allSettled(consumers.map((c) => c.close()));
    await Promise.allSettled(brokers.map((b) => b.close()));
  }
}

// --- the cases ---

/**
 * A private Mosquitto whose sessions outlive a clean stop: `persistence` writes sessions (their
 * queued and unacknowledged messages) and retained messages on SIGTERM and reads them back at
 * start. Mosquitto 2.0 does not write shared subscriptions (the consumer subscribes again on a
 * resumed session: `mqtt-consumer.ts`).
 */
function mosquittoServer(): Promise<PrivateServer> {
  return privateMosquitto('mqtt', (dir) => [
    'persistence true',
    `persistence_location ${dir}/`,
    // The autosave only matters for a crash (a clean stop always saves); keep it off the hot path.
    'autosave_interval 60',
    // A member's share queues while it is away: no cap, so nothing is dropped for a full queue.
    'max_queued_messages 0',
    // `persistent_client_expiration` stays unset: sessions expire by their own MQTT 5 interval
    // only (the adapter's default, 1 h).
  ]);
}

const natsSkip = needBinary('nats-server', '--version');
const redisSkip = needBinary('redis-server', '--version');
const mosquittoSkip = needBinary(MOSQUITTO, '-h');
const rabbitSkip = (await needBroker('rabbitmq')) || needBinary('rabbitmqctl', 'help');

describe('a broker restart during traffic: lost = 0, unexpected = 0, duplicates counted', () => {
  it(
    'nats jetstream (private nats-server, file storage)',
    {
      skip: natsSkip,
      timeout: CASE_TIMEOUT,
    },
    (t) =>
      tracked(async () => {
        const server = new PrivateServer(
          'nats-server',
          (port, dir) => ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', join(dir, 'data')],
          await freePort(),
          'nats',
        );
        try {
          await server.start();
          await restartDuringTraffic(t, {
            name: 'nats',
            connect: (log) =>
              createNatsBroker({
                url: `nats://127.0.0.1:${server.port}`,
                prefix: 'restart',
                storage: 'file',
                log,
              }),
            restart: () => server.restart(DOWN_MS),
            context: () => `nats-server log:\n${server.tail()}`,
          });
        } finally {
          await server.dispose();
        }
      }),
  );

  it(
    'redis streams (private redis-server, AOF appendfsync always)',
    {
      skip: redisSkip,
      timeout: CASE_TIMEOUT,
    },
    (t) =>
      tracked(async () => {
        const server = new PrivateServer(
          'redis-server',
          (port, dir) => [
            '--bind',
            '127.0.0.1',
            '--port',
            String(port),
            '--appendonly',
            'yes',
            '--appendfsync',
            'always',
            '--dir',
            dir,
            '--save',
            '',
            '--daemonize',
            'no',
          ],
          await freePort(),
          'redis',
        );
        try {
          await server.start();
          await restartDuringTraffic(t, {
            name: 'redis',
            connect: (log) =>
              createRedisBroker({ url: `redis://127.0.0.1:${server.port}`, prefix: 'restart', log }),
            restart: () => server.restart(DOWN_MS),
            context: () => `redis-server log:\n${server.tail()}`,
          });
        } finally {
          await server.dispose();
        }
      }),
  );

  it(
    'mqtt (private mosquitto, persistence on)',
    {
      skip: mosquittoSkip,
      timeout: CASE_TIMEOUT,
    },
    (t) =>
      tracked(async () => {
        const server = await mosquittoServer();
        try {
          await server.start();
          await restartDuringTraffic(t, {
            name: 'mqtt',
            // Sessions and retained messages live in the private server: disposing it removes them.
            connect: (log, who) =>
              createMqttBroker({
                url: `mqtt://127.0.0.1:${server.port}`,
                prefix: 'restart',
                // Stable and distinct: each consumer resumes its own session after the restart.
                member: who,
                log,
              }),
            restart: () => server.restart(DOWN_MS),
            context: () => `mosquitto log:\n${server.tail()}`,
            gap: {
              // The consumers' log line when their resumed session has its subscriptions again.
              closedBy: /^MQTT: subscribed workers to restart\.mqtt again/,
              what: 'the group had no subscription on the restarted Mosquitto until a member subscribed again',
            },
          });
        } finally {
          await server.dispose();
        }
      }),
  );

  it(
    'rabbitmq (the machine node: rabbitmqctl stop_app, start_app; quorum queues)',
    {
      skip: rabbitSkip,
      timeout: CASE_TIMEOUT,
    },
    (t) =>
      tracked(async () => {
        const prefix = `ptest${process.pid}restart`;
        const made: { destroyAll(): Promise<void> }[] = [];
        try {
          await restartDuringTraffic(t, {
            name: 'rabbitmq',
            connect: async (log) => {
              const broker = await createAmqpBroker({
                url: BROKERS.rabbitmq.url,
                prefix,
                queueType: 'quorum',
                log,
              });
              made.push(broker);
              return broker;
            },
            restart: async () => {
              rabbitStopped = true;
              try {
                await rabbitmqctl('stop_app');
                await sleep(DOWN_MS);
              } finally {
                await rabbitmqctl('start_app');
                rabbitStopped = false;
              }
              await waitForPort(BROKERS.rabbitmq.port, 30_000);
            },
          });
        } finally {
          if (rabbitStopped) {
            await rabbitmqctl('start_app').catch(() => undefined);
            rabbitStopped = false;
          }
          await waitForPort(BROKERS.rabbitmq.port, 30_000);
          for (const broker of made) await broker.destroyAll().catch(() => undefined);
        }
      }),
  );
});

describe('mqtt: a restarted mosquitto', { skip: mosquittoSkip }, () => {
  it(
    'a consumer subscribes again on its resumed session (Mosquitto 2.0 keeps sessions, not shared subscriptions)',
    {
      timeout: 30_000,
    },
    () =>
      tracked(async () => {
        const server = await mosquittoServer();
        const made: Broker[] = [];
        try {
          await server.start();
          const url = `mqtt://127.0.0.1:${server.port}`;
          const publisher = await createMqttBroker({ url, prefix: 'resub', log: () => {} });
          made.push(publisher);
          const member = await createMqttBroker({ url, prefix: 'resub', member: 'm1', log: () => {} });
          made.push(member);
          const got: string[] = [];
          await member.subscribe({ topic: 'resub.t', group: 'g' }, async (d) => {
            got.push(String(d.envelope.data));
          });
          const send = (data: string) =>
            publisher.publish(createEnvelope({ source: '/t', type: 'resub.t', data }));
          await send('before');
          const first = Date.now() + 5000;
          while (!got.includes('before') && Date.now() < first) await sleep(20);
          assert.deepEqual(got, ['before']);
          await server.restart(DOWN_MS);
          // The connections come back on their own; until the member's SUBSCRIBE, a publish is
          // dropped (no subscriber), so publish until one arrives. Without the new subscription
          // none ever would.
          const until = Date.now() + 15_000;
          let k = 0;
          while (!got.some((g) => g.startsWith('after')) && Date.now() < until) {
            await send(`after-${k++}`).catch(() => undefined);
            await sleep(100);
          }
          assert.ok(
            got.some((g) => g.startsWith('after')),
            `the group got nothing published after the restart (${k} tried)\n${server.tail()}`,
          );
        } finally {
          await Promise.allSettled(made.map((b) => b.close()));
          await server.dispose();
        }
      }),
  );
});
