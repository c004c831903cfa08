/**
 * The hub's embedded broker over TCP (`PARLEY_BROKER=parley://host:port`): the broker conformance
 * suite, unchanged, against a hub serving an embedded broker on a fake clock; what the hub checks
 * of its clients; and frames kept within the hub's largest.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';
import { after, it } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { LETTER_ROOM } from '../src/broker/check.ts';
import { MAX_LETTER_MESSAGE } from '../src/broker/outcome.ts';
import { createRemoteBroker } from '../src/hub/remote-broker.ts';
import {
  type Broker,
  createEmbeddedBroker,
  createEnvelope,
  createFakeClock,
  createHub,
  type Hub,
  ParleyError,
} from '../src/index.ts';
import { createRandom } from '../src/transport/faults.ts';
import { encodeFrame, FrameReader, FrameType, PROTOCOL_VERSION } from '../src/transport/tcp/frames.ts';
import { brokerConformance } from './conformance/broker.ts';
import { waitFor } from './helpers.ts';

const clock = createFakeClock();
let hub: Hub | undefined;
const inner = createEmbeddedBroker({ path: ':memory:', clock, random: createRandom(1) });
after(async () => {
  await hub?.close();
  await inner.close();
});

brokerConformance({
  name: 'hub broker over TCP (embedded, fake clock)',
  clock,
  create: async () => {
    hub ??= await createHub({ broker: inner });
    return createRemoteBroker(hub.url, { log: () => undefined });
  },
  // Broker time moves on the fake clock; the frames it causes need real turns of the event loop.
  advance: async (ms) => {
    await clock.tick(ms);
    for (let i = 0; i < 5; i++) await tick();
  },
  noInject:
    "a client publishes to the hub's broker as an envelope inside a frame of Parley's protocol, " +
    "checked by the hub (the suite's `refused alone` case), never as bare bytes",
  noInjectLetter: "the hub's dead letters are its embedded broker's, which only the hub writes",
});

it('a hub whose broker keeps no history gives clients none (not one that fails on use)', async () => {
  const plain = createEmbeddedBroker({ path: ':memory:', clock, random: createRandom(2) });
  const withoutHistory: Broker = {
    publish: (e, o) => plain.publish(e, o),
    subscribe: (s, h) => plain.subscribe(s, h),
    deadLetters: plain.deadLetters,
    close: () => plain.close(),
  };
  const other = await createHub({ broker: withoutHistory });
  const client = await createRemoteBroker(other.url, { log: () => undefined });
  try {
    assert.equal(client.history, undefined);
    hub ??= await createHub({ broker: inner });
    const full = await createRemoteBroker(hub.url, { log: () => undefined });
    assert.ok(full.history !== undefined, 'the embedded broker behind the test hub has history');
    await full.close();
  } finally {
    await client.close();
    await other.close();
    await plain.close();
  }
});

it('a history page too large for one frame comes in parts; an entry larger than any frame is passed over', async () => {
  const small = createEmbeddedBroker({ path: ':memory:', clock, random: createRandom(3) });
  const other = await createHub({ broker: small, maxPayload: 16 * 1024 });
  const client = await createRemoteBroker(other.url, { log: () => undefined, maxPayload: 16 * 1024 });
  try {
    const history = client.history;
    assert.ok(history !== undefined);
    const topic = 'history.big';
    const start = await history.latest(topic);
    const pad = 'x'.repeat(2000);
    for (let i = 0; i < 10; i++) {
      await client.publish(createEnvelope({ source: '/t', type: topic, data: { i, pad } }));
    }
    // Written to the file directly (another process could): too large for any frame of this hub.
    await small.publish(
      createEnvelope({ source: '/t', type: topic, data: { i: 'huge', pad: pad.repeat(10) } }),
    );
    await client.publish(createEnvelope({ source: '/t', type: topic, data: { i: 10, pad } }));
    const got: unknown[] = [];
    let at = start;
    let pages = 0;
    for (;;) {
      const page = await history.read(topic, at, { limit: 100 });
      pages++;
      if (page.next === at) break;
      got.push(...page.entries.map((e) => (e.envelope.data as { i: unknown }).i));
      at = page.next;
    }
    assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.ok(pages >= 3, `${pages} pages`);
  } finally {
    await client.close();
    await other.close();
    await small.close();
  }
});

it('the hub checks what its clients send, whatever broker it serves: nothing malformed reaches it', async () => {
  // A broker that checks nothing and records every call it gets.
  const seen: string[] = [];
  const record = <T>(what: string, result: T) => {
    seen.push(what);
    return Promise.resolve(result);
  };
  const letters = {
    list: (f: unknown) => record(`list ${JSON.stringify(f)}`, []),
    get: (id: unknown) => record(`get ${String(id)}`, undefined),
    replay: (f: unknown) => record(`replay ${JSON.stringify(f)}`, 0),
    purge: (f: unknown) => record(`purge ${JSON.stringify(f)}`, 0),
  };
  const trusting: Broker = {
    publish: (e) => record(`publish ${e.id}`, { id: e.id, duplicate: false }),
    subscribe: (s) => record(`subscribe ${s.topic}`, { close: async () => undefined }),
    deadLetters: letters as Broker['deadLetters'],
    history: {
      latest: (t: string) => record(`latest ${t}`, '0'),
      read: async () => ({ entries: [], next: '0', gap: false }),
    },
    close: async () => undefined,
  };
  const other = await createHub({ broker: trusting });
  const client = await createRemoteBroker(other.url, { log: () => undefined });
  const refused = (p: Promise<unknown>, what: string) =>
    assert.rejects(p, (e: unknown) => (e as { code?: string }).code === 'INVALID_ARGUMENT', what);
  try {
    await refused(client.publish({ type: 't' } as never), 'a publish of no envelope');
    await refused(
      client.publish(createEnvelope({ source: '/t', type: 't', data: 1 }), { delay: -1 }),
      'delay',
    );
    await refused(
      client.subscribe({ topic: 't', group: 'g', lease: 'x' } as never, async () => undefined),
      'lease',
    );
    await refused(client.deadLetters.list({ ids: 'all' } as never), 'filter');
    await refused(client.deadLetters.list({}, 0), 'limit');
    await refused(client.deadLetters.get('x' as never), 'id');
    await refused(client.deadLetters.replay({ topic: 5 } as never), 'replay filter');
    await refused(client.deadLetters.purge({ ids: [{}] } as never), 'purge filter');
    await refused((client.history as NonNullable<Broker['history']>).latest({} as never), 'history topic');
    assert.deepEqual(seen, [], 'nothing malformed reached the broker');
    const env = createEnvelope({ source: '/t', type: 't', data: 1 });
    await client.publish(env, { key: 'k', delay: 5 });
    await client.deadLetters.list({ topic: 't', ids: [1] }, 10);
    // A RabbitMQ or Kafka letter's id is an offset: 0 is one.
    await client.deadLetters.get(0);
    assert.deepEqual(seen, [`publish ${env.id}`, 'list {"topic":"t","ids":[1]}', 'get 0']);
  } finally {
    await client.close();
    await other.close();
  }
});

it("frames over the hub's largest are never sent: a typed error or a dead letter, and the connection goes on", async () => {
  const MAX = 32 * 1024;
  const small = createEmbeddedBroker({ path: ':memory:', clock, random: createRandom(4) });
  const other = await createHub({ broker: small, maxPayload: MAX });
  // The client's own maximum is the default (1 MiB): it takes the hub's smaller one from its welcome.
  const client = await createRemoteBroker(other.url, { log: () => undefined });
  const topic = 'size.t';
  const env = (data: { n: string; fail?: boolean }) => createEnvelope({ source: '/t', type: topic, data });
  const seen: string[] = [];
  const huge = 'e'.repeat(100_000);
  const consumer = await client.subscribe({ topic, group: 'g', maxAttempts: 1 }, async (d) => {
    const data = d.envelope.data as { n: string; fail?: boolean };
    seen.push(data.n.slice(0, 10));
    // A failure larger than any frame, details and all.
    if (data.fail) throw new ParleyError('FAILED_PRECONDITION', huge, { details: { more: huge } });
  });
  try {
    // Before: the publish was sent, the hub's reader refused the frame and closed the connection,
    // and both publishes (and all else on it) failed as UNAVAILABLE, which an outbox retries.
    const [big, fine] = await Promise.allSettled([
      client.publish(env({ n: 'x'.repeat(MAX) })),
      client.publish(env({ n: 'small' })),
    ]);
    assert.equal(big.status, 'rejected');
    assert.equal((big as PromiseRejectedResult).reason.code, 'INVALID_ARGUMENT');
    assert.match(
      (big as PromiseRejectedResult).reason.message,
      new RegExp(`over the largest this broker takes, ${MAX - LETTER_ROOM} \\(its largest frame ${MAX} less`),
    );
    assert.equal(fine.status, 'fulfilled');
    await waitFor(() => seen.includes('small'), 5000, 'the small one');

    // A failure's settle frame carries its text cut: before, it was over the hub's frame, the
    // connection closed, and the letter said only that the client went away.
    for (let i = 0; i < 3; i++)
      await client.publish(env({ n: `${i}${'f'.repeat(MAX - LETTER_ROOM - 400)}`, fail: true }));
    let letters: Awaited<ReturnType<typeof small.deadLetters.list>> = [];
    await waitFor(() => seen.length === 4, 5000, 'three failures');
    for (let i = 0; i < 100 && letters.length < 3; i++) {
      await new Promise((r) => setTimeout(r, 20));
      letters = await small.deadLetters.list({ topic });
    }
    assert.equal(letters.length, 3);
    for (const letter of letters) {
      assert.equal(letter.code, 'FAILED_PRECONDITION');
      assert.equal(letter.message, `${'e'.repeat(MAX_LETTER_MESSAGE)}… (100000 characters)`);
    }
    // Three letters of ~24 KiB do not fit one answer: an error saying so, not a lost connection.
    await assert.rejects(client.deadLetters.list({ topic }), {
      code: 'RESOURCE_EXHAUSTED',
      message: /is over the largest frame, 32768: ask for less/,
    });
    assert.equal((await client.deadLetters.list({ topic }, 1)).length, 1);

    // A message put in the broker another way, too large to deliver in a frame: dead-lettered
    // with the reason, never sent (before, the client's reader closed the connection, and the
    // message came back on the next one).
    await small.publish(env({ n: `direct${'d'.repeat(MAX)}` }));
    for (let i = 0; i < 100 && letters.length < 4; i++) {
      await new Promise((r) => setTimeout(r, 20));
      letters = await small.deadLetters.list({ topic });
    }
    const refused = letters.find((l) => l.code === 'INVALID_ARGUMENT');
    assert.match(refused?.message ?? '', /^a delivery of \d+ bytes is over the largest frame, 32768$/);
    assert.ok(!seen.includes('directdddd'));
    await client.publish(env({ n: 'after' }));
    await waitFor(() => seen.includes('after'), 5000, 'one more after all that');
  } finally {
    await consumer.close();
    await client.close();
    await other.close();
    await small.close();
  }
});

it('a subscription that cannot be made again after a reconnect is tried again, backing off, without an unhandled rejection', async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => void unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  // A hub that welcomes every connection but, after the first, goes away before answering a call.
  let connections = 0;
  const sockets = new Set<Socket>();
  const fake = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const n = ++connections;
    const reader = new FrameReader(
      1 << 20,
      (frame) => {
        if (frame.type === FrameType.Hello)
          socket.write(encodeFrame(FrameType.Welcome, 0, Buffer.from('{}')));
        else if (frame.type === FrameType.BrokerCall && n === 1)
          socket.write(
            encodeFrame(FrameType.BrokerResult, frame.id, Buffer.from('{"ok":true,"value":null}')),
          );
        else if (frame.type === FrameType.BrokerCall) socket.destroy();
      },
      () => socket.destroy(),
    );
    socket.on('data', (c: Buffer) => reader.push(c));
  });
  fake.listen(0, '127.0.0.1');
  await once(fake, 'listening');
  const logs: string[] = [];
  const broker = await createRemoteBroker(`parley://127.0.0.1:${(fake.address() as { port: number }).port}`, {
    log: (m) => void logs.push(m),
    // The jitter at its top: with Math.random the delays could all be near 0, and the count below
    // was 8 in one CI run of 2026-12-03.
    random: () => 0.99,
  });
  try {
    const consumer = await broker.subscribe({ topic: 't', group: 'g' }, async () => undefined);
    for (const s of sockets) s.destroy(); // the hub restarts
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(unhandled, []);
    assert.ok(
      logs.some((l) => l.includes('subscribing again failed')),
      logs.join('\n'),
    );
    // 99, 198, 396, 792 ms apart: a few tries in 1.5 s, not one every 100 ms.
    assert.ok(connections <= 6, `${connections} connections`);
    await consumer.close().catch(() => undefined);
  } finally {
    process.off('unhandledRejection', onUnhandled);
    await broker.close();
    for (const s of sockets) s.destroy();
    fake.close();
  }
});

it('a client that goes away while a slow broker subscribes for it leaves no consumer behind on the hub', async () => {
  const served = createEmbeddedBroker({ path: ':memory:' });
  // Any broker may be served; a networked one takes a while to subscribe.
  const slow: Broker = {
    publish: (e, o) => served.publish(e, o),
    subscribe: async (s, h) => {
      await new Promise((r) => setTimeout(r, 100));
      return served.subscribe(s, h);
    },
    deadLetters: served.deadLetters,
    close: () => served.close(),
  };
  const slowHub = await createHub({ broker: slow });
  try {
    const c = createConnection({ host: '127.0.0.1', port: slowHub.port });
    c.on('error', () => undefined);
    await once(c, 'connect');
    const spec = {
      topic: 'orders.placed',
      group: 'billing',
      maxAttempts: 2,
      backoff: { initial: 1, max: 1 },
    };
    c.write(
      encodeFrame(
        FrameType.Hello,
        0,
        Buffer.from(JSON.stringify({ version: PROTOCOL_VERSION, role: 'broker' })),
      ),
    );
    c.write(
      encodeFrame(
        FrameType.BrokerCall,
        1,
        Buffer.from(JSON.stringify({ op: 'subscribe', args: { consumer: 1, spec } })),
      ),
    );
    await new Promise((r) => setTimeout(r, 20));
    c.destroy(); // before the subscribe is done
    await new Promise((r) => setTimeout(r, 200));
    await served.publish(createEnvelope({ source: 'test', type: 'orders.placed', data: { n: 1 } }));
    await new Promise((r) => setTimeout(r, 300));
    // Before: a consumer of the gone client took the message and failed it into a dead letter.
    assert.deepEqual(await served.deadLetters.list(), []);
  } finally {
    await slowHub.close();
    await served.close();
  }
});

it("a handler from before a reconnect cannot extend the lease of the current connection's delivery of the same id", async () => {
  const served = createEmbeddedBroker({ path: ':memory:' });
  let restarted = await createHub({ broker: served });
  const port = restarted.port;
  const client = await createRemoteBroker(restarted.url, { log: () => undefined });
  try {
    let old: { extendLease(ms: number): Promise<void> } | undefined;
    const seen: number[] = [];
    await client.subscribe(
      { topic: 'orders.placed', group: 'g', backoff: { initial: 60_000, max: 60_000 } },
      async (d) => {
        const n = (d.envelope.data as { n: number }).n;
        seen.push(n);
        if (n === 1) old = d;
        await new Promise((r) => setTimeout(r, 1500));
      },
    );
    await client.publish(createEnvelope({ source: 't', type: 'orders.placed', data: { n: 1 } }));
    await waitFor(() => old !== undefined, 5000, 'the first delivery');
    await restarted.close(); // the connection drops with n=1 held (back in 60 s)
    restarted = await createHub({ broker: served, port });
    await new Promise((r) => setTimeout(r, 800)); // the client reconnects and subscribes again
    await client.publish(createEnvelope({ source: 't', type: 'orders.placed', data: { n: 2 } }));
    await waitFor(() => seen.includes(2), 5000, 'the second delivery (delivery 1 of the new connection)');
    await assert.rejects((old as { extendLease(ms: number): Promise<void> }).extendLease(10_000), {
      code: 'FAILED_PRECONDITION',
    });
  } finally {
    await client.close();
    await restarted.close();
    await served.close();
  }
});

it('a handler that returns no promise (plain JavaScript) is done when it returns; one that throws has failed', async () => {
  const served = createEmbeddedBroker({ path: ':memory:' });
  const other = await createHub({ broker: served });
  const client = await createRemoteBroker(other.url, { log: () => undefined });
  const topic = 'sync.handler';
  const seen: number[] = [];
  // Until 2026-12-03 the client called `.then` on what the handler returned: a TypeError in the
  // client's frame handling, and the delivery was never settled.
  const handler = (d: { envelope: { data: unknown } }) => {
    const n = (d.envelope.data as { n: number }).n;
    seen.push(n);
    if (n === 3) throw new ParleyError('INVALID_ARGUMENT', 'three is refused');
  };
  const consumer = await client.subscribe({ topic, group: 'g', maxAttempts: 1 }, handler as never);
  try {
    for (const n of [1, 2, 3])
      await client.publish(createEnvelope({ source: '/t', type: topic, data: { n } }));
    await waitFor(() => seen.length === 3, 5000, 'three deliveries');
    await waitFor(() => served.stats().pending === 0, 5000, 'all three settled');
    const letters = await served.deadLetters.list({ topic });
    assert.deepEqual(
      letters.map((l) => [(l.envelope.data as { n: number }).n, l.code, l.message]),
      [[3, 'INVALID_ARGUMENT', 'three is refused']],
    );
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(
      seen.sort((a, b) => a - b),
      [1, 2, 3],
      'each once: the two acked, the third dead-lettered',
    );
  } finally {
    await consumer.close();
    await client.close();
    await other.close();
    await served.close();
  }
});
