/**
 * @module hub/client
 * Asking a hub who is there, for tools (`parley services`, `parley start` looking for the broker):
 * one connection, one `Members` frame, one answer, closed.
 */
import { ParleyError } from '../errors.ts';
import { isRecord, nodeInfoOf } from '../transport/node-info.ts';
import { FrameReader, FrameType, FrameWriter, parseHubUrl } from '../transport/tcp/frames.ts';
import { connect, type ParleyTlsOptions } from '../transport/tcp/sockets.ts';
import { DEFAULT_MAX_PAYLOAD } from '../transport/transport.ts';
import type { HubMember, HubSnapshot } from './hub.ts';

/**
 * `value` as a hub's snapshot, copied down to its fields, or why it is not one. Until 2026-12-03
 * the answer was taken as it came: `{"nodes": 5}` from whatever listened on the port made
 * `parley services` and `parley start` fail later with a TypeError.
 */
function hubSnapshotOf(value: unknown): HubSnapshot | string {
  if (!isRecord(value)) return 'not an object';
  if (!Array.isArray(value.nodes)) return 'nodes is not a list';
  const nodes: HubMember[] = [];
  for (const [i, n] of value.nodes.entries()) {
    if (!isRecord(n)) return `node ${i} is not an object`;
    const info = nodeInfoOf(n.info);
    if (typeof info === 'string') return `node ${i}: ${info}`;
    if (typeof n.address !== 'string') return `node ${i}: address is not a string`;
    for (const key of ['lastSeen', 'since'] as const) {
      if (typeof n[key] !== 'number' || !Number.isFinite(n[key])) return `node ${i}: ${key} is not a number`;
    }
    nodes.push({ info, address: n.address, lastSeen: n.lastSeen as number, since: n.since as number });
  }
  if (value.broker === undefined) return { nodes };
  if (typeof value.broker !== 'string') return 'broker is not a string';
  return { nodes, broker: value.broker };
}

export async function queryHub(
  url: string,
  options: { token?: string; timeout?: number; tls?: ParleyTlsOptions } = {},
): Promise<HubSnapshot> {
  const target = parseHubUrl(url);
  const timeout = options.timeout ?? 3000;
  return new Promise<HubSnapshot>((resolve, reject) => {
    const { socket, ready } = connect(target, options.tls);
    const fail = (error: ParleyError) => {
      socket.destroy();
      reject(error);
    };
    const timer = setTimeout(
      () => fail(new ParleyError('UNAVAILABLE', `hub ${url} did not answer within ${timeout} ms`)),
      timeout,
    );
    const reader = new FrameReader(
      DEFAULT_MAX_PAYLOAD,
      (frame) => {
        if (frame.type !== FrameType.Members || frame.id !== 1) return;
        clearTimeout(timer);
        socket.end();
        let answer: unknown;
        try {
          answer = JSON.parse(frame.payload.toString('utf8'));
        } catch (error) {
          return reject(new ParleyError('INTERNAL', `hub ${url} answered garbage`, { cause: error }));
        }
        const snapshot = hubSnapshotOf(answer);
        if (typeof snapshot === 'string') {
          return reject(new ParleyError('INTERNAL', `hub ${url} answered no snapshot: ${snapshot}`));
        }
        resolve(snapshot);
      },
      (reason) => fail(new ParleyError('INTERNAL', `hub ${url}: ${reason}`)),
    );
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('error', (error) => {
      clearTimeout(timer);
      fail(new ParleyError('UNAVAILABLE', `hub ${url} is not reachable`, { cause: error }));
    });
    socket.on('close', () => {
      clearTimeout(timer);
      reject(new ParleyError('UNAVAILABLE', `hub ${url} closed the connection (wrong token?)`));
    });
    socket.on(ready, () => {
      new FrameWriter(socket).send(FrameType.Members, 1, Buffer.from(options.token ?? '', 'utf8'));
    });
  });
}
