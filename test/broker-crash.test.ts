/**
 * Real processes, real SIGKILL: a consumer dies holding a message, a broker process dies while a
 * producer publishes with confirmations. Nothing confirmed may be lost.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createEmbeddedBroker, createEnvelope } from '../src/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'parley-crash-'));
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});
const script = fileURLToPath(new URL('./fixtures/broker-child.ts', import.meta.url));

function child(args: string[], onLine: (msg: Record<string, unknown>) => void): ChildProcess {
  const proc = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(proc);
  createInterface({ input: proc.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    if (line.startsWith('{')) onLine(JSON.parse(line) as Record<string, unknown>);
  });
  return proc;
}

async function waitFor(check: () => boolean, ms: number, what: string): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function exited(proc: ChildProcess): Promise<void> {
  return new Promise((resolve) =>
    proc.exitCode !== null || proc.signalCode !== null ? resolve() : proc.once('exit', () => resolve()),
  );
}

describe('embedded broker across processes', () => {
  it('a consumer killed with SIGKILL while holding a message: another gets it after the lease, nothing lost', {
    timeout: 30_000,
  }, async () => {
    const path = join(dir, 'lease.db');
    const publisher = createEmbeddedBroker({ path });
    const first: unknown[] = [];
    const second: unknown[] = [];
    let holding: unknown;
    let readyA = false;
    const a = child(['consumer', path, 'workers', '800', '1'], (m) => {
      if (m.ready) readyA = true;
      if ('holding' in m) holding = m.holding;
      if ('got' in m) first.push(m.got);
    });
    await waitFor(() => readyA, 10_000, 'consumer A');
    await publisher.publish(createEnvelope({ source: '/t', type: 'crash.test', data: 'precious' }));
    await waitFor(() => holding !== undefined, 10_000, 'A to hold the message');
    a.kill('SIGKILL');
    await exited(a);
    let readyB = false;
    const b = child(['consumer', path, 'workers', '800', '0'], (m) => {
      if (m.ready) readyB = true;
      if ('got' in m) second.push(m.got);
    });
    await waitFor(() => readyB, 10_000, 'consumer B');
    await waitFor(() => second.includes('precious'), 10_000, 'redelivery to B');
    for (let i = 0; i < 10; i++)
      await publisher.publish(createEnvelope({ source: '/t', type: 'crash.test', data: i }));
    await waitFor(() => second.length >= 11, 10_000, 'the rest');
    assert.deepEqual(first, ['precious']);
    assert.deepEqual(second, ['precious', ...Array(10).keys()]);
    b.kill('SIGTERM');
    await exited(b);
    await publisher.close();
  });

  it('the broker process restarts while a producer publishes with confirmations: lost = 0', {
    timeout: 60_000,
  }, async (t) => {
    const path = join(dir, 'life.db');
    const count = 3000;
    const confirmed = new Set<number>();
    const consumed: number[] = [];
    let published = false;
    const onLine = (m: Record<string, unknown>) => {
      if (typeof m.confirmed === 'number') confirmed.add(m.confirmed);
      if (typeof m.consumed === 'number') consumed.push(m.consumed);
      if (m.published !== undefined) published = true;
    };
    const first = child(['life', path, String(count)], onLine);
    await waitFor(() => confirmed.size >= 800, 30_000, 'some confirmations');
    first.kill('SIGKILL');
    await exited(first);
    const confirmedBeforeCrash = confirmed.size;
    // Second life: publishes everything again (idempotency keys absorb what was stored) and consumes the rest.
    const second = child(['life', path, String(count)], onLine);
    await waitFor(() => published, 30_000, 'the second life to publish all');
    await waitFor(() => new Set(consumed).size >= count, 30_000, 'every message consumed');
    second.kill('SIGTERM');
    await exited(second);
    const unique = new Set(consumed);
    const lost = [...confirmed].filter((n) => !unique.has(n));
    const unexpected = [...unique].filter((n) => !(Number.isInteger(n) && n >= 0 && n < count));
    const duplicates = consumed.length - unique.size;
    t.diagnostic(
      `confirmed before the crash: ${confirmedBeforeCrash}; consumed ${consumed.length}, duplicates ${duplicates}`,
    );
    assert.deepEqual(lost, [], 'every confirmed message was consumed');
    assert.deepEqual(unexpected, [], 'nothing unexpected appeared');
    assert.equal(unique.size, count);
  });
});
