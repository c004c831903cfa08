/**
 * A Mosquitto of the bench's own for the durable-event rows over MQTT, on 127.0.0.1 at a free
 * port, stopped with the run.
 *
 * Why not the machine's server on 1883: at Mosquitto's defaults a session holds at most 1,000
 * queued QoS 1 messages (`max_queued_messages`) and drops the rest, for a consumer that is away
 * and equally for one that is connected but behind a burst, and a publisher's PUBACK comes from
 * the server, so nothing holds the burst back. A row that can lose messages measures nothing.
 * This server keeps every message (`max_queued_messages 0`, the documented "no limit"), turns
 * Nagle off on its sockets (`set_tcp_nodelay true`) and keeps sessions in memory only.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, reachable } from './net.ts';

export interface PrivateMosquitto {
  readonly url: string;
  stop(): Promise<void>;
}

/** The `mosquitto` program, or undefined when this machine has none. */
export function mosquittoBinary(): string | undefined {
  for (const candidate of ['mosquitto', '/usr/sbin/mosquitto', '/usr/local/sbin/mosquitto']) {
    const r = spawnSync(candidate, ['-h'], { encoding: 'utf8' });
    // `mosquitto -h` prints its usage and exits with 3.
    if (r.error === undefined && /mosquitto version/.test(`${r.stdout}${r.stderr}`)) return candidate;
  }
  return undefined;
}

/** Starts the server and waits (up to 10 s) until it accepts connections. */
export async function startMosquitto(binary: string): Promise<PrivateMosquitto> {
  const dir = mkdtempSync(join(tmpdir(), 'parley-bench-mosquitto-'));
  // Another program may take the port between its release and Mosquitto's bind: try a few.
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const conf = join(dir, 'mosquitto.conf');
    writeFileSync(
      conf,
      [
        `listener ${port} 127.0.0.1`,
        'allow_anonymous true',
        'persistence false',
        'max_queued_messages 0',
        'set_tcp_nodelay true',
        'log_dest stderr',
        'log_type error',
        'log_type warning',
        '',
      ].join('\n'),
      { mode: 0o644 },
    );
    const proc: ChildProcess = spawn(binary, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    let exited = false;
    const exit = new Promise<void>((resolve) =>
      proc.once('exit', () => {
        exited = true;
        resolve();
      }),
    );
    const deadline = Date.now() + 10_000;
    let up = false;
    while (!exited && !up && Date.now() < deadline) {
      up = await reachable(port);
      if (!up) await new Promise((r) => setTimeout(r, 50));
    }
    if (up && !exited) {
      return {
        url: `mqtt://127.0.0.1:${port}`,
        async stop() {
          if (!exited) proc.kill('SIGTERM');
          const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
          await exit;
          clearTimeout(t);
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    proc.kill('SIGKILL');
    await exit;
    if (attempt === 4) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`mosquitto did not start: ${stderr.trim()}`);
    }
  }
  throw new Error('unreachable');
}
