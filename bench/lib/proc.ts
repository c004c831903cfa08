/**
 * Child processes for the benchmarks: each side runs in its own process, pinned to its own CPU
 * where `taskset` exists, speaking one JSON line per message on stdout. Every child has a hard
 * time limit and is killed with its group when the parent is done with it.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The compiled bench (`tsc -p bench/tsconfig.build.json`): children run as plain JS, no loader. */
const buildDir = fileURLToPath(new URL('..', import.meta.url));
const hasTaskset = spawnSync('taskset', ['-c', '0', 'true']).status === 0;
const cpuCount = cpus().length;

export interface Child {
  readonly proc: ChildProcess;
  /** The next JSON line the child prints. */
  next<T = Record<string, unknown>>(timeoutMs?: number): Promise<T>;
  /** Resident set size now, in MiB (from /proc). */
  rssMiB(): number;
  stop(): Promise<void>;
}

/** Starts `bench/<script>` (compiled) with `args`, on CPU `cpu` when it can be pinned. */
export function startChild(script: string, args: string[], cpu: number, limitMs = 120_000): Child {
  const node = [process.execPath, `${buildDir}${script.replace(/\.ts$/, '.js')}`, ...args];
  const cmd = hasTaskset && cpuCount > 1 ? ['taskset', '-c', String(cpu % cpuCount), ...node] : node;
  const proc = spawn(cmd[0] as string, cmd.slice(1), {
    cwd: buildDir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PARLEY_LOG_LEVEL: 'silent' },
  });
  const lines: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  createInterface({ input: proc.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    if (!line.startsWith('{')) return;
    const w = waiting.shift();
    if (w) w(line);
    else lines.push(line);
  });
  const killer = setTimeout(() => proc.kill('SIGKILL'), limitMs);
  killer.unref();
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    proc.once('exit', () => {
      exited = true;
      clearTimeout(killer);
      resolve();
    }),
  );
  return {
    proc,
    next<T>(timeoutMs = 60_000) {
      const line = lines.shift();
      if (line !== undefined) return Promise.resolve(JSON.parse(line) as T);
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`${script} ${args.join(' ')}: no answer; stderr: ${stderr}`)),
          timeoutMs,
        );
        exit.then(() => {
          clearTimeout(timer);
          reject(new Error(`${script} ${args.join(' ')} exited; stderr: ${stderr}`));
        });
        waiting.push((l) => {
          clearTimeout(timer);
          resolve(JSON.parse(l) as T);
        });
      });
    },
    rssMiB() {
      try {
        const status = readFileSync(`/proc/${proc.pid}/status`, 'utf8');
        const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN);
        return kb / 1024;
      } catch {
        return Number.NaN;
      }
    },
    async stop() {
      if (!exited) proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
      await exit;
      clearTimeout(t);
    },
  };
}

/**
 * CPU time (user + system, all threads) process `pid` has used so far, in µs, from
 * `/proc/<pid>/stat` (in clock ticks of 10 ms, Linux's USER_HZ); NaN where there is no /proc.
 */
export function cpuMicros(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces: count the fields after its closing paren.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return Number.NaN;
  }
}

/** Prints one JSON line for the parent. */
export function say(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

export const pinned = hasTaskset && cpuCount > 1;
