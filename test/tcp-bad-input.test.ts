/**
 * Bad input on the hub's port and on a node's call port: random bytes, a truncated frame, an
 * oversized length prefix, a wrong protocol version, a frame before hello. Each connection is
 * closed with a logged reason; the process keeps serving everyone else. And well-formed frames
 * whose requests are generated from a seed (mutated envelopes, odd types and deadlines, bytes
 * that are no JSON, cancels of anything): each gets exactly one answer with a known code.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createMsgpackCodec } from '../src/codec/msgpack.ts';
import { createRemoteBroker } from '../src/hub/remote-broker.ts';
import {
  createHub,
  createTcpTransport,
  errorCodes,
  type Hub,
  type ParleyNode,
  type TcpTransport,
} from '../src/index.ts';
import {
  encodeFrame,
  type Frame,
  FrameReader,
  FrameType,
  PROTOCOL_VERSION,
} from '../src/transport/tcp/frames.ts';
import { calc, calcService, mutate, seeded, testNode, waitFor } from './helpers.ts';

const MAX = 64 * 1024;
let hub: Hub;
let server: ParleyNode;
let caller: ParleyNode;
let serverTransport: TcpTransport;
const hubLog: string[] = [];
const nodeLog: string[] = [];

before(async () => {
  hub = await createHub({ maxPayload: MAX, log: (m) => void hubLog.push(m) });
  serverTransport = createTcpTransport({ hub: hub.url, maxPayload: MAX, log: (m) => void nodeLog.push(m) });
  server = testNode({ id: 'server', transport: serverTransport, services: [calcService()] });
  caller = testNode({ id: 'caller', transport: createTcpTransport({ hub: hub.url, maxPayload: MAX }) });
  await server.start();
  await caller.start();
});

after(async () => {
  await caller.stop();
  await server.stop();
  await hub.close();
});

/** The port where `server` takes calls, as the hub announced it. */
const nodePort = () => {
  const address = hub.snapshot().nodes.find((n) => n.info.id === 'server')?.address ?? '';
  return Number(address.slice(address.lastIndexOf(':') + 1));
};

async function send(port: number, bytes: Buffer, end = false): Promise<Socket> {
  const socket = createConnection({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  socket.write(bytes);
  if (end) socket.end();
  return socket;
}

/** Resolves when the other side closes `socket`; fails if it is still open after 2 s. */
async function closedByPeer(socket: Socket): Promise<void> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    socket.destroy();
  }, 2000);
  if (!socket.closed) await once(socket, 'close');
  clearTimeout(timer);
  assert.equal(timedOut, false, 'the peer closed the connection');
}

const hello = (version: number) => encodeFrame(FrameType.Hello, 0, Buffer.from(JSON.stringify({ version })));
const oversized = () => {
  const b = Buffer.alloc(9);
  b.writeUInt32BE(0xfffffff0, 0); // ~4 GiB announced: refused from the 4-byte header
  return b;
};

const cases: { name: string; bytes: () => Buffer; reason: RegExp }[] = [
  {
    name: 'random bytes',
    bytes: () => Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
    reason: /over the maximum|unknown frame type/,
  },
  { name: 'an oversized length prefix', bytes: oversized, reason: /over the maximum/ },
  {
    name: 'an unknown frame type',
    bytes: () => encodeFrame(99 as FrameType, 1, Buffer.alloc(3)),
    reason: /unknown frame type 99/,
  },
  {
    name: 'a wrong protocol version',
    bytes: () => hello(PROTOCOL_VERSION + 41),
    reason: /protocol version 42 is not supported/,
  },
  {
    name: 'a hello that is not JSON',
    bytes: () => encodeFrame(FrameType.Hello, 0, Buffer.from('{nope')),
    reason: /not JSON/,
  },
];

const stillServes = async () => {
  assert.deepEqual(await caller.client(calc).add({ a: 2, b: 3 }), { sum: 5 });
  assert.deepEqual(hub.nodes().sort(), ['caller', 'server']);
};

/** A hello that would be sent on to every node: refused with the reason instead. */
const badInfo = (info: unknown) =>
  encodeFrame(
    FrameType.Hello,
    0,
    Buffer.from(JSON.stringify({ version: PROTOCOL_VERSION, info, address: '127.0.0.1:1' })),
  );
const node = { id: 'forger', status: 'up', codec: 'json' };

