/**
 * A broker server of a test's own: the machine's binary on a free loopback port, with its data
 * and log in a temp dir, so the machine's brokers are not touched (restarts, special settings).
 * `cleanupPrivateServers()` in an `after` hook kills what is left and removes the dirs.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ParleyNode } from '../src/index.ts';
import { reachable } from './brokers.ts';

const children = new Set<ChildProcess>();
const dirs: string[] = [];

/**
 * The nodes and the private server of one `describe` block: after it, the nodes are stopped, the
 * server disposed of, and whatever private server is left killed.
 */
export function privateServerScope(): { nodes: ParleyNode[]; use(server: PrivateServer): PrivateServer } {
  const nodes: ParleyNode[] = [];
  const servers: PrivateServer[] = [];
  after(async () => {
    await Promise.allSettled(nodes.map((n) => n.stop()));
    for (const server of servers) await server.dispose();
    cleanupPrivateServers();
  });
  return {
    nodes,
    use(server) {
      servers.push(server);
      return server;
    },
  };
}

/** Kills every private server still running and removes their dirs. */
export function cleanupPrivateServers(): void {
  for (const c of children) c.kill('SIGKILL');
  children.clear();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

/** A port nobody listens on now (listen on 0, close). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export async function waitForPort(port: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!(await reachable(port))) {
    if (Date.now() > until) throw new Error(`nothing answers on 127.0.0.1:${port} after ${ms} ms`);
    await sleep(50);
  }
}

/** `false` when `bin` runs; otherwise why the case is skipped (a failure under CI=true). */
export function needBinary(bin: string, versionArg: string): false | string {
  const r = spawnSync(bin, [versionArg], { stdio: 'ignore', timeout: 10_000 });
  if (r.error === undefined) return false;
  const why = `${bin} cannot be run (${r.error.message})`;
  if (process.env.CI === 'true') throw new Error(`CI: ${why}`);
  return `${why}: skipped`;
}

/** Where Debian's package puts Mosquitto (sbin: often not on a user's PATH). */
export const MOSQUITTO = '/usr/sbin/mosquitto';

/**
 * A private Mosquitto (not started yet) on a free port, its config the listener, anonymous
 * access and its log, plus `extra` lines, which may name its directory (`dir`).
 */
export async function privateMosquitto(
  name: string,
  extra: (dir: string) => string[],
): Promise<PrivateServer> {
  const server = new PrivateServer(
    MOSQUITTO,
    (_port, dir) => ['-c', join(dir, 'mosquitto.conf')],
    await freePort(),
    name,
  );
  reconfigureMosquitto(server, extra(server.dir));
  return server;
}

/** Writes a private Mosquitto's config again with other `extra` lines: read at its next (re)start. */
export function reconfigureMosquitto(server: PrivateServer, extra: string[]): void {
  writeFileSync(join(server.dir, 'mosquitto.conf'), mosquittoConfig(server.port, extra));
}

/** The lines of a private Mosquitto's config: its listener, anonymous access, its log on stderr. */
function mosquittoConfig(port: number, extra: string[]): string {
  return [
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    ...extra,
    // As root Mosquitto would switch to the `mosquitto` user, who cannot write the temp dir.
    ...(process.getuid?.() === 0 ? ['user root'] : []),
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    'log_type notice',
    'log_type information',
    '',
  ].join('\n');
}

/** Where Debian's package puts nats-server. */
export const NATS_SERVER = '/usr/sbin/nats-server';

/** A private nats-server (not started yet) on a free port, its config the listener plus `extra` lines. */
export async function privateNats(name: string, extra: string[]): Promise<PrivateServer> {
  const server = new PrivateServer(
    NATS_SERVER,
    (_port, dir) => ['-c', join(dir, 'nats.conf')],
    await freePort(),
    name,
  );
  reconfigureNats(server, extra);
  return server;
}

/** Writes a private nats-server's config (its listener plus `extra` lines): read at its next (re)start. */
export function reconfigureNats(server: PrivateServer, extra: string[]): void {
  writeFileSync(join(server.dir, 'nats.conf'), [`listen: 127.0.0.1:${server.port}`, ...extra, ''].join('\n'));
}

/** A private redis-server (not started yet) on a free port, keeping nothing on disk, plus `extra` arguments. */
export async function privateRedis(name: string, extra: string[]): Promise<PrivateServer> {
  return new PrivateServer(
    'redis-server',
    (port, dir) => ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', ...extra],
    await freePort(),
    name,
  );
}

export class PrivateServer {
  readonly dir: string;
  readonly logFile: string;
  private proc: ChildProcess | undefined;

  constructor(
    private readonly bin: string,
    private readonly args: (port: number, dir: string) => string[],
    readonly port: number,
    name: string,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), `parley-${name}-`));
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

  /** Stops, stays down `downMs`, starts again. */
  async restart(downMs: number): Promise<void> {
    await this.stop();
    await sleep(downMs);
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
