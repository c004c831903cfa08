/**
 * @module transport/node-info
 * The check every node's info passes where it arrives from another process (a bus's presence
 * subject, the hub's hello and its node-up frames, and the node itself for transports written
 * elsewhere). Discovery data is the one thing every node reads from every other: a single
 * malformed hello (a service that is `null`, actions that are not a list) used to reach each
 * node's registry and throw there, on every rebuild, until no service could be found at all.
 */
import type { NodeInfo, ServiceInfo } from './transport.ts';

/** The longest node id, service name, version, action or label accepted (ids are made far shorter). */
const MOST_CHARS = 1024;
/** The most services one node may announce, and actions or notifications one service may. */
const MOST_ITEMS = 100_000;

/** A plain object (not null, not an array): what a decoded JSON value must be to have fields. */
export const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const isName = (value: unknown): value is string =>
  typeof value === 'string' && value.length > 0 && value.length <= MOST_CHARS;

/** Why a list is not a list of names, or undefined when it is one. */
function namesProblem(value: unknown, what: string): string | undefined {
  if (!Array.isArray(value)) return `${what} is not a list`;
  if (value.length > MOST_ITEMS) return `${what} has more than ${MOST_ITEMS} items`;
  return value.every(isName) ? undefined : `${what} holds something that is not a name`;
}

/**
 * `value` as node info, copied down to the fields a node reads (nothing else it carried, such as a
 * `__proto__` key, is kept), or why it is not node info.
 */
export function nodeInfoOf(value: unknown): NodeInfo | string {
  if (!isRecord(value)) return 'node info is not an object';
  const { id, status, codec, services, labels } = value;
  if (!isName(id)) return 'node info has no id';
  if (status !== 'up' && status !== 'draining') return `node ${id}: status is neither 'up' nor 'draining'`;
  if (typeof codec !== 'string' || codec.length > MOST_CHARS) return `node ${id}: codec is not a name`;
  if (!Array.isArray(services)) return `node ${id}: services is not a list`;
  if (services.length > MOST_ITEMS) return `node ${id}: more than ${MOST_ITEMS} services`;
  const clean: ServiceInfo[] = [];
  for (const [i, s] of services.entries()) {
    if (!isRecord(s)) return `node ${id}: service ${i} is not an object`;
    if (!isName(s.name)) return `node ${id}: service ${i} has no name`;
    if (typeof s.version !== 'string' || s.version.length > MOST_CHARS)
      return `node ${id}: service ${s.name} has no version`;
    const problem =
      namesProblem(s.actions, `service ${s.name}'s actions`) ??
      namesProblem(s.notifications, `service ${s.name}'s notifications`);
    if (problem !== undefined) return `node ${id}: ${problem}`;
    clean.push({
      name: s.name,
      version: s.version,
      actions: [...(s.actions as string[])],
      notifications: [...(s.notifications as string[])],
    });
  }
  const info: NodeInfo = { id, status, codec, services: clean };
  if (labels !== undefined) {
    if (!isRecord(labels)) return `node ${id}: labels is not an object`;
    const copy: Record<string, string> = {};
    for (const [k, v] of Object.entries(labels)) {
      if (typeof v !== 'string' || v.length > MOST_CHARS || k.length > MOST_CHARS)
        return `node ${id}: label ${k.slice(0, 64)} is not a short string`;
      if (k === '__proto__') continue;
      copy[k] = v;
    }
    info.labels = copy;
  }
  return info;
}
