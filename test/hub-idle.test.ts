/**
 * Connections to the hub that say no hello: tools asking `Members` stay while they ask within the
 * heartbeat bound, a peer that says nothing (or only part of a frame) is closed past it. Time runs
 * on node:test's mocked `setInterval` (the hub's sweeper) and `Date`; sockets are real.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createConnection } from 'node:net';
import { it, type TestContext } from 'node:test';
import { createEmbeddedBroker, createHub } from '../src/index.ts';
import { encodeFrame, FrameType, PROTOCOL_VERSION } from '../src/transport/tcp/frames.ts';
import { framePeer } from './helpers.ts';

/** Waits on real I/O (not on `Date`, which is mocked here) until `check` holds. */
async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; !check(); i++) {
    if (i > 400) throw new Error(`still waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Runs mocked time `ms` on in steps of 50 ms: one `tick` runs every timer due in it with `Date`
 * already at its end, so a sweep would see the connections older than they were.
 */
function advance(t: TestContext, ms: number): void {
  for (let done = 0; done < ms; done += 50) t.mock.timers.tick(Math.min(50, ms - done));
}

/** A raw connection to the hub: what it received, whether it is closed, its address as the hub logs it. */
async function dial(port: number) {
  const socket = createConnection({ host: '127.0.0.1', port });
  const { frames, send } = framePeer(socket);
  let closed = false;
  socket.on('close', () => {
    closed = true;
  });
  await once(socket, 'connect');
  /** Asks `Members` with `id` and waits for the answer. */
  const ask = async (id: number) => {
    send(FrameType.Members, id);
    await until(() => frames.some((f) => f.type === FrameType.Members && f.id === id), `answer ${id}`);
  };
  return { socket, send, ask, frames, closed: () => closed, peer: `127.0.0.1:${socket.localPort}` };
}

it('the hub closes a connection that says no hello once it sent no frame for heartbeatTimeout; a tool asking within it stays', async (t) => {
  t.mock.timers.enable({ apis: ['setInterval', 'Date'], now: 1_700_000_000_000 });
  const logs: string[] = [];
  // Sweeps every 250 ms: a silent connection goes at the first sweep past 1 000 ms, 1 250.
  const hub = await createHub({ heartbeatTimeout: 1000, log: (m) => void logs.push(m) });
  const mute = await dial(hub.port);
  const partial = await dial(hub.port);
  const tool = await dial(hub.port);
  try {
    partial.socket.write(encodeFrame(FrameType.Members, 1, Buffer.from('x')).subarray(0, 6));
    await tool.ask(1); // the hub has taken all three connections by now
    const closing = () => logs.filter((l) => l.includes('no hello'));

    advance(t, 600);
    await tool.ask(2); // asks again within the bound
    advance(t, 600); // 1 200 ms: no sweep has seen anyone silent past 1 000 ms
    assert.deepEqual(closing(), []);

    advance(t, 100); // the sweep at 1 250 ms
    assert.deepEqual(
      closing().sort(),
      [
        `connection from ${mute.peer}: no hello, silent for 1250 ms: closing it`,
        `connection from ${partial.peer}: no hello, silent for 1250 ms: closing it`,
      ].sort(),
    );
    await until(() => mute.closed() && partial.closed(), 'the silent connections to close');
    assert.equal(tool.closed(), false, 'the tool that asked 650 ms ago stays');
    await tool.ask(3);

    // The tool goes silent in turn.
    advance(t, 1250);
    assert.equal(closing().length, 3);
    await until(() => tool.closed(), 'the tool to be closed');
  } finally {
    for (const c of [mute, partial, tool]) c.socket.destroy();
    await hub.close();
  }
});

it('a node after hello is held to the heartbeat bound, a broker client after hello is kept, close() ends one that said no hello', async (t) => {
  t.mock.timers.enable({ apis: ['setInterval', 'Date'], now: 1_700_000_000_000 });
  const logs: string[] = [];
  const broker = createEmbeddedBroker({ path: ':memory:' });
  const hub = await createHub({ heartbeatTimeout: 1000, broker, log: (m) => void logs.push(m) });
  const node = await dial(hub.port);
  const client = await dial(hub.port);
  let tool: Awaited<ReturnType<typeof dial>> | undefined;
  try {
    const info = { id: 'n1', status: 'up', codec: 'json', services: [] };
    node.send(FrameType.Hello, 0, { version: PROTOCOL_VERSION, info, address: '127.0.0.1:1' });
    client.send(FrameType.Hello, 0, { version: PROTOCOL_VERSION, role: 'broker' });
    await until(
      () =>
        node.frames.some((f) => f.type === FrameType.Welcome) &&
        client.frames.some((f) => f.type === FrameType.Welcome),
      'both welcomes',
    );
    // The node pings every 500 ms for 3 s: kept. The broker client says nothing more.
    for (let i = 0; i < 6; i++) {
      advance(t, 500);
      node.send(FrameType.Ping, 0);
      await until(() => hub.snapshot().nodes[0]?.lastSeen === Date.now(), 'the ping');
    }
    assert.deepEqual(hub.nodes(), ['n1']);
    assert.equal(logs.filter((l) => l.startsWith(`connection from ${client.peer}`)).length, 0);
    // The node stops pinging: the heartbeat sweeper drops it.
    advance(t, 1250);
    assert.ok(logs.includes('node n1 silent for 1250 ms: dropped'));
    await until(() => hub.nodes().length === 0, 'the node to be gone');
    assert.equal(client.closed(), false, 'the broker client stays');
    tool = await dial(hub.port);
    await tool.ask(1);
    await hub.close();
    await until(() => tool?.closed() === true && client.closed(), 'close() to end every connection');
  } finally {
    for (const c of [node, client, tool]) c?.socket.destroy();
    await hub.close();
    await broker.close();
  }
});
