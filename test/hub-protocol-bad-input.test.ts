/**
 * Frames that parse as frames but whose JSON is not what the protocol says, on the three TCP paths
 * where a peer's answer is read inside a socket handler (a throw there ends the process): a broker
 * client's settle and call at the hub, a hub's result and delivery at a broker client, a peer's
 * failure at a caller. Each becomes a typed error or a redelivery; nothing crashes, nothing is lost.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { type AddressInfo, createConnection, createServer, type Server, type Socket } from 'node:net';
import { it } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { createRemoteBroker } from '../src/hub/remote-broker.ts';
import {
  createEmbeddedBroker,
  createEnvelope,
  createFakeClock,
  createHub,
  createTcpTransport,
  type Envelope,
  ParleyError,
} from '../src/index.ts';
import { createRandom } from '../src/transport/faults.ts';
import {
  encodeFrame,
  type Frame,
  FrameReader,
  FrameType,
  PROTOCOL_VERSION,
} from '../src/transport/tcp/frames.ts';
import { framePeer, waitFor } from './helpers.ts';

/** A raw connection speaking frames: what it received, and a way to send. */
async function rawPeer(socket: Socket) {
  const { frames, send } = framePeer(socket);
  /** The next frame of `type` (with `id`, when given) not taken yet. */
  const take = async (type: FrameType, id?: number): Promise<Frame> => {
    let found: Frame | undefined;
    await waitFor(
      () => {
        const i = frames.findIndex((f) => f.type === type && (id === undefined || f.id === id));
        if (i >= 0) found = frames.splice(i, 1)[0];
        return found !== undefined;
      },
      5000,
      `a frame of type ${type}`,
    );
    return found as Frame;
  };
  const pending = (type: FrameType) => frames.filter((f) => f.type === type).length;
  return { send, take, pending, json: (f: Frame): unknown => JSON.parse(f.payload.toString('utf8')) };
}

async function listening(onSocket: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer(onSocket);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port };
}

it("the hub: a broker client's unreadable settle puts the delivery back, an unreadable call gets INVALID_ARGUMENT", async () => {
  const clock = createFakeClock();
  const inner = createEmbeddedBroker({ path: ':memory:', clock, random: createRandom(4) });
  const hub = await createHub({ broker: inner });
  const socket = createConnection({ host: '127.0.0.1', port: hub.port });
  try {
    const peer = await rawPeer(socket);
    await once(socket, 'connect');
    peer.send(FrameType.Hello, 0, { version: PROTOCOL_VERSION, role: 'broker' });
    await peer.take(FrameType.Welcome);
    let call = 0;
    const answer = async (request: unknown) => {
      peer.send(FrameType.BrokerCall, ++call, request);
      return peer.json(await peer.take(FrameType.BrokerResult, call)) as {
        ok: boolean;
        error?: { code: string; message: string };
      };
    };
    for (const request of ['null', '[1]', '"publish"', '{"op":"publish","args":'])
      assert.deepEqual((await answer(request)).error?.message, 'broker call is not a JSON object', request);

    assert.equal(
      (await answer({ op: 'subscribe', args: { consumer: 1, spec: { topic: 't', group: 'g' } } })).ok,
      true,
    );
    const env = createEnvelope({ source: '/t', type: 't', data: { n: 1 } });
    assert.equal((await answer({ op: 'publish', args: { envelope: env } })).ok, true);
    // Outcomes that are no outcome: each puts the delivery back, and it comes again.
    for (const [n, outcome] of ['null', '5', '"ok"', 'not json'].entries()) {
      const d = await peer.take(FrameType.Deliver);
      const body = peer.json(d) as { envelope: Envelope; attempt: number };
      assert.equal(body.envelope.id, env.id);
      assert.equal(body.attempt, n + 1);
      peer.send(FrameType.Settle, d.id, outcome);
      for (let i = 0; i < 5; i++) await tick();
      await clock.tick(5_000); // past the retry backoff, within the 30 s lease
      for (let i = 0; i < 5; i++) await tick();
    }
    // The fifth attempt (the default most) settles well: handled once, nothing dead-lettered.
    const last = await peer.take(FrameType.Deliver);
    assert.equal((peer.json(last) as { attempt: number }).attempt, 5);
    peer.send(FrameType.Settle, last.id, { ok: true });
    for (let i = 0; i < 5; i++) await tick();
    assert.deepEqual(await inner.deadLetters.list(), [], 'nothing was dead-lettered');
    await clock.tick(60_000);
    for (let i = 0; i < 5; i++) await tick();
    assert.equal(peer.pending(FrameType.Deliver), 0, 'settled: not delivered again');
    // The hub still serves a well-behaved client.
    const client = await createRemoteBroker(hub.url, { log: () => undefined });
    try {
      assert.equal(
        (await client.publish(createEnvelope({ source: '/t', type: 'u', data: 2 }))).duplicate,
        false,
      );
    } finally {
      await client.close();
    }
  } finally {
    socket.destroy();
    await hub.close();
    await inner.close();
  }
});

