/**
 * @module cli/tools
 * What the `parley` tool commands do, apart from argument parsing: call an action by name, find
 * the broker, and render services and dead letters for a person.
 */
import { z } from 'zod';
import type { Broker, DeadLetter } from '../broker/broker.ts';
import { defineContract } from '../contract/contract.ts';
import { ParleyError } from '../errors.ts';
import { queryHub } from '../hub/client.ts';
import { createNode } from '../runtime/node.ts';
import { tlsFromEnv } from '../transport/tcp/sockets.ts';
import { createTcpTransport } from '../transport/tcp/tcp-transport.ts';
import { brokerRegistry } from './start.ts';

interface HubAccess {
  token?: string;
}

/** Token and TLS (from PARLEY_TLS_*) for talking to the hub. */
const tokenOf = (o: HubAccess) => {
  const tls = tlsFromEnv(process.env);
  return { ...(o.token === undefined ? {} : { token: o.token }), ...(tls === undefined ? {} : { tls }) };
};

/**
 * Joins the hub as a node with no services, calls `service.action` with `input` and leaves. The
 * contract is not known here, so input and output pass as they are; the serving node validates.
 */
export async function callAction(
  hub: string,
  target: string,
  input: unknown,
  options: HubAccess & { timeout?: number } = {},
): Promise<unknown> {
  const dot = target.lastIndexOf('.');
  if (dot <= 0 || dot === target.length - 1) {
    throw new ParleyError('INVALID_ARGUMENT', `target must be service.action, got ${target}`);
  }
  const service = target.slice(0, dot);
  const action = target.slice(dot + 1);
  const contract = defineContract({
    name: service,
    version: '0.0.0',
    actions: { [action]: { input: z.unknown(), output: z.unknown() } },
  });
  const node = createNode({
    id: `cli-${process.pid}`,
    transport: createTcpTransport({ hub, ...tokenOf(options), log: () => undefined }),
    logLevel: 'silent',
  });
  await node.start();
  try {
    const client = node.client(contract) as unknown as Record<
      string,
      (input: unknown, options?: { timeout?: number }) => Promise<unknown>
    >;
    const call = client[action];
    if (call === undefined) throw new ParleyError('INTERNAL', `no client method for ${action}`);
    return await call(input, options.timeout === undefined ? {} : { timeout: options.timeout });
  } finally {
    await node.stop();
  }
}

/** The broker of `--broker` / `PARLEY_BROKER`, else the one the hub offers. */
export async function openBrokerFor(options: HubAccess & { hub: string; broker?: string }): Promise<Broker> {
  let url = options.broker;
  if (url === undefined) {
    url = (await queryHub(options.hub, tokenOf(options))).broker;
    if (url === undefined) {
      throw new ParleyError('FAILED_PRECONDITION', `the hub ${options.hub} offers no broker; pass --broker`);
    }
  }
  return brokerRegistry(tokenOf(options)).open(url);
}

const ago = (ms: number) => {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m` : `${Math.floor(s / 3600)}h`;
};

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** The hub's view: one block per service with its instances, then the nodes. */
export async function showServices(
  hub: string,
  options: HubAccess & { json?: boolean } = {},
): Promise<string> {
  const snapshot = await queryHub(hub, tokenOf(options));
  if (options.json) return `${JSON.stringify(snapshot, null, 2)}\n`;
  const now = Date.now();
  const nodes = snapshot.nodes.filter((n) => n.info.services.length > 0 || !n.info.id.startsWith('cli-'));
  const lines: string[] = [`hub ${hub}: ${nodes.length} node(s); broker ${snapshot.broker ?? 'none'}`, ''];
  const byService = new Map<string, { version: string; actions: Set<string>; instances: string[] }>();
  for (const n of nodes) {
    for (const s of n.info.services) {
      const entry = byService.get(s.name) ?? { version: s.version, actions: new Set(), instances: [] };
      for (const a of s.actions) entry.actions.add(a);
      entry.instances.push(`${n.info.id}${n.info.status === 'up' ? '' : ` (${n.info.status})`}`);
      byService.set(s.name, entry);
    }
  }
  const rows = [['SERVICE', 'VERSION', 'INSTANCES', 'ACTIONS']];
  for (const [name, s] of [...byService].sort(([a], [b]) => a.localeCompare(b))) {
    rows.push([name, s.version, String(s.instances.length), [...s.actions].sort().join(', ')]);
  }
  lines.push(table(rows), '');
  const nodeRows = [['NODE', 'STATUS', 'ADDRESS', 'PID', 'UP', 'LAST HEARTBEAT']];
  for (const n of nodes) {
    nodeRows.push([
      n.info.id,
      n.info.status,
      n.address,
      n.info.labels?.pid ?? '',
      ago(now - n.since),
      `${ago(now - n.lastSeen)} ago`,
    ]);
  }
  lines.push(table(nodeRows));
  return `${lines.join('\n')}\n`;
}

export function showDeadLetters(letters: DeadLetter[]): string {
  if (letters.length === 0) return 'no dead letters\n';
  const rows = [['ID', 'TOPIC', 'GROUP', 'CODE', 'ATTEMPTS', 'LAST FAILURE', 'REASON']];
  for (const l of letters) {
    rows.push([
      String(l.id),
      l.topic,
      l.group,
      l.code,
      String(l.attempts),
      new Date(l.lastFailureAt).toISOString(),
      l.message.length > 60 ? `${l.message.slice(0, 57)}...` : l.message,
    ]);
  }
  return `${table(rows)}\n`;
}

export function showDeadLetter(letter: DeadLetter): string {
  return `${JSON.stringify(letter, null, 2)}\n`;
}