describe('bad input on the hub port', () => {
  for (const c of [
    ...cases,
    {
      name: 'a hello whose node info lists a service that is null',
      bytes: () => badInfo({ ...node, services: [null] }),
      reason: /no valid node info: node forger: service 0 is not an object/,
    },
    {
      name: 'a hello whose service actions are not a list',
      bytes: () =>
        badInfo({ ...node, services: [{ name: 'calc', version: '1', actions: 'add', notifications: [] }] }),
      reason: /no valid node info: node forger: service calc's actions is not a list/,
    },
    {
      name: 'a hello without an address',
      bytes: () =>
        encodeFrame(
          FrameType.Hello,
          0,
          Buffer.from(JSON.stringify({ version: PROTOCOL_VERSION, info: { ...node, services: [] } })),
        ),
      reason: /hello has no address/,
    },
  ]) {
    it(`${c.name}: closed with a logged reason, the hub keeps serving`, async () => {
      const before = hubLog.length;
      await closedByPeer(await send(hub.port, c.bytes()));
      await waitFor(
        () => hubLog.slice(before).some((l) => c.reason.test(l)),
        2000,
        `log matching ${c.reason}`,
      );
      await stillServes();
    });
  }

  it('a truncated frame and a hang-up: nothing is registered, nothing breaks', async () => {
    const frame = hello(PROTOCOL_VERSION);
    const socket = await send(hub.port, frame.subarray(0, frame.length - 3), true);
    await once(socket, 'close');
    await stillServes();
  });
});

describe('bad input on a node call port', () => {
  for (const c of [
    ...cases,
    {
      name: 'a request before hello',
      bytes: () => encodeFrame(FrameType.Request, 1, Buffer.from('{}')),
      reason: /before hello/,
    },
  ]) {
    it(`${c.name}: closed with a logged reason, the node keeps serving`, async () => {
      const before = nodeLog.length;
      await closedByPeer(await send(nodePort(), c.bytes()));
      await waitFor(
        () => nodeLog.slice(before).some((l) => c.reason.test(l)),
        2000,
        `log matching ${c.reason}`,
      );
      await stillServes();
    });
  }

  it('a garbage request after a good hello gets an INVALID_ARGUMENT reply, not a crash', async () => {
    const socket = await send(
      nodePort(),
      Buffer.concat([
        hello(PROTOCOL_VERSION),
        encodeFrame(FrameType.Request, 7, Buffer.from('not an envelope')),
      ]),
    );
    const [chunk] = (await once(socket, 'data')) as [Buffer];
    assert.equal(chunk.readUInt8(4), FrameType.Reply);
    const reply = JSON.parse(chunk.subarray(9).toString('utf8')) as { ok: boolean; error: { code: string } };
    assert.equal(reply.ok, false);
    assert.equal(reply.error.code, 'INVALID_ARGUMENT');
    assert.equal(chunk.readUInt32BE(5), 7, 'answers request 7');
    socket.destroy();
    await stillServes();
  });

  it('a truncated frame and a hang-up: the node keeps serving', async () => {
    const frame = encodeFrame(FrameType.Request, 1, Buffer.alloc(100));
    const socket = await send(
      nodePort(),
      Buffer.concat([hello(PROTOCOL_VERSION), frame.subarray(0, 50)]),
      true,
    );
    await once(socket, 'close');
    await stillServes();
  });
});