it("a broker client: a hub's unreadable result is an error, an unreadable or invalid delivery is handed back unhandled", async () => {
  const settles: { id: number; outcome: unknown }[] = [];
  let hubSide: ReturnType<typeof rawPeer> | undefined;
  const { server, port } = await listening((s) => {
    hubSide = rawPeer(s);
    void hubSide.then(async (peer) => {
      await peer.take(FrameType.Hello);
      peer.send(FrameType.Welcome, 0, {});
    });
  });
  const handled: string[] = [];
  const client = await createRemoteBroker(`parley://127.0.0.1:${port}`, { log: () => undefined });
  try {
    const peer = await (hubSide as NonNullable<typeof hubSide>);
    const subscribing = client.subscribe({ topic: 't', group: 'g' }, async (d) => {
      handled.push(d.envelope.id);
    });
    const sub = await peer.take(FrameType.BrokerCall);
    const consumer = (peer.json(sub) as { args: { consumer: number } }).args.consumer;
    peer.send(FrameType.BrokerResult, sub.id, { ok: true, value: null });
    await subscribing;

    const env = createEnvelope({ source: '/t', type: 't', data: 1 });
    const deliveries: [number, unknown][] = [
      [11, 'null'],
      [12, 'not json'],
      [13, { consumer, envelope: { ...env, specversion: undefined }, attempt: 1 }],
      [14, { consumer, envelope: env, attempt: 'first' }],
    ];
    for (const [id, body] of deliveries) peer.send(FrameType.Deliver, id, body);
    for (const [id] of deliveries) {
      const f = await peer.take(FrameType.Settle, id);
      settles.push({ id, outcome: peer.json(f) });
    }
    const codeOf = (id: number) =>
      (settles.find((s) => s.id === id)?.outcome as { error?: { code: string } } | undefined)?.error?.code;
    assert.equal(codeOf(11), 'UNAVAILABLE');
    assert.equal(codeOf(12), 'UNAVAILABLE');
    assert.equal(codeOf(13), 'INVALID_ARGUMENT');
    assert.deepEqual(settles.find((s) => s.id === 14)?.outcome, { ok: true });
    assert.deepEqual(handled, [env.id], 'only the valid delivery reached the handler');

    // A result that is no result rejects its call, typed.
    for (const result of ['null', '[true]', 'nope']) {
      const listing = client.deadLetters.list();
      const call = await peer.take(FrameType.BrokerCall);
      peer.send(FrameType.BrokerResult, call.id, result);
      await assert.rejects(listing, (e: unknown) => {
        assert.ok(e instanceof ParleyError);
        assert.equal(e.code, 'INTERNAL');
        assert.equal(e.message, 'unreadable broker result');
        return true;
      });
    }
  } finally {
    const closing = client.close();
    // Answer the unsubscribe the close sends, so it need not wait for its deadline.
    const peer = await (hubSide as NonNullable<typeof hubSide>);
    const bye = await peer.take(FrameType.BrokerCall).catch(() => undefined);
    if (bye !== undefined) peer.send(FrameType.BrokerResult, bye.id, { ok: true, value: null });
    await closing;
    server.close();
  }
});

