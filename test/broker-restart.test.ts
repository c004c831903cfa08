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
 * for port 5672 before it ends.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createAmqpBroker } from '../src/adapters/amqp/amqp-broker.ts';
import { createNatsBroker } from '../src/adapters/nats/nats-broker.ts';
import { createRedisBroker } from '../src/adapters/redis/redis-broker.ts';
import type { Broker, Consumer } from '../src/broker/broker.ts';
import { ParleyError } from '../src/errors.ts';
import { createEnvelope } from '../src/index.ts';
import { BROKERS, needBroker, reachable } from './brokers.ts';

/** Messages per case. */
const COUNT = 2000;
/** Consumer lease: what a consumer held when its ack was lost comes back after it. */
const LEASE = 4000;
/** How long the broker stays down. */
const DOWN_MS = 1000;
const CASE_TIMEOUT = 90_000;

// --- processes and ports ---

const children = new Set<ChildProcess>();
const dirs: string[] = [];
let rabbitStopped = false;
/** The cases still running: a case the runner ended early (an unhandled rejection) still cleans up. */
const running = new Set<Promise<unknown>>();

after(async () => {
  await Promise.race([Promise.allSettled(running), sleep(60_000, undefined, { ref: false })]);
  for (const c of children) c.kill('SIGKILL');
  children.clear();
  if (rabbitStopped) await rabbitmqctl('start_app').catch(() => undefined);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Runs a case's body, known to `after` until it has finished (cleanup included). */
function tracked(body: () => Promise<void>): Promise<void> {
  const run = body();
  running.add(run);
  void run.catch(() => undefined).finally(() => running.delete(run));
  return run;
}

/** A port nobody listens on now (listen on 0, close). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function waitForPort(port: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!(await reachable(port))) {
    if (Date.now() > until) throw new Error(`nothing answers on 127.0.0.1:${port} after ${ms} ms`);
    await sleep(50);
  }
}

/** `false` when `bin` runs; otherwise why the case is skipped (a failure under CI=true). */
function needBinary(bin: string, versionArg: string): false | string {
  const r = spawnSync(bin, [versionArg], { stdio: 'ignore', timeout: 10_000 });
  if (r.error === undefined) return false;
  const why = `${bin} cannot be run (${r.error.message})`;
  if (process.env.CI === 'true') throw new Error(`CI: ${why}`);
  return `${why}: skipped`;
}

/** A broker server of this test's own: a free loopback port, a data directory in a temp dir. */
class PrivateServer {
  readonly dir: string;
  readonly logFile: string;
  private proc: ChildProcess | undefined;

  constructor(
    private readonly bin: string,
    private readonly args: (port: number, dir: string) => string[],
    readonly port: number,
    name: string,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), `parley-restart-${name}-`));
    dirs.push(this.dir);
    this.logFile = join(this.dir, 'server.log');
  }

  async start(): Promise<void> {
    const fd = openSync(this.logFile, 'a');
    try {
      const proc = spawn(this.bin, this.args(this.port, this.dir), { stdio: ['ignore', fd, fd] });
      children.add(proc);
      proc.once('exit', () => children.delete(proc));
      this.proc = proc;
    } finally {
      closeSync(fd);
    }
    await waitForPort(this.port, 15_000);
  }

  /** Stops the process (SIGTERM: a clean shutdown) and waits for it to exit. */
  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGTERM');
    const killer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
  }

  async restart(): Promise<void> {
    await this.stop();
    await sleep(DOWN_MS);
    await this.start();
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  tail(lines = 30): string {
    try {
      return readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }
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
  /** A broker instance (a connection of its own), for the publisher or one consumer. */
  connect(log: (m: string) => void): Promise<Broker>;
  /** Stops the broker, waits about a second, starts it again; resolves once it answers. */
  restart(): Promise<void>;
  /** Extra text for a failure (the server's log). */
  context?(): string;
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
  const log = (who: string) => (m: string) => logs.push(`${Date.now() - started}ms ${who}: ${m}`);
  const topic = `restart.${setup.name}`;
  const group = 'workers';
  const brokers: Broker[] = [];
  const consumers: Consumer[] = [];
  const consumed: number[] = [];
  const unique = new Set<number>();
  const perConsumer: number[] = [];
  const confirmed = new Set<number>();
  const retriedBy = new Map<string, number>();
  let retried = 0;
  let restarting: Promise<void> | undefined;
  let restartTook = 0;
  let stop = false;
  const deadline = started + CASE_TIMEOUT - 15_000;
  try {
    const publisher = await setup.connect(log('publisher'));
    brokers.push(publisher);
    for (const [c, who] of ['consumer-1', 'consumer-2'].entries()) {
      perConsumer[c] = 0;
      const broker = await setup.connect(log(who));
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
        logs.push(`${t0 - started}ms test: restarting the broker after ${confirmed.size} confirmations`);
        restarting = setup.restart().then(() => {
          restartTook = Date.now() - t0;
          logs.push(`${Date.now() - started}ms test: the broker answers again`);
        });
        restarting.catch(() => undefined);
      }
      const envelope = createEnvelope({ source: '/test/restart', type: topic, data: i });
      for (;;) {
        try {
          await publisher.publish(envelope);
          confirmed.add(i);
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

    // Every confirmed message consumed, then one more lease for late redeliveries (duplicates).
    const missing = () => [...confirmed].filter((n) => !unique.has(n));
    const waitUntil = Math.min(deadline, Date.now() + 30_000);
    while (missing().length > 0 && Date.now() < waitUntil) await sleep(50);
    if (missing().length === 0) await sleep(LEASE + 1500);

    const lost = missing();
    const unexpected = [...unique].filter((n) => !(Number.isInteger(n) && n >= 0 && n < COUNT));
    const duplicates = consumed.length - unique.size;
    const codes = [...retriedBy].map(([code, n]) => `${code} ${n}`).join(', ');
    t.diagnostic(
      `${setup.name}: published ${COUNT} (confirmed ${confirmed.size}, retried ${retried}${codes === '' ? '' : `: ${codes}`}), ` +
        `consumed ${consumed.length} (${perConsumer.join(' + ')}), lost ${lost.length}, unexpected ${unexpected.length}, duplicates ${duplicates}; ` +
        `restart took ${restartTook} ms, case ${Date.now() - started} ms`,
    );
    const why = () =>
      `adapter logs (last 40):\n${logs.slice(-40).join('\n')}\n${setup.context?.() ?? ''}`.slice(0, 20_000);
    assert.equal(confirmed.size, COUNT, `every publish was confirmed in the end\n${why()}`);
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

const natsSkip = needBinary('nats-server', '--version');
const redisSkip = needBinary('redis-server', '--version');
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
            restart: () => server.restart(),
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
            restart: () => server.restart(),
            context: () => `redis-server log:\n${server.tail()}`,
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