describe('generated requests on a node call port', () => {
  const SEED = Number(process.env.PARLEY_FUZZ_SEED ?? 20261130);
  const COUNT = Number(process.env.PARLEY_FUZZ_COUNT ?? 600);

  it(`${COUNT} requests (seed ${SEED}): one answer each, with a known code, on an open connection`, async (t) => {
    const g = seeded(SEED);
    const valid = () => ({
      specversion: '1.0',
      id: `fuzz-${g.int(1e9)}`,
      source: '/fuzz',
      type: 'calc.add',
      deadline: Date.now() + 5000,
      data: { a: g.int(100), b: g.int(100), note: 'n' },
    });
    const payload = (): { bytes: Buffer; sent: unknown } => {
      const kind = g.int(10);
      if (kind === 0)
        return { bytes: Buffer.from(Array.from({ length: g.int(64) }, () => g.int(256))), sent: 0 };
      if (kind === 1) return { bytes: Buffer.alloc(0), sent: 0 };
      if (kind === 2) {
        const env = {
          ...valid(),
          type: g.pick(['calc.nope', '', 'x'.repeat(300), '__proto__', 'calc.echo']),
        };
        return { bytes: Buffer.from(JSON.stringify(env)), sent: env };
      }
      if (kind === 3) {
        const env = {
          ...valid(),
          deadline: g.pick([0, -1, 1e300, Date.now() - 1000, '2026-01-01T00:00:00Z']),
        };
        return { bytes: Buffer.from(JSON.stringify(env)), sent: env };
      }
      if (kind === 4) {
        const text = JSON.stringify(valid());
        return { bytes: Buffer.from(text.replace('"source"', '"__proto__":{"x":1},"source"')), sent: 0 };
      }
      const env = kind < 7 ? valid() : mutate(g, valid());
      return { bytes: Buffer.from(JSON.stringify(env)), sent: env };
    };

    const socket = await send(nodePort(), hello(PROTOCOL_VERSION));
    const answers = new Map<number, Frame[]>();
    let closed = false;
    socket.on('close', () => (closed = true));
    const reader = new FrameReader(
      MAX * 2,
      (frame) => {
        const list = answers.get(frame.id) ?? [];
        list.push({ ...frame, payload: Buffer.from(frame.payload) });
        answers.set(frame.id, list);
      },
      (reason) => assert.fail(`the node's answer is not a frame: ${reason}`),
    );
    socket.on('data', (chunk: Buffer) => reader.push(chunk));

    const sent = new Map<number, unknown>();
    const frames: Buffer[] = [];
    for (let id = 1; id <= COUNT; id++) {
      const p = payload();
      sent.set(id, p.sent);
      frames.push(encodeFrame(FrameType.Request, id, p.bytes));
      // Cancels of calls in flight, of calls done, of calls that never were.
      if (g.chance(0.1))
        frames.push(encodeFrame(FrameType.Cancel, g.pick([id, id - 1, 0, 0xffffffff]), Buffer.alloc(0)));
      if (frames.length >= 16) socket.write(Buffer.concat(frames.splice(0)));
    }
    socket.write(Buffer.concat(frames));
    await waitFor(() => answers.size >= COUNT || closed, 10_000, 'an answer to every request');
    assert.equal(closed, false, 'the connection stays open: these are well-formed frames');

    const known = new Set<string>(errorCodes);
    const msgpack = createMsgpackCodec();
    const codes = new Map<string, number>();
    for (let id = 1; id <= COUNT; id++) {
      const got = answers.get(id) ?? [];
      assert.equal(got.length, 1, `request ${id} has one answer, not ${got.length}`);
      const frame = got[0] as Frame;
      // Answered in the codec the request seems to be in (its first byte), as for any caller.
      const body = (
        frame.payload[0] === 0x7b ? JSON.parse(frame.payload.toString('utf8')) : msgpack.decode(frame.payload)
      ) as {
        ok?: boolean;
        data?: { sum?: unknown };
        error?: { code?: string };
        code?: string;
      };
      if (frame.type === FrameType.Reply && body.ok === true) {
        codes.set('ok', (codes.get('ok') ?? 0) + 1);
        const env = sent.get(id) as { data: { a: number; b: number } };
        assert.equal(body.data?.sum, env.data.a + env.data.b, `request ${id} adds what it sent`);
        continue;
      }
      const code = frame.type === FrameType.Reply ? body.error?.code : body.code;
      assert.ok(
        frame.type === FrameType.Reply || frame.type === FrameType.Failure,
        `frame type ${frame.type}`,
      );
      assert.ok(known.has(String(code)), `request ${id}: code ${String(code)}`);
      codes.set(String(code), (codes.get(String(code)) ?? 0) + 1);
    }
    t.diagnostic(`answers: ${JSON.stringify([...codes])}`);
    // The generator reaches the handler as well as every refusal.
    assert.ok((codes.get('ok') ?? 0) > COUNT / 10, JSON.stringify([...codes]));
    assert.ok((codes.get('INVALID_ARGUMENT') ?? 0) > COUNT / 10, JSON.stringify([...codes]));
    socket.destroy();
    await stillServes();
  });
});

