/**
 * The `parley` command as a user runs it: separate processes, real output, exit codes.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { type AddressInfo, createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { type DevOptions, runDev, servicesUrl } from '../src/cli/dev.ts';
import { startServices } from '../src/cli/start.ts';
import { createEmbeddedBroker, createHub, defineServiceModule, ParleyError, queryHub } from '../src/index.ts';
import { silent, tempDir } from './helpers.ts';

const run = promisify(execFile);
const dir = tempDir('cli');
const CLI = ['--import', 'tsx', 'src/cli/main.ts'];

async function parley(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [...CLI, ...args], { timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('parley --help', () => {
  it('every command explains itself', async () => {
    const commands = [
      [],
      ['hub'],
      ['dev'],
      ['start'],
      ['call'],
      ['publish'],
      ['services'],
      ['dlq'],
      ['dlq', 'list'],
      ['dlq', 'show'],
      ['dlq', 'replay'],
      ['dlq', 'purge'],
    ];
    const results = await Promise.all(commands.map((c) => parley(...c, '--help')));
    for (const [i, r] of results.entries()) {
      const name = ['parley', ...(commands[i] ?? [])].join(' ');
      assert.equal(r.code, 0, `${name} --help exits 0`);
      assert.match(r.stdout, new RegExp(`^Usage: ${name}`), name);
    }
  });
});

describe('parley dev, call, services', () => {
  let dev: ChildProcess | undefined;
  after(() => {
    if (dev?.exitCode === null) dev.kill('SIGKILL');
  });

  it('runs the shop as processes, answers calls, restarts a killed service, stops cleanly on Ctrl-C', {
    timeout: 90_000,
  }, async () => {
    dev = spawn(
      process.execPath,
      [...CLI, 'dev', 'examples/shop', '--port', '0', '--data', dir.file('dev')],
      {
        env: { ...process.env, PARLEY_LOG_LEVEL: 'warn', PARLEY_GATEWAY_PORT: '0' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const out: string[] = [];
    createInterface({ input: dev.stdout as NodeJS.ReadableStream }).on('line', (l) => void out.push(l));
    createInterface({ input: dev.stderr as NodeJS.ReadableStream }).on('line', (l) => void out.push(l));
    let hub: string | undefined;
    for (let t = 0; t < 200 && hub === undefined; t++) {
      hub = out.map((l) => /listening on (parley:\/\/\S+),/.exec(l)?.[1]).find(Boolean);
      await sleep(25);
    }
    assert.ok(hub, `dev printed its hub: ${out.join('\n')}`);
    const pids = async () => {
      const s = await queryHub(hub as string);
      return new Map(
        s.nodes.flatMap((n) => n.info.services.map((x) => [x.name, Number(n.info.labels?.pid)] as const)),
      );
    };
    for (let t = 0; t < 200 && (await pids()).size < 7; t++) await sleep(50);
    const before = await pids();
    assert.equal(before.size, 7, 'six services and the gateway registered');

    const listing = await parley('services', '--hub', hub);
    assert.equal(listing.code, 0);
    for (const s of [
      'catalog',
      'gateway-push',
      'inventory',
      'notifications',
      'orders',
      'payments',
      'shipping',
    ]) {
      assert.match(listing.stdout, new RegExp(`^${s}\\s+1\\.0\\.0\\s+1\\s`, 'm'), `services lists ${s}`);
    }

    const products = await parley('call', 'catalog.list', '{}', '--hub', hub);
    assert.equal(products.code, 0, products.stderr);
    assert.ok((JSON.parse(products.stdout) as { products: unknown[] }).products.length >= 4);

    const badJson = await parley('call', 'orders.place', '{nope', '--hub', hub);
    assert.equal(badJson.code, 1);
    assert.match(badJson.stderr, /INVALID_ARGUMENT: input is not JSON/);
    const invalid = await parley('call', 'orders.place', '{"customer":""}', '--hub', hub);
    assert.equal(invalid.code, 1);
    assert.match(invalid.stderr, /INVALID_ARGUMENT/);
    assert.match(invalid.stderr, /violations/);
    const unknown = await parley('call', 'nothing.here', '{}', '--hub', hub);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /UNAVAILABLE: no instance of nothing/);

    const catalogPid = before.get('catalog') as number;
    process.kill(catalogPid, 'SIGKILL');
    let after_ = before;
    for (let t = 0; t < 300; t++) {
      after_ = await pids();
      if (after_.has('catalog') && after_.get('catalog') !== catalogPid) break;
      await sleep(50);
    }
    assert.notEqual(after_.get('catalog'), catalogPid, 'catalog came back as a new process');
    assert.ok(
      out.some((l) => /\[catalog\s*\] exited \(SIGKILL\); restarting/.test(l)),
      'the restart is reported',
    );
    assert.equal((await parley('call', 'catalog.list', '{}', '--hub', hub)).code, 0, 'and answers again');

    const children = [...after_.values()];
    dev.kill('SIGINT');
    const [code] = (await once(dev, 'exit')) as [number | null];
    assert.equal(code, 0, out.slice(-10).join('\n'));
    assert.ok(out.some((l) => l.includes('[dev] stopped')));
    for (const pid of children) assert.equal(alive(pid), false, `service process ${pid} is gone`);
  });
});

describe('parley publish and dlq', () => {
  it('publishes, then lists, shows, replays and purges dead letters', { timeout: 60_000 }, async () => {
    const url = `embedded:${dir.file('dlq.db')}`;
    const published = await parley('publish', 'calc.done', '{"n":1}', '--broker', url);
    assert.equal(published.code, 0, published.stderr);
    assert.match(published.stdout, /^published calc\.done as [0-9a-f-]{36}/);

    // A consumer that refuses it for good: straight to the dead-letter store.
    const broker = createEmbeddedBroker({ path: dir.file('dlq.db') });
    const consumer = await broker.subscribe(
      { topic: 'calc.done', group: 'billing', startFrom: 'beginning' },
      async () => {
        throw new ParleyError('INVALID_ARGUMENT', 'n must be even');
      },
    );
    for (let t = 0; t < 100 && broker.stats().dead === 0; t++) await sleep(20);
    await consumer.close();
    await broker.close();

    const list = await parley('dlq', 'list', '--broker', url);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^1\s+calc\.done\s+billing\s+INVALID_ARGUMENT\s+1\s+\S+\s+n must be even$/m);
    const show = await parley('dlq', 'show', '1', '--broker', url);
    const letter = JSON.parse(show.stdout) as { code: string; envelope: { type: string; data: unknown } };
    assert.equal(letter.code, 'INVALID_ARGUMENT');
    assert.equal(letter.envelope.type, 'calc.done');
    assert.deepEqual(letter.envelope.data, { n: 1 });
    assert.equal((await parley('dlq', 'show', '99', '--broker', url)).code, 1);
    const refused = await parley('dlq', 'purge', '--broker', url);
    assert.equal(refused.code, 1, 'purging everything needs --all');
    assert.match(refused.stderr, /--all/);
    assert.match((await parley('dlq', 'replay', '1', '--broker', url)).stdout, /^replayed 1$/m);
    assert.match((await parley('dlq', 'list', '--broker', url)).stdout, /^no dead letters$/m);

    // Replayed: the group gets it again.
    const again = createEmbeddedBroker({ path: dir.file('dlq.db') });
    const got: unknown[] = [];
    const c2 = await again.subscribe(
      { topic: 'calc.done', group: 'billing' },
      async (d) => void got.push(d.envelope.data),
    );
    for (let t = 0; t < 100 && got.length === 0; t++) await sleep(20);
    await c2.close();
    await again.close();
    assert.deepEqual(got, [{ n: 1 }]);
    assert.match((await parley('dlq', 'purge', '--all', '--broker', url)).stdout, /^purged 0$/m);
  });
});

describe('blank and unusable URLs', () => {
  it('a blank PARLEY_BROKER / PARLEY_TRANSPORT is unset: the tool asks the hub for its broker', async () => {
    const broker = createEmbeddedBroker({ path: ':memory:' });
    const hub = await createHub({ broker });
    try {
      // An empty line of an env file: read as the broker URL '' until 2026-12-03 ("no broker for ").
      const { stdout, stderr } = await run(process.execPath, [...CLI, 'dlq', 'list', '--hub', hub.url], {
        timeout: 30_000,
        env: { ...process.env, PARLEY_BROKER: '', PARLEY_TOKEN: ' ' },
      }).catch((error: { stdout?: string; stderr?: string }) => ({
        stdout: error.stdout ?? '',
        stderr: error.stderr ?? '',
      }));
      assert.equal(stderr, '');
      assert.match(stdout, /^no dead letters$/m);
    } finally {
      await hub.close();
      await broker.close();
    }
  });

  it('parley dev refuses a transport, broker or metrics port its services cannot use, before it starts anything', async () => {
    // A port of our own (taken from 0): no service could listen there.
    const held = createServer().listen(0, '127.0.0.1');
    await once(held, 'listening');
    const refused: Partial<DevOptions>[] = [
      { broker: 'bogus://x' },
      { transport: 'memory:' },
      { transport: 'parley://127.0.0.1' },
      // One metrics port for seven processes: at best one up, the others restarted for ever.
      { env: { PARLEY_METRICS_PORT: String((held.address() as AddressInfo).port) } },
    ];
    after(() => held.close());
    for (const urls of refused) {
      const lines: string[] = [];
      // Until 2026-12-03 every service failed on it and was restarted, for ever.
      let outcome: unknown;
      try {
        const dev = await runDev({
          appDir: 'examples/shop',
          port: 0,
          dataDir: dir.file('dev-refused'),
          print: (l) => void lines.push(l),
          stopTimeout: 2000,
          ...urls,
        });
        await dev.stop();
      } catch (error) {
        outcome = error;
      }
      assert.ok(outcome instanceof ParleyError, `${JSON.stringify(urls)}: refused`);
      assert.equal(outcome.code, 'INVALID_ARGUMENT');
      assert.deepEqual(lines, [], 'no hub, no service started');
    }
    assert.equal(servicesUrl('broker', '  '), undefined, 'blank is the hub');
    assert.equal(servicesUrl('transport', 'nats://127.0.0.1:4222'), 'nats://127.0.0.1:4222');
  });

  it('startServices reads a blank PARLEY_BROKER as unset', async () => {
    const saved = process.env.PARLEY_BROKER;
    process.env.PARLEY_BROKER = '';
    try {
      const running = await startServices({
        modules: [defineServiceModule({ name: 'idle', setup: () => ({ services: [] }) })],
        transport: 'memory:',
        dataDir: dir.file('blank-env'),
        metrics: false,
        tracing: false,
        logger: silent,
      });
      await running.stop();
    } finally {
      if (saved === undefined) delete process.env.PARLEY_BROKER;
      else process.env.PARLEY_BROKER = saved;
    }
  });
});

describe('startServices refusing a transport', () => {
  it('closes what the modules and the broker opened', async () => {
    let closed = 0;
    const module = defineServiceModule({
      name: 'owner',
      setup: () => ({ services: [], close: () => void closed++ }),
    });
    const refused = await startServices({
      modules: [module],
      transport: 'bogus://x',
      broker: `embedded:${dir.file('refused.db')}`,
      dataDir: dir.file('refused'),
      metrics: false,
      tracing: false,
      logger: silent,
    }).catch((error: unknown) => error);
    assert.ok(refused instanceof ParleyError && refused.code === 'INVALID_ARGUMENT', String(refused));
    // Until 2026-12-03 they stayed open (a broker connection kept the process from ending).
    assert.equal(closed, 1);
  });
});
