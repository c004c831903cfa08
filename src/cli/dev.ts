/**
 * @module cli/dev
 * `parley dev <app-dir>`: the hub in this process, and every service module in
 * `<app-dir>/services/` as its own process, restarted with backoff when it dies, its log lines
 * prefixed with its name. `stop()` (Ctrl-C) stops the services gracefully (SIGTERM, then SIGKILL
 * after a bound) and then the hub.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ParleyError } from '../errors.ts';
import { createHub, type Hub } from '../hub/hub.ts';
import { backoffDelay } from '../resilience/backoff.ts';
import { TransportRegistry } from '../transport/from-url.ts';
import { parseHubUrl } from '../transport/tcp/frames.ts';
import type { ParleyTlsOptions } from '../transport/tcp/sockets.ts';
import { brokerRegistry } from './start.ts';

export interface DevOptions {
  appDir: string;
  /** Hub port; 0 picks a free one. Default 7400. */
  port?: number;
  host?: string;
  /** Hub data and every service's database. Default `<app-dir>/.parley`. */
  dataDir?: string;
  token?: string;
  /** Each line of output, already prefixed. Default: stdout. */
  print?: (line: string) => void;
  /** Extra environment for the service processes. */
  env?: Record<string, string>;
  /** How long a service gets to stop before SIGKILL, ms. Default 10 000. */
  stopTimeout?: number;
  /** TLS for the hub; the services read the same PARLEY_TLS_* files from the environment. */
  tls?: ParleyTlsOptions;
  /** The services' transport URL (`nats://…`, `redis://…`, …). Default: the hub. */
  transport?: string;
  /** The services' broker URL. Default: the hub's embedded broker. */
  broker?: string;
}

export interface DevProcess {
  readonly name: string;
  readonly file: string;
  /** The current process id, if the service is running. */
  readonly pid: number | undefined;
  /** How many times it was restarted after dying. */
  readonly restarts: number;
}

export interface Dev {
  readonly hub: Hub;
  readonly services: readonly DevProcess[];
  stop(): Promise<void>;
}

/** Service module files of an app: `<app-dir>/services/*.{ts,js,mjs}`, by name. */
export function serviceFiles(appDir: string): string[] {
  const dir = join(resolve(appDir), 'services');
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    throw new ParleyError('NOT_FOUND', `${dir} does not exist: an app keeps one file per service there`);
  }
  const files = names
    .filter((n) => /\.(ts|js|mjs)$/.test(n) && !n.endsWith('.d.ts') && !n.includes('.test.'))
    .sort()
    .map((n) => join(dir, n));
  if (files.length === 0) throw new ParleyError('NOT_FOUND', `no service files in ${dir}`);
  return files;
}

/**
 * The services' transport or broker URL, checked before anything starts against the registries a
 * `parley start` child opens it with; blank is unset (the hub's). Until 2026-12-03 a URL no
 * service could open (`--broker bogus://x`, or `PARLEY_BROKER=` set blank) reached every service,
 * which failed on it and was restarted, for ever, and `dev` never said no. `memory:` is refused:
 * each service is its own process, with its own memory.
 */
export function servicesUrl(what: 'transport' | 'broker', url: string | undefined): string | undefined {
  const value = url?.trim();
  if (value === undefined || value === '') return undefined;
  if (/^memory:/i.test(value)) {
    throw new ParleyError('INVALID_ARGUMENT', `no ${what} for ${value} across processes`);
  }
  if (what === 'transport') new TransportRegistry().check(value);
  else brokerRegistry().check(value);
  if (/^parley:/i.test(value)) parseHubUrl(value);
  return value;
}

/** How to run the `parley` command again as a child: same node, same loader, same script. */
function cliCommand(): { command: string; args: string[] } {
  const self = fileURLToPath(import.meta.url);
  const ext = extname(self);
  const script = join(self, '..', `main${ext}`);
  const args = [...process.execArgv];
  if (ext === '.ts' && !args.some((a) => a.includes('tsx'))) args.push('--import', 'tsx');
  return { command: process.execPath, args: [...args, script] };
}

const COLORS = [36, 33, 35, 32, 34, 91, 96, 93, 95, 92];
const LEVELS: Record<number, string> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};

/** A pino JSON line as a person reads it: `12:00:01 warn message key=value`. */
export function humanLine(line: string): string {
  if (!line.startsWith('{')) return line;
  try {
    const {
      time,
      level,
      msg,
      pid: _pid,
      hostname: _host,
      node: _node,
      ...rest
    } = JSON.parse(line) as Record<string, unknown>;
    const at = typeof time === 'number' ? new Date(time).toISOString().slice(11, 19) : '';
    const extra = Object.entries(rest)
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    return [at, LEVELS[level as number] ?? String(level), String(msg ?? ''), extra].filter(Boolean).join(' ');
  } catch {
    return line;
  }
}