describe('a hub with a shared token', () => {
  it('refuses a node without the token, admits one with it, and its nodes refuse callers without it', async () => {
    const log: string[] = [];
    const memberLog: string[] = [];
    const guarded = await createHub({ token: 's3cret', log: (m) => void log.push(m) });
    try {
      const intruder = createTcpTransport({ hub: guarded.url, token: 'guess', log: () => undefined });
      await assert.rejects(
        testNode({ id: 'intruder', transport: intruder }).start(),
        (e: unknown) => e instanceof Error && /refused|not reachable/.test(e.message),
      );
      assert.ok(log.some((l) => /wrong token/.test(l)));
      const member = testNode({
        id: 'member',
        transport: createTcpTransport({
          hub: guarded.url,
          token: 's3cret',
          log: (m) => void memberLog.push(m),
        }),
        services: [calcService()],
      });
      await member.start();
      const address = guarded.snapshot().nodes[0]?.address ?? '';
      const socket = await send(Number(address.slice(address.lastIndexOf(':') + 1)), hello(PROTOCOL_VERSION));
      await closedByPeer(socket);
      await waitFor(() => memberLog.some((l) => /wrong token/.test(l)), 2000, 'the node logs the refusal');
      await member.stop();
    } finally {
      await guarded.close();
    }
  });
});

/** Counts the Reply frames that arrive on `socket` (read from now on). */
function countReplies(socket: Socket): () => number {
  let replies = 0;
  const reader = new FrameReader(
    1 << 20,
    (f: Frame) => {
      if (f.type === FrameType.Reply) replies++;
    },
    () => undefined,
  );
  socket.on('data', (c: Buffer) => reader.push(c));
  return () => replies;
}

