#!/usr/bin/env node
/**
 * @module cli/main
 * The `parley` command. Every subcommand has `--help`; `PARLEY_TRANSPORT` (the hub URL),
 * `PARLEY_BROKER` and `PARLEY_TOKEN` are read where an option is not given, and TLS comes from
 * `PARLEY_TLS_CA`, `PARLEY_TLS_CERT`, `PARLEY_TLS_KEY` (PEM files) and `PARLEY_TLS_MUTUAL=1`.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { createEnvelope } from '../envelope/envelope.ts';
import { ParleyError } from '../errors.ts';
import { createHub } from '../hub/hub.ts';
import { tlsFromEnv } from '../transport/tcp/sockets.ts';
import { runDev } from './dev.ts';
import { startServices } from './start.ts';
import { callAction, openBrokerFor, showDeadLetter, showDeadLetters, showServices } from './tools.ts';

const DEFAULT_HUB = 'parley://127.0.0.1:7400';

// A variable set blank (an empty line of an env file) is unset, as for PARLEY_METRICS_HOST: until
// 2026-12-03 `PARLEY_BROKER=` was read as the URL '' (an error, and under `dev` every service
// failing on it and restarted for ever) instead of the default.
for (const name of ['PARLEY_TRANSPORT', 'PARLEY_BROKER', 'PARLEY_TOKEN', 'PARLEY_DATA_DIR']) {
  if (process.env[name]?.trim() === '') delete process.env[name];
}

const int = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number');
  return n;
};
const json = (value: string | undefined, what: string): unknown => {
  if (value === undefined) return {};
  try {
    return JSON.parse(value);
  } catch {
    throw new ParleyError('INVALID_ARGUMENT', `${what} is not JSON: ${value}`);
  }
};
const hubOption = () => new Option('--hub <url>', 'the hub').env('PARLEY_TRANSPORT').default(DEFAULT_HUB);
const tokenOption = () => new Option('--token <token>', 'shared token of the hub').env('PARLEY_TOKEN');
const brokerOption = () =>
  new Option('--broker <url>', 'broker URL (default: the one the hub offers)').env('PARLEY_BROKER');

/** Runs until SIGINT/SIGTERM, then `stop`; a second signal exits at once. */
function untilSignal(stop: () => Promise<void>): void {
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) process.exit(130);
    signalled = true;
    process.stderr.write(`${signal === 'SIGINT' ? '\n' : ''}${signal}: stopping (again to force)\n`);
    stop().then(
      () => process.exit(0),
      (error: unknown) => {
        process.stderr.write(`stop failed: ${String(error)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

const program = new Command()
  .name('parley')
  .description('Run and talk to Parley services: the hub, services, calls, events, dead letters.')
  .showHelpAfterError();

program
  .command('hub')
  .description('run the hub: the registry of nodes and the home of the embedded broker')
  .option('--host <host>', 'address to listen on', '127.0.0.1')
  .option('--port <port>', 'port (0 picks a free one)', int, 7400)
  .option('--data <dir>', 'data directory (the embedded broker lives here)', '.parley')
  .addOption(tokenOption())
  .action(async (opts: { host: string; port: number; data: string; token?: string }) => {
    const log = (message: string) => process.stdout.write(`${new Date().toISOString()} ${message}\n`);
    const tls = tlsFromEnv(process.env);
    const hub = await createHub({
      host: opts.host,
      port: opts.port,
      dataDir: opts.data,
      ...(opts.token === undefined ? {} : { token: opts.token }),
      ...(tls === undefined ? {} : { tls }),
      log,
    });
    log(`hub listening on ${hub.url}; broker ${hub.brokerUrl}`);
    untilSignal(() => hub.close());
  });

program
  .command('dev')
  .description('hub + every service of an app (<app-dir>/services/*) as its own process, restarted on crash')
  .argument('<app-dir>', 'the app directory')
  .option('--port <port>', 'hub port (0 picks a free one)', int, 7400)
  .option('--data <dir>', 'data directory (default <app-dir>/.parley)')
  .addOption(
    new Option(
      '--transport <url>',
      "the services' transport, e.g. nats://127.0.0.1:4222 (default: the hub)",
    ).env('PARLEY_TRANSPORT'),
  )
  .addOption(
    new Option('--broker <url>', "the services' broker, e.g. nats://127.0.0.1:4222 (default: the hub's)").env(
      'PARLEY_BROKER',
    ),
  )
  .addOption(tokenOption())
  .action(
    async (
      appDir: string,
      opts: { port: number; data?: string; token?: string; transport?: string; broker?: string },
    ) => {
      const tls = tlsFromEnv(process.env);
      const dev = await runDev({
        appDir,
        ...(opts.transport === undefined ? {} : { transport: opts.transport }),
        ...(opts.broker === undefined ? {} : { broker: opts.broker }),
        ...(tls === undefined ? {} : { tls }),
        port: opts.port,
        ...(opts.data === undefined ? {} : { dataDir: opts.data }),
        ...(opts.token === undefined ? {} : { token: opts.token }),
      });
      process.stdout.write(
        `[dev] ${dev.services.length} services starting: ${dev.services.map((s) => s.name).join(', ')}. Ctrl-C stops.\n`,
      );
      untilSignal(() => dev.stop());
    },
  );

program
  .command('start')
  .description('run service modules in this process (production), wired by PARLEY_TRANSPORT / PARLEY_BROKER')
  .argument('<files...>', 'files whose default export is a service module')
  .addOption(
    new Option('--transport <url>', 'memory:, parley://host:port, nats://, mqtt://, redis://, amqp://').env(
      'PARLEY_TRANSPORT',
    ),
  )
  .addOption(brokerOption())
  .addOption(new Option('--data <dir>', 'data directory of the services').env('PARLEY_DATA_DIR'))
  .addOption(tokenOption())
  .action(
    async (files: string[], opts: { transport?: string; broker?: string; data?: string; token?: string }) => {
      const running = await startServices({
        modules: files,
        ...(opts.transport === undefined ? {} : { transport: opts.transport }),
        ...(opts.broker === undefined ? {} : { broker: opts.broker }),
        ...(opts.data === undefined ? {} : { dataDir: opts.data }),
        ...(opts.token === undefined ? {} : { token: opts.token }),
      });
      const names = files.map((f) => f.replace(/^.*\//, ''));
      running.node.logger.info(`started ${names.join(', ')} as node ${running.node.id}`);
      untilSignal(() => running.stop());
      if (process.env.PARLEY_SUPERVISED === '1') {
        // Run by `parley dev`: when the supervisor is gone (its end of stdin closes), stop too.
        process.stdin.resume();
        process.stdin.on('end', () => process.kill(process.pid, 'SIGTERM'));
      }
    },
  );

program
  .command('call')
  .description('call an action: parley call orders.place \'{"items":[...]}\'')
  .argument('<target>', 'service.action')
  .argument('[json]', 'input as JSON', '{}')
  .addOption(hubOption())
  .addOption(tokenOption())
  .option('--timeout <ms>', 'deadline of the call', int, 10_000)
  .action(async (target: string, input: string, opts: { hub: string; token?: string; timeout: number }) => {
    const result = await callAction(opts.hub, target, json(input, 'input'), opts);
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  });

program
  .command('publish')
  .description("publish an event to the broker: parley publish order.placed '{...}'")
  .argument('<event>', 'event type')
  .argument('[json]', 'payload as JSON', '{}')
  .addOption(hubOption())
  .addOption(brokerOption())
  .addOption(tokenOption())
  .option('--key <key>', 'ordering key')
  .action(
    async (
      event: string,
      payload: string,
      opts: { hub: string; broker?: string; token?: string; key?: string },
    ) => {
      const data = json(payload, 'payload');
      const broker = await openBrokerFor(opts);
      try {
        const envelope = createEnvelope({ source: '/parley/cli', type: event, data });
        const receipt = await broker.publish(envelope, opts.key === undefined ? {} : { key: opts.key });
        process.stdout.write(
          `published ${event} as ${receipt.id}${receipt.duplicate ? ' (duplicate)' : ''}\n`,
        );
      } finally {
        await broker.close();
      }
    },
  );

program
  .command('services')
  .description('nodes, services, actions, instances and health, as the hub sees them')
  .addOption(hubOption())
  .addOption(tokenOption())
  .option('--json', 'print JSON')
  .action(async (opts: { hub: string; token?: string; json?: boolean }) => {
    process.stdout.write(await showServices(opts.hub, opts));
  });

const dlq = program.command('dlq').description('dead letters: list, show, replay, purge');
const filterOptions = (command: Command) =>
  command
    .option('--topic <topic>', 'only this topic')
    .option('--group <group>', 'only this consumer group')
    .addOption(hubOption())
    .addOption(brokerOption())
    .addOption(tokenOption());
type DlqOpts = { topic?: string; group?: string; hub: string; broker?: string; token?: string };
const filterOf = (opts: DlqOpts, ids: string[] = []) => ({
  ...(opts.topic === undefined ? {} : { topic: opts.topic }),
  ...(opts.group === undefined ? {} : { group: opts.group }),
  ...(ids.length === 0 ? {} : { ids: ids.map((i) => int(i)) }),
});
const withBroker = async <T>(
  opts: DlqOpts,
  work: (b: Awaited<ReturnType<typeof openBrokerFor>>) => Promise<T>,
) => {
  const broker = await openBrokerFor(opts);
  try {
    return await work(broker);
  } finally {
    await broker.close();
  }
};

filterOptions(dlq.command('list').description('list dead letters, newest last'))
  .option('--limit <n>', 'at most this many', int, 50)
  .action((opts: DlqOpts & { limit: number }) =>
    withBroker(opts, async (b) => {
      process.stdout.write(showDeadLetters(await b.deadLetters.list(filterOf(opts), opts.limit)));
    }),
  );
filterOptions(dlq.command('show').description('one dead letter, with its envelope').argument('<id>')).action(
  (id: string, opts: DlqOpts) =>
    withBroker(opts, async (b) => {
      const letter = await b.deadLetters.get(int(id));
      if (letter === undefined) throw new ParleyError('NOT_FOUND', `no dead letter ${id}`);
      process.stdout.write(showDeadLetter(letter));
    }),
);
filterOptions(
  dlq
    .command('replay')
    .description('put dead letters back in their group, attempts reset')
    .argument('[ids...]'),
).action((ids: string[], opts: DlqOpts) =>
  withBroker(opts, async (b) => {
    process.stdout.write(`replayed ${await b.deadLetters.replay(filterOf(opts, ids))}\n`);
  }),
);
filterOptions(dlq.command('purge').description('delete dead letters').argument('[ids...]'))
  .option('--all', 'with no ids or filter: really delete every dead letter')
  .action((ids: string[], opts: DlqOpts & { all?: boolean }) =>
    withBroker(opts, async (b) => {
      if (ids.length === 0 && opts.topic === undefined && opts.group === undefined && !opts.all) {
        throw new ParleyError('INVALID_ARGUMENT', 'name ids, --topic or --group, or pass --all');
      }
      process.stdout.write(`purged ${await b.deadLetters.purge(filterOf(opts, ids))}\n`);
    }),
  );

program.parseAsync(process.argv).catch((error: unknown) => {
  const e = ParleyError.from(error);
  process.stderr.write(`parley: ${e.code}: ${e.message}\n`);
  if (e.details !== undefined) process.stderr.write(`${JSON.stringify(e.details, null, 2)}\n`);
  process.exit(1);
});