it("a caller: a peer's unreadable failure frame fails the call with UNKNOWN, the node keeps running", async () => {
  const hub = await createHub({});
  // A peer that answers every request with a failure that is no JSON.
  const { server, port } = await listening((s) => {
    void rawPeer(s).then(async (peer) => {
      await peer.take(FrameType.Hello);
      for (const body of ['oops', 'null', '[]']) {
        const request = await peer.take(FrameType.Request);
        peer.send(FrameType.Failure, request.id, body);
      }
    });
  });
  const registration = createConnection({ host: '127.0.0.1', port: hub.port });
  const transport = createTcpTransport({ hub: hub.url, log: () => undefined });
  try {
    const hubPeer = await rawPeer(registration);
    await once(registration, 'connect');
    const info = { id: 'odd-peer', status: 'up', codec: 'json', services: [] };
    hubPeer.send(FrameType.Hello, 0, { version: PROTOCOL_VERSION, info, address: `127.0.0.1:${port}` });
    await hubPeer.take(FrameType.Welcome);
    const seen: string[] = [];
    await transport.start(
      { id: 'caller', status: 'up', codec: 'json', services: [] },
      {
        onRequest: () => Promise.reject(new ParleyError('UNAVAILABLE', 'not serving')),
        onBroadcast: () => undefined,
        onNodeUp: (i) => void seen.push(i.id),
        onNodeDown: () => undefined,
      },
    );
    await waitFor(() => seen.includes('odd-peer'), 5000, 'the peer to be known');
    for (let i = 0; i < 3; i++) {
      await assert.rejects(transport.request('odd-peer', Buffer.from('{}')), (e: unknown) => {
        assert.ok(e instanceof ParleyError);
        assert.equal(e.code, 'UNKNOWN');
        assert.equal(e.message, 'malformed error on the wire');
        return true;
      });
    }
  } finally {
    await transport.stop();
    registration.destroy();
    server.close();
    await hub.close();
  }
});

it('the hub drops broadcasts to a member that does not read, and sends them again once it reads', async () => {
  const logs: string[] = [];
  const hub = await createHub({ log: (m) => void logs.push(m) });
  const hello = (id: string) =>
    encodeFrame(
      FrameType.Hello,
      0,
      Buffer.from(
        JSON.stringify({
          version: PROTOCOL_VERSION,
          address: '127.0.0.1:1',
          info: { id, status: 'up', codec: 'json', services: [] },
        }),
      ),
    );
  const slow = createConnection({ host: '127.0.0.1', port: hub.port });
  const fast = createConnection({ host: '127.0.0.1', port: hub.port });
  for (const s of [slow, fast]) s.on('error', () => undefined);
  try {
    await Promise.all([once(slow, 'connect'), once(fast, 'connect')]);
    slow.pause(); // reads nothing
    slow.write(hello('slow'));
    fast.resume();
    fast.write(hello('fast'));
    await waitFor(() => hub.nodes().length === 2, 2000, 'both members');
    // 300 broadcasts of 512 KiB (150 MiB) while the slow member reads nothing.
    const payload = Buffer.alloc(512 * 1024, 7);
    for (let i = 0; i < 300; i++) {
      if (!fast.write(encodeFrame(FrameType.Broadcast, 0, payload))) await once(fast, 'drain');
    }
    await waitFor(
      () => logs.some((l) => l.includes('node slow does not read')),
      5000,
      'the drop to be logged',
    );
    // Now it reads: it gets what was queued for it (a bounded part of the 300), and later ones again.
    let broadcasts = 0;
    const reader = new FrameReader(
      1 << 20,
      (f) => {
        if (f.type === FrameType.Broadcast) broadcasts++;
      },
      () => undefined,
    );
    slow.on('data', (c: Buffer) => reader.push(c));
    slow.resume();
    await waitFor(
      () => logs.some((l) => l.includes('node slow reads again')) || broadcasts > 0,
      5000,
      'reading',
    );
    await new Promise((r) => setTimeout(r, 300));
    const queued = broadcasts;
    assert.ok(queued > 0 && queued < 100, `${queued} of 300 were queued for it`);
    fast.write(encodeFrame(FrameType.Broadcast, 0, Buffer.from('after')));
    await waitFor(() => broadcasts === queued + 1, 5000, 'a broadcast after it reads again');
  } finally {
    slow.destroy();
    fast.destroy();
    await hub.close();
  }
});

/** The most `process.memoryUsage().arrayBuffers` grew past `base` while `ms` passed. */
async function peakGrowth(base: number, ms: number): Promise<number> {
  let peak = 0;
  for (const end = Date.now() + ms; Date.now() < end; ) {
    peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
    await new Promise((r) => setTimeout(r, 50));
  }
  return peak;
}