describe('a node call port: what a refused or misbehaving peer cannot do', () => {
  const noop = { onBroadcast() {}, onNodeUp() {}, onNodeDown() {} };
  const info = (id: string) => ({ id, status: 'up' as const, codec: 'json', services: [] });
  const portOf = (id: string) => {
    const address = hub.snapshot().nodes.find((n) => n.info.id === id)?.address ?? '';
    return Number(address.slice(address.lastIndexOf(':') + 1));
  };

  it('the requests after a refused frame, in the same read, are not run', async () => {
    let ran = 0;
    const t = createTcpTransport({ hub: hub.url, log: () => undefined });
    await t.start(info('refuser'), {
      ...noop,
      onRequest: async (f) => {
        ran++;
        return f;
      },
    });
    try {
      const frames = [hello(PROTOCOL_VERSION), encodeFrame(FrameType.Members, 0, Buffer.alloc(0))];
      for (let i = 1; i <= 20; i++) frames.push(encodeFrame(FrameType.Request, i, Buffer.from('x')));
      await closedByPeer(await send(portOf('refuser'), Buffer.concat(frames)));
      assert.equal(ran, 0);
    } finally {
      t.destroy();
    }
  });

  it('maxConcurrent holds for requests that came in one read: the rest wait, then run', async () => {
    let running = 0;
    let most = 0;
    const waiting: (() => void)[] = [];
    const t = createTcpTransport({ hub: hub.url, maxConcurrent: 16, log: () => undefined });
    await t.start(info('bounded'), {
      ...noop,
      onRequest: (f) =>
        new Promise((resolve) => {
          running++;
          most = Math.max(most, running);
          waiting.push(() => {
            running--;
            resolve(f);
          });
        }),
    });
    const frames = [hello(PROTOCOL_VERSION)];
    for (let i = 1; i <= 2000; i++) frames.push(encodeFrame(FrameType.Request, i, Buffer.from('x')));
    const socket = await send(portOf('bounded'), Buffer.concat(frames));
    const replies = countReplies(socket);
    try {
      await waitFor(() => running === 16, 2000, '16 running');
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(most, 16, 'no more than maxConcurrent at once');
      // Answering lets the rest in, never more than 16 at once; all 2,000 are answered.
      for (let i = 0; i < 400 && replies() < 2000; i++) {
        for (const done of waiting.splice(0)) done();
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(replies(), 2000);
      assert.equal(most, 16);
    } finally {
      socket.destroy();
      t.destroy();
    }
  });

  it('a caller that stops reading its answers stops being read: the unread answers stay bounded', async () => {
    let handled = 0;
    // maxConcurrent (1,024) is never reached: the handlers answer at once.
    const t = createTcpTransport({ hub: hub.url, log: () => undefined });
    await t.start(info('bounded-writes'), {
      ...noop,
      onRequest: async () => {
        handled++;
        return Buffer.alloc(64 * 1024, 1);
      },
    });
    const frames = [hello(PROTOCOL_VERSION)];
    for (let i = 1; i <= 4000; i++) frames.push(encodeFrame(FrameType.Request, i, Buffer.from('x')));
    const socket = createConnection({ host: '127.0.0.1', port: portOf('bounded-writes') });
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    socket.pause(); // reads nothing
    socket.write(Buffer.concat(frames));
    try {
      await new Promise((r) => setTimeout(r, 1000));
      // 4,000 answers of 64 KiB would be 250 MiB; the bound is 8 MiB here, plus what the sockets hold.
      assert.ok(handled < 1000, `${handled} handled while nothing was read`);
      // Reading again lets the rest in: every request is answered.
      const replies = countReplies(socket);
      socket.resume();
      await waitFor(() => replies() === 4000, 10_000, 'every answer');
      assert.equal(handled, 4000);
    } finally {
      socket.destroy();
      t.destroy();
    }
  });

  it('stop() ends though a connected caller never closes its side', async () => {
    const t = createTcpTransport({ hub: hub.url, log: () => undefined });
    await t.start(info('stopper'), { ...noop, onRequest: async (f) => f });
    const peer = createConnection({ host: '127.0.0.1', port: portOf('stopper'), allowHalfOpen: true });
    peer.on('error', () => undefined);
    await once(peer, 'connect');
    peer.write(hello(PROTOCOL_VERSION));
    peer.resume();
    await waitFor(() => peer.bytesWritten > 0, 2000, 'the hello to leave');
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      t.stop().then(() => 'stopped'),
      new Promise((r) => {
        timer = setTimeout(() => r('hung'), 3000);
      }),
    ]);
    clearTimeout(timer);
    peer.destroy();
    t.destroy();
    assert.equal(outcome, 'stopped');
  });

  it('a reply is taken only from the peer the call went to', async () => {
    const a = createTcpTransport({ hub: hub.url, log: () => undefined });
    await a.start(info('honest'), {
      ...noop,
      onRequest: () => new Promise((r) => setTimeout(() => r(Buffer.from('from honest')), 200)),
    });
    // A peer that answers request ids it was never sent (the call just before its own).
    const liar = createServer((s) => {
      s.on('error', () => undefined);
      const reader = new FrameReader(
        1 << 20,
        (f: Frame) => {
          if (f.type === FrameType.Request)
            s.write(encodeFrame(FrameType.Reply, f.id - 1, Buffer.from('from liar')));
        },
        () => s.destroy(),
      );
      s.on('data', (c: Buffer) => reader.push(c));
    });
    liar.listen(0, '127.0.0.1');
    await once(liar, 'listening');
    const registration = await send(
      hub.port,
      encodeFrame(
        FrameType.Hello,
        0,
        Buffer.from(
          JSON.stringify({
            version: PROTOCOL_VERSION,
            info: info('liar'),
            address: `127.0.0.1:${(liar.address() as { port: number }).port}`,
          }),
        ),
      ),
    );
    registration.resume();
    const asker = createTcpTransport({ hub: hub.url, log: () => undefined });
    await asker.start(info('asker'), { ...noop, onRequest: async (f) => f });
    try {
      await waitFor(() => hub.nodes().includes('liar'), 2000, 'the liar to register');
      const toHonest = asker.request('honest', Buffer.from('q'));
      const toLiar = asker
        .request('liar', Buffer.from('q'), { signal: AbortSignal.timeout(1000) })
        .catch(() => 'failed');
      assert.equal(Buffer.from(await toHonest).toString(), 'from honest');
      assert.equal(await toLiar, 'failed');
    } finally {
      registration.destroy();
      asker.destroy();
      a.destroy();
      liar.close();
    }
  });
});

describe('a hub that accepts and says nothing', () => {
  it("a node's start and a broker client fail with UNAVAILABLE after the welcome timeout, not hang", async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
      s.resume();
    });
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const url = `parley://127.0.0.1:${(silent.address() as { port: number }).port}`;
    const logs: string[] = [];
    try {
      const t = createTcpTransport({ hub: url, reconnect: { welcome: 300 }, log: (m) => void logs.push(m) });
      const started = Date.now();
      await assert.rejects(
        t.start(
          { id: 'n', status: 'up', codec: 'json', services: [] },
          {
            onRequest: async (f) => f,
            onBroadcast() {},
            onNodeUp() {},
            onNodeDown() {},
          },
        ),
        { code: 'UNAVAILABLE' },
      );
      assert.ok(Date.now() - started < 3000, `${Date.now() - started} ms`);
      assert.ok(
        logs.some((l) => l.includes('sent no welcome within 300 ms')),
        logs.join('\n'),
      );
      t.destroy();
      await assert.rejects(createRemoteBroker(url, { welcomeTimeout: 300, log: () => undefined }), {
        code: 'UNAVAILABLE',
      });
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });
});