export async function runDev(options: DevOptions): Promise<Dev> {
  const appDir = resolve(options.appDir);
  const files = serviceFiles(appDir);
  const transport = servicesUrl('transport', options.transport);
  const brokerUrl = servicesUrl('broker', options.broker);
  // Every service is its own process: one port for all of them is one service up and the others
  // failing on EADDRINUSE, restarted for ever (until 2026-12-03). 0 gives each a free port.
  const metricsPort = (options.env?.PARLEY_METRICS_PORT ?? process.env.PARLEY_METRICS_PORT)?.trim();
  if (files.length > 1 && metricsPort !== undefined && metricsPort !== '' && Number(metricsPort) !== 0) {
    throw new ParleyError(
      'INVALID_ARGUMENT',
      `PARLEY_METRICS_PORT=${metricsPort} cannot serve ${files.length} service processes: set it to 0 (a free port each, printed)`,
    );
  }
  const dataDir = resolve(options.dataDir ?? join(appDir, '.parley'));
  const print = options.print ?? ((line: string) => process.stdout.write(`${line}\n`));
  const stopTimeout = options.stopTimeout ?? 10_000;
  const hub = await createHub({
    host: options.host?.trim() || '127.0.0.1',
    port: options.port ?? 7400,
    dataDir,
    ...(options.token === undefined ? {} : { token: options.token }),
    ...(options.tls === undefined ? {} : { tls: options.tls }),
    log: (message) => print(`[hub] ${message}`),
  });
  print(`[hub] listening on ${hub.url}, data in ${dataDir}; the broker is served on the same port`);
  const { command, args } = cliCommand();
  const width = Math.max(...files.map((f) => basename(f, extname(f)).length));
  let stopping = false;
  const colors =
    options.print === undefined && process.stdout.isTTY === true && process.env.NO_COLOR === undefined;

  class Supervised implements DevProcess {
    child: ChildProcess | undefined;
    restarts = 0;
    private attempt = 0;
    private startedAt = 0;
    private timer: NodeJS.Timeout | undefined;
    private readonly prefix: string;

    constructor(
      readonly name: string,
      readonly file: string,
      color: number,
    ) {
      const label = `[${name.padEnd(width)}]`;
      this.prefix = colors ? `\x1b[${color}m${label}\x1b[0m` : label;
    }

    get pid() {
      return this.child?.exitCode === null ? this.child.pid : undefined;
    }

    run(): void {
      this.startedAt = Date.now();
      const child = spawn(command, [...args, 'start', this.file], {
        env: {
          ...process.env,
          ...options.env,
          PARLEY_TRANSPORT: transport ?? hub.url,
          PARLEY_BROKER: brokerUrl ?? hub.brokerUrl,
          PARLEY_DATA_DIR: dataDir,
          ...(options.token === undefined ? {} : { PARLEY_TOKEN: options.token }),
          PARLEY_SUPERVISED: '1',
        },
        // Its own process group: Ctrl-C reaches the supervisor, which stops services in order.
        // The stdin pipe closes if the supervisor dies, and the service then stops too.
        detached: true,
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      this.child = child;
      for (const stream of [child.stdout, child.stderr]) {
        if (stream === null) continue;
        createInterface({ input: stream }).on('line', (line) => print(`${this.prefix} ${humanLine(line)}`));
      }
      child.on('exit', (code, signal) => {
        if (stopping) return;
        // Up for a while: the next crash starts the backoff over.
        if (Date.now() - this.startedAt > 10_000) this.attempt = 0;
        this.attempt += 1;
        this.restarts += 1;
        const delay = 200 + backoffDelay({ initial: 500, max: 10_000, multiplier: 2 }, this.attempt);
        print(`${this.prefix} exited (${signal ?? `code ${code}`}); restarting in ${delay} ms`);
        this.timer = setTimeout(() => this.run(), delay);
      });
    }

    async stop(): Promise<void> {
      clearTimeout(this.timer);
      const child = this.child;
      if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), stopTimeout);
      await exited;
      clearTimeout(killer);
    }
  }

  const services = files.map(
    (file, i) => new Supervised(basename(file, extname(file)), file, COLORS[i % COLORS.length] as number),
  );
  for (const s of services) s.run();
  return {
    hub,
    services,
    async stop() {
      if (stopping) return;
      stopping = true;
      print('[dev] stopping services');
      await Promise.all(services.map((s) => s.stop()));
      await hub.close();
      print('[dev] stopped');
    },
  };
}