/** Sends `frames` on a connection to the hub that reads nothing, then reads: how many of `type` came back. */
async function askWithoutReading(
  port: number,
  frames: Buffer[],
  type: FrameType,
  before?: Buffer,
  whileUnread?: () => void,
) {
  const socket = createConnection({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  let answers = 0;
  const reader = new FrameReader(
    1 << 20,
    (f) => {
      if (f.type === type) answers++;
    },
    () => undefined,
  );
  socket.on('data', (c: Buffer) => reader.push(c));
  if (before !== undefined) {
    socket.write(before);
    await new Promise((r) => setTimeout(r, 200));
  }
  socket.pause();
  const base = process.memoryUsage().arrayBuffers;
  socket.write(Buffer.concat(frames));
  const growth = await peakGrowth(base, 1500);
  whileUnread?.();
  socket.resume();
  await waitFor(() => answers === frames.length, 20_000, `all ${frames.length} answers`);
  socket.destroy();
  return growth;
}

it('the hub stops reading a tool that asks for Members and does not take the answers, and goes on when it does', {
  timeout: 60_000,
}, async () => {
  const hub = await createHub();
  const member = createConnection({ host: '127.0.0.1', port: hub.port });
  member.on('error', () => undefined);
  member.resume();
  try {
    // A member whose info is large (legal): every Members answer carries it, 400 KB.
    const actions = Array.from({ length: 4000 }, (_, i) => `action-${i}-${'x'.repeat(90)}`);
    const info = {
      id: 'big',
      status: 'up',
      codec: 'json',
      services: [{ name: 's', version: '1', actions, notifications: [] }],
    };
    member.write(
      encodeFrame(
        FrameType.Hello,
        0,
        Buffer.from(JSON.stringify({ version: PROTOCOL_VERSION, address: '127.0.0.1:1', info })),
      ),
    );
    await waitFor(() => hub.nodes().length === 1, 2000, 'the member');
    // 300 asks (2.7 KB) for 120 MB of answers: until 2026-12-03 the hub queued them all.
    const asks = Array.from({ length: 300 }, (_, i) =>
      encodeFrame(FrameType.Members, i + 1, Buffer.alloc(0)),
    );
    const members = await askWithoutReading(hub.port, asks, FrameType.Members);
    assert.ok(members < 60 << 20, `the hub held ${(members / 2 ** 20).toFixed(0)} MiB of Members answers`);
  } finally {
    member.destroy();
    await hub.close();
  }
});

it('the hub stops reading a broker client that calls and does not take the answers, and goes on when it does', {
  timeout: 60_000,
}, async () => {
  const inner = createEmbeddedBroker({ path: ':memory:' });
  const history = inner.history as NonNullable<typeof inner.history>;
  let reads = 0;
  // The same broker, counting the history reads the hub runs.
  const broker = new Proxy(inner, {
    get(target, key) {
      if (key === 'history') {
        return {
          latest: (topic: string) => history.latest(topic),
          read: (...args: Parameters<typeof history.read>) => {
            reads++;
            return history.read(...args);
          },
        };
      }
      const value: unknown = Reflect.get(target, key);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  const hub = await createHub({ broker });
  try {
    await inner.publish(
      createEnvelope({ source: '/t', type: 'big.thing', data: { blob: 'x'.repeat(400_000) } }),
    );
    // 300 history reads (25 KB) of a 400 KB event: until 2026-12-03 the hub ran them all and queued
    // 120 MB of answers for a client that read none.
    const read = Buffer.from(
      JSON.stringify({ op: 'history.read', args: { topic: 'big.thing', after: '0' } }),
    );
    const calls = Array.from({ length: 300 }, (_, i) => encodeFrame(FrameType.BrokerCall, i + 1, read));
    const hello = encodeFrame(
      FrameType.Hello,
      0,
      Buffer.from(JSON.stringify({ version: PROTOCOL_VERSION, role: 'broker' })),
    );
    let ran = 0;
    await askWithoutReading(hub.port, calls, FrameType.BrokerResult, hello, () => {
      ran = reads;
    });
    assert.ok(ran < 100, `the hub ran ${ran} of 300 reads for a client that took no answer`);
    assert.equal(reads, 300, 'and all of them once it read');
  } finally {
    await hub.close();
    await inner.close();
  }
});

it('a TLS hub closes with a client still in its handshake', async () => {
  const pem = (name: string) => readFileSync(new URL(`fixtures/tls/${name}`, import.meta.url));
  const hub = await createHub({ tls: { ca: pem('ca.pem'), cert: pem('node.pem'), key: pem('node.key') } });
  const raw = createConnection({ host: '127.0.0.1', port: hub.port }); // plain TCP: no handshake
  raw.on('error', () => undefined);
  try {
    await once(raw, 'connect');
    await new Promise((r) => setTimeout(r, 100));
    // Until 2026-12-03 `close()` waited for it: the TLS handshake timeout, 120 s.
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([
      hub.close().then(() => true),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(false), 3000);
      }),
    ]);
    clearTimeout(timer);
    assert.ok(closed, 'hub.close() returned');
  } finally {
    raw.destroy();
  }
});
