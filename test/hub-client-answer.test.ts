/**
 * `queryHub` against something on the hub's port that answers `Members` with what is not a
 * snapshot: a typed INTERNAL error that says why, never a TypeError later in the caller.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { it } from 'node:test';
import { queryHub } from '../src/hub/client.ts';
import { ParleyError } from '../src/index.ts';
import { FrameReader, FrameType, FrameWriter } from '../src/transport/tcp/frames.ts';

const info = { id: 'n1', status: 'up', codec: 'json', services: [] };
const member = { info, address: '127.0.0.1:1', lastSeen: 1, since: 0 };
/** A large field, which no error message may carry. */
const bulk = 'B'.repeat(10_000);

/** A fake hub: answers each `Members` frame with `answers[n]` of the nth connection. */
async function fakeHub(answers: string[]) {
  const sockets = new Set<Socket>();
  let n = 0;
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const answer = answers[n++] ?? 'null';
    const writer = new FrameWriter(socket);
    const reader = new FrameReader(
      1 << 20,
      (f) => {
        if (f.type === FrameType.Members) writer.send(FrameType.Members, f.id, Buffer.from(answer));
      },
      () => socket.destroy(),
    );
    socket.on('data', (c: Buffer) => reader.push(c));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `parley://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  };
  return { url, close };
}

it('queryHub rejects an answer that is no snapshot with INTERNAL and the reason, without the payload', async () => {
  const bad: [unknown, string][] = [
    [{ nodes: 5 }, 'nodes is not a list'],
    [[], 'not an object'],
    [null, 'not an object'],
    ['nodes', 'not an object'],
    [{ broker: 'parley://x:1' }, 'nodes is not a list'],
    [{ nodes: [null] }, 'node 0 is not an object'],
    [{ nodes: [member, [member]] }, 'node 1 is not an object'],
    [
      { nodes: [{ ...member, info: { ...info, services: null, bulk } }] },
      'node 0: node n1: services is not a list',
    ],
    [{ nodes: [{ ...member, info: 'n1' }] }, 'node 0: node info is not an object'],
    [{ nodes: [{ ...member, address: 5 }] }, 'node 0: address is not a string'],
    [{ nodes: [{ ...member, lastSeen: '1' }] }, 'node 0: lastSeen is not a number'],
    [{ nodes: [{ ...member, since: null }] }, 'node 0: since is not a number'],
    [{ nodes: [], broker: 5, bulk }, 'broker is not a string'],
  ];
  const raw: [string, string][] = [
    ...bad.map(([v, why]): [string, string] => [JSON.stringify(v), why]),
    // JSON's way to an infinite number.
    [
      `{"nodes":[${JSON.stringify(member).replace('"lastSeen":1', '"lastSeen":1e999')}]}`,
      'node 0: lastSeen is not a number',
    ],
  ];
  const hub = await fakeHub(raw.map(([answer]) => answer));
  try {
    for (const [answer, why] of raw) {
      await assert.rejects(queryHub(hub.url, { timeout: 2000 }), (e: unknown) => {
        assert.ok(e instanceof ParleyError, `${answer.slice(0, 80)}: ${String(e)}`);
        assert.equal(e.code, 'INTERNAL');
        assert.equal(e.message, `hub ${hub.url} answered no snapshot: ${why}`);
        return true;
      });
    }
  } finally {
    await hub.close();
  }
});

it('queryHub hands over a valid snapshot, copied down to its fields', async () => {
  const answer = {
    nodes: [{ ...member, extra: bulk, info: { ...info, extra: 1, labels: { zone: 'a' } } }],
    broker: 'parley://127.0.0.1:9',
    extra: true,
  };
  const hub = await fakeHub([JSON.stringify(answer), JSON.stringify({ nodes: [] })]);
  try {
    assert.deepEqual(await queryHub(hub.url, { timeout: 2000 }), {
      nodes: [{ ...member, info: { ...info, labels: { zone: 'a' } } }],
      broker: 'parley://127.0.0.1:9',
    });
    assert.deepEqual(await queryHub(hub.url, { timeout: 2000 }), { nodes: [] });
  } finally {
    await hub.close();
  }
});
