/**
 * Streaming calls: output streams (the handler yields chunks) and input streams (the caller sends
 * chunks), on the in-process path, the memory transport and the TCP transport. Order, size limits,
 * backpressure both ways, cancellation, errors mid-stream, validation per chunk, idle sessions.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  createFakeClock,
  createHub,
  createMemoryNetwork,
  createTcpTransport,
  defineContract,
  type Hub,
  implement,
  ParleyError,
  type ParleyNode,
  type Transport,
  z,
} from '../src/index.ts';
import { testNode, waitFor } from './helpers.ts';

const files = defineContract({
  name: 'files',
  version: '1.0.0',
  actions: {
    count: {
      input: z.object({ to: z.number().int().min(0), failAt: z.number().int().optional() }),
      output: z.object({ n: z.number().int() }),
      stream: 'output',
      errors: { BROKEN: 'DATA_LOSS' },
    },
    blob: {
      input: z.object({ chunks: z.number().int(), size: z.number().int() }),
      output: z.object({ i: z.number().int(), data: z.string() }),
      stream: 'output',
    },
    sum: {
      input: z.object({ n: z.number() }),
      output: z.object({ total: z.number(), chunks: z.number().int() }),
      stream: 'input',
    },
    firstThree: {
      input: z.object({ n: z.number() }),
      output: z.object({ seen: z.array(z.number()) }),
      stream: 'input',
    },
  },
});

/** What the server side saw, for assertions about backpressure and cleanup. */
const seen = { produced: 0, finished: 0, aborted: 0, consumed: 0 };
let slowReader = 0;

const filesService = implement(files, {
  actions: {
    count: async function* ({ to, failAt }, ctx) {
      try {
        for (let n = 0; n < to; n++) {
          if (n === failAt) throw ctx.fail('BROKEN', `broke at ${n}`);
          seen.produced++;
          yield { n };
        }
      } finally {
        seen.finished++;
        if (ctx.signal.aborted) seen.aborted++;
      }
    },
    blob: function* ({ chunks, size }) {
      for (let i = 0; i < chunks; i++) yield { i, data: String.fromCharCode(97 + (i % 26)).repeat(size) };
    },
    sum: async (chunks) => {
      let total = 0;
      let count = 0;
      for await (const { n } of chunks) {
        total += n;
        count++;
        seen.consumed++;
        if (slowReader > 0) await sleep(slowReader);
      }
      return { total, chunks: count };
    },
    firstThree: async (chunks) => {
      const out: number[] = [];
      for await (const { n } of chunks) {
        out.push(n);
        if (out.length === 3) break;
      }
      return { seen: out };
    },
  },
});

interface Pair {
  server: ParleyNode;
  caller: ParleyNode;
}

const hubs: Hub[] = [];
after(async () => {
  for (const h of hubs) await h.close();
});

const setups: { name: string; make(): Promise<Pair> }[] = [
  {
    name: 'in-process',
    async make() {
      const node = testNode({ services: [filesService] });
      await node.start();
      return { server: node, caller: node };
    },
  },
  {
    name: 'memory transport',
    async make() {
      const net = createMemoryNetwork();
      return start(net.transport({ maxPayload: 256 * 1024 }), net.transport({ maxPayload: 256 * 1024 }));
    },
  },
  {
    name: 'tcp transport',
    async make() {
      const hub = await createHub({ maxPayload: 256 * 1024 });
      hubs.push(hub);
      const t = () => createTcpTransport({ hub: hub.url, maxPayload: 256 * 1024, log: () => undefined });
      return start(t(), t());
    },
  },
];

async function start(a: Transport, b: Transport): Promise<Pair> {
  const server = testNode({ id: 'server', transport: a, services: [filesService], validateOutput: true });
  const caller = testNode({ id: 'caller', transport: b });
  await server.start();
  await caller.start();
  await waitFor(() => caller.registry.endpoints('files').length > 0, 5000, 'server known');
  return { server, caller };
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of stream) out.push(x);
  return out;
}

for (const setup of setups) {
  describe(`streams, ${setup.name}`, () => {
    let pair: Pair;
    const fresh = async () => {
      pair ??= await setup.make();
      Object.assign(seen, { produced: 0, finished: 0, aborted: 0, consumed: 0 });
      slowReader = 0;
      return pair.caller.client(files);
    };
    after(async () => {
      await pair?.caller.stop();
      if (pair?.server !== pair?.caller) await pair?.server.stop();
    });

    it('an output stream delivers every chunk, in order, then ends', async () => {
      const client = await fresh();
      const got = await collect(client.count({ to: 1000 }));
      assert.deepEqual(
        got.map((c) => c.n),
        Array.from({ length: 1000 }, (_, i) => i),
      );
      assert.equal(seen.finished, 1);
    });

    it('large data: 3 MiB in 64 KiB chunks crosses a 256 KiB frame limit in pages', async () => {
      const client = await fresh();
      let bytes = 0;
      let i = 0;
      for await (const chunk of client.blob({ chunks: 48, size: 64 * 1024 })) {
        assert.equal(chunk.i, i++);
        bytes += chunk.data.length;
      }
      assert.equal(bytes, 48 * 64 * 1024);
    });

    it('backpressure: a slow reader keeps the producer at most about two pages ahead', async () => {
      const client = await fresh();
      const stream = client.count({ to: 100_000 });
      let read = 0;
      for await (const _ of stream) {
        read++;
        if (read === 10) {
          await sleep(200);
          break;
        }
      }
      assert.ok(seen.produced < 10 + 3 * 64 + 2, `produced ${seen.produced} while 10 were read`);
      await waitFor(() => seen.finished === 1, 2000, 'the producer is stopped');
    });

    it('breaking out of the loop cancels the handler: its finally runs, its signal aborts', async () => {
      const client = await fresh();
      for await (const c of client.count({ to: 1_000_000 })) if (c.n === 5) break;
      await waitFor(() => seen.finished === 1, 2000, 'generator closed');
      if (setup.name !== 'in-process') assert.equal(seen.aborted, 1, 'ctx.signal aborted on cancel');
      assert.equal(pair.server.inFlight(), 0, 'no session left open');
    });

    it('an error mid-stream reaches the reader after the chunks before it, with its code', async () => {
      const client = await fresh();
      const got: number[] = [];
      await assert.rejects(
        (async () => {
          for await (const c of client.count({ to: 10, failAt: 3 })) got.push(c.n);
        })(),
        (e: unknown) => e instanceof ParleyError && e.code === 'DATA_LOSS' && e.reason === 'BROKEN',
      );
      assert.deepEqual(got, [0, 1, 2]);
    });

    it('invalid input to an output stream fails at the first read with INVALID_ARGUMENT', async () => {
      const client = await fresh();
      const stream = client.count({ to: -1 });
      await assert.rejects(
        collect(stream),
        (e: unknown) => e instanceof ParleyError && e.code === 'INVALID_ARGUMENT',
      );
    });

    it('an input stream: 10 000 chunks summed by the handler', async () => {
      const client = await fresh();
      async function* numbers() {
        for (let n = 1; n <= 10_000; n++) yield { n };
      }
      assert.deepEqual(await client.sum(numbers()), { total: 50_005_000, chunks: 10_000 });
      assert.deepEqual(await client.sum([{ n: 1 }, { n: 2 }]), { total: 3, chunks: 2 }, 'a plain array too');
      assert.deepEqual(await client.sum([]), { total: 0, chunks: 0 }, 'and nothing at all');
    });

    it('input backpressure: the sender runs no further ahead than the queue and a page', async () => {
      const client = await fresh();
      slowReader = 2;
      let sent = 0;
      let maxAhead = 0;
      async function* numbers() {
        for (let n = 0; n < 700; n++) {
          sent++;
          maxAhead = Math.max(maxAhead, sent - seen.consumed);
          yield { n };
        }
      }
      const result = await client.sum(numbers(), { timeout: 30_000 });
      assert.equal(result.chunks, 700);
      assert.ok(maxAhead <= 256 + 2 * 64 + 2, `sender ran ${maxAhead} chunks ahead`);
    });

    it('an invalid chunk fails the call with INVALID_ARGUMENT naming the chunk', async () => {
      const client = await fresh();
      const bad = [{ n: 1 }, { n: 'two' }, { n: 3 }] as unknown as { n: number }[];
      await assert.rejects(
        client.sum(bad),
        (e: unknown) => e instanceof ParleyError && e.code === 'INVALID_ARGUMENT',
      );
      await waitFor(() => pair.server.inFlight() === 0, 2000, 'session closed');
    });

    it('a handler that stops reading early answers at once, and the sender stops', async () => {
      const client = await fresh();
      let pulled = 0;
      let returned = false;
      const source: AsyncIterable<{ n: number }> = {
        [Symbol.asyncIterator]: () => ({
          next: async () => ({ value: { n: pulled++ }, done: false }),
          return: async () => {
            returned = true;
            return { value: undefined, done: true };
          },
        }),
      };
      assert.deepEqual(await client.firstThree(source), { seen: [0, 1, 2] });
      assert.ok(returned, 'the source was told to stop');
      assert.ok(pulled < 1000, `the sender stopped (${pulled} chunks)`);
    });

    it('a sender that fails cancels the call; the handler sees CANCELLED, not a hang', async () => {
      const client = await fresh();
      async function* failing() {
        yield { n: 1 };
        throw new ParleyError('ABORTED', 'source broke');
      }
      await assert.rejects(
        client.sum(failing()),
        (e: unknown) => e instanceof ParleyError && e.code === 'ABORTED',
      );
      await waitFor(() => pair.server.inFlight() === 0, 2000, 'no session left open');
    });
  });
}

describe('streams: idle sessions', () => {
  it('a stream nobody pulls from is cancelled after the idle timeout (fake clock)', async () => {
    const clock = createFakeClock();
    const net = createMemoryNetwork({ clock });
    const server = testNode({ id: 'server', clock, transport: net.transport(), services: [filesService] });
    const caller = testNode({ id: 'caller', clock, transport: net.transport() });
    await server.start();
    await caller.start();
    Object.assign(seen, { produced: 0, finished: 0, aborted: 0, consumed: 0 });
    // A deadline far off: the idle timeout ends it (a stream also ends at its call's deadline).
    const it = caller.client(files).count({ to: 1_000_000 }, { timeout: 600_000 })[Symbol.asyncIterator]();
    const first = it.next();
    for (let i = 0; i < 50 && seen.produced === 0; i++) await clock.tick(1);
    assert.deepEqual((await first).value, { n: 0 });
    assert.equal(server.inFlight(), 1, 'one open session');
    await clock.tick(29_000);
    assert.equal(server.inFlight(), 1, 'still open before the idle timeout');
    await clock.tick(31_000);
    await waitFor(() => seen.finished === 1, 2000, 'the producer was stopped');
    assert.equal(server.inFlight(), 0);
    assert.equal(seen.aborted, 1);
    await caller.stop();
    await server.stop();
  });
});

describe('streams: a remote output stream keeps to its call', () => {
  const ticker = defineContract({
    name: 'ticker',
    version: '1.0.0',
    actions: { count: { input: z.object({}), output: z.object({ n: z.number() }), stream: 'output' } },
  });
  const state: { signal: AbortSignal | undefined } = { signal: undefined };
  const handlerAborted = () => state.signal?.aborted === true;
  const tickerService = implement(ticker, {
    actions: {
      count: async function* (_input, ctx) {
        state.signal = ctx.signal;
        for (let n = 0; !ctx.signal.aborted; n++) yield { n };
      },
    },
  });

  for (const end of ['its deadline', "its caller's signal"] as const) {
    it(`stops at ${end}, on both sides (fake clock)`, async () => {
      state.signal = undefined;
      const clock = createFakeClock();
      const net = createMemoryNetwork({ clock });
      const server = testNode({ id: 'server', clock, transport: net.transport(), services: [tickerService] });
      const caller = testNode({ id: 'caller', clock, transport: net.transport() });
      await server.start();
      await caller.start();
      /** Settles `p`, moving the fake clock a millisecond at a time while it is pending. */
      const settle = async <T>(p: Promise<T>): Promise<T> => {
        let done = false;
        p.then(
          () => (done = true),
          () => (done = true),
        );
        for (let i = 0; i < 200 && !done; i++) await clock.tick(1);
        return p;
      };
      const ac = new AbortController();
      const iterator = caller
        .client(ticker)
        .count({}, { timeout: 1000, signal: ac.signal })
        [Symbol.asyncIterator]();
      assert.deepEqual((await settle(iterator.next())).value, { n: 0 });
      if (end === 'its deadline') await clock.tick(10_000);
      else ac.abort();
      // What was pulled before may still be read; then reading fails (until 2026-12-03 it went on).
      let error: unknown;
      try {
        for (let i = 0; i < 300; i++) await settle(iterator.next());
      } catch (e) {
        error = e;
      }
      assert.ok(error instanceof ParleyError, String(error));
      assert.equal(error.code, end === 'its deadline' ? 'DEADLINE_EXCEEDED' : 'CANCELLED');
      for (let i = 0; i < 50 && !handlerAborted(); i++) await clock.tick(10);
      assert.equal(handlerAborted(), true, "the handler's signal aborted");
      assert.equal(server.inFlight(), 0, 'no session left open');
      const stopping = [caller.stop(), server.stop()];
      await clock.tick(20_000);
      await Promise.all(stopping);
    });
  }
});

describe('streams: a peer that answers with something that is no page', () => {
  /** The caller's transport, with each stream page's `data` from the server rewritten by `tamper`. */
  const tampering = (inner: Transport, tamper: (page: Record<string, unknown>) => unknown): Transport => ({
    get maxPayload() {
      return inner.maxPayload;
    },
    start: (self, handler) => inner.start(self, handler),
    announce: (self) => inner.announce(self),
    async request(nodeId, frame, options) {
      const reply = JSON.parse(Buffer.from(await inner.request(nodeId, frame, options)).toString()) as {
        ok: boolean;
        data?: Record<string, unknown>;
      };
      if (reply.ok && typeof reply.data === 'object' && reply.data !== null && 'chunks' in reply.data)
        reply.data = tamper(reply.data) as Record<string, unknown>;
      return Buffer.from(JSON.stringify(reply));
    },
    broadcast: (frame) => inner.broadcast(frame),
    stop: () => inner.stop(),
  });

  const pages: [string, (p: Record<string, unknown>) => unknown][] = [
    ['chunks as a string', (p) => ({ ...p, chunks: 'abc' })],
    ['no done', (p) => ({ ...p, done: undefined })],
    ['no session', (p) => ({ ...p, session: 7 })],
    ['null', () => null],
  ];
  for (const [name, tamper] of pages) {
    it(`${name}: the stream fails with INTERNAL, nothing is yielded`, async () => {
      const net = createMemoryNetwork();
      const server = testNode({ id: 'server', transport: net.transport(), services: [filesService] });
      const caller = testNode({ id: 'caller', transport: tampering(net.transport(), tamper) });
      await server.start();
      await caller.start();
      try {
        await waitFor(() => caller.registry.endpoints('files').length > 0, 5000, 'server known');
        const got: unknown[] = [];
        await assert.rejects(
          (async () => {
            for await (const chunk of caller.client(files).count({ to: 3 })) got.push(chunk);
          })(),
          (e: unknown) => {
            assert.ok(e instanceof ParleyError);
            assert.equal(e.code, 'INTERNAL');
            assert.match(e.message, /no page/);
            return true;
          },
        );
        assert.deepEqual(got, []);
      } finally {
        await caller.stop();
        await server.stop();
      }
    });
  }
});

describe('streams: a remote input stream from a slow source', () => {
  const sink = defineContract({
    name: 'sink',
    version: '1.0.0',
    actions: {
      sum: {
        input: z.object({ n: z.number() }),
        output: z.object({ total: z.number(), count: z.number() }),
        stream: 'input',
        idempotent: true,
      },
    },
  });
  const sinkService = (seen: number[]) =>
    implement(sink, {
      actions: {
        sum: async (chunks) => {
          let total = 0;
          let count = 0;
          for await (const { n } of chunks) {
            seen.push(n);
            total += n;
            count++;
          }
          return { total, count };
        },
      },
    });

  it('chunks leave as they come, and a quiet source keeps its session past the idle timeout (fake clock)', async () => {
    const clock = createFakeClock();
    const net = createMemoryNetwork({ clock });
    const seen: number[] = [];
    const server = testNode({ clock, transport: net.transport(), services: [sinkService(seen)] });
    const caller = testNode({ clock, transport: net.transport() });
    await server.start();
    await caller.start();
    const pause = (ms: number) => new Promise<void>((r) => clock.setTimeout(r, ms));
    async function* slow() {
      for (let i = 1; i <= 40; i++) {
        // One a second, and a minute of nothing in the middle: twice the callee's idle timeout.
        await pause(i === 20 ? 60_000 : 1000);
        yield { n: i };
      }
    }
    let outcome: unknown;
    const call = caller
      .client(sink)
      .sum(slow(), { timeout: 600_000 })
      .then(
        (v) => (outcome = v),
        (e) => (outcome = e),
      );
    let seenAtTen = 0;
    for (let i = 0; i < 40_000 && outcome === undefined; i++) {
      await clock.tick(5);
      if (i === 2100) seenAtTen = seen.length;
    }
    await call;
    assert.deepEqual(outcome, { total: 820, count: 40 });
    // At 10.5 s the handler had the chunks of the first 10 seconds, not waiting for a full page.
    assert.ok(seenAtTen >= 9 && seenAtTen <= 11, `handled ${seenAtTen} by 10.5 s`);
    const stopping = [caller.stop(), server.stop()];
    await clock.tick(60_000);
    await Promise.all(stopping);
  });

  it('an idempotent input stream whose instance is lost is not sent half read to another: it fails', async () => {
    const net = createMemoryNetwork();
    const seen: Record<string, number[]> = { s1: [], s2: [] };
    const s1 = testNode({
      id: 's1',
      transport: net.transport(),
      services: [sinkService(seen.s1 as number[])],
    });
    const s2 = testNode({
      id: 's2',
      transport: net.transport(),
      services: [sinkService(seen.s2 as number[])],
    });
    const caller = testNode({ transport: net.transport() });
    after(() => Promise.allSettled([caller.stop(), s1.stop(), s2.stop()]));
    for (const n of [s1, s2, caller]) await n.start();
    await waitFor(() => caller.registry.endpoints('sink').length === 2, 5000, 'both instances');
    async function* source() {
      for (let n = 1; n <= 200; n++) {
        if (n === 100) {
          await waitFor(() => (seen.s1?.length ?? 0) + (seen.s2?.length ?? 0) > 0, 5000, 'a first page');
          net.crash((seen.s1?.length ?? 0) > 0 ? 's1' : 's2');
        }
        yield { n };
      }
    }
    // Until 2026-12-03 it failed over and answered { total: 11844, count: 72 } as if complete.
    await assert.rejects(caller.client(sink).sum(source(), { timeout: 10_000 }), (e: unknown) => {
      return e instanceof ParleyError && e.code === 'UNAVAILABLE';
    });
  });
});

describe('streams: checked chunks', () => {
  it('checks each chunk as it is read, and a return while a read waits reaches the source at once', async () => {
    const { checked } = await import('../src/runtime/streams.ts');
    let returned = false;
    let answer: (step: IteratorResult<number>) => void = () => undefined;
    const source: AsyncIterable<number> = {
      [Symbol.asyncIterator]: () => ({
        next: () => new Promise<IteratorResult<number>>((resolve) => (answer = resolve)),
        return: async () => {
          returned = true;
          return { done: true, value: undefined };
        },
      }),
    };
    const iterator = checked(source, (n) => n * 2)[Symbol.asyncIterator]();
    const first = iterator.next();
    answer({ done: false, value: 21 });
    assert.deepEqual(await first, { done: false, value: 42 });
    const waiting = iterator.next();
    // A generator would hold this return until the waiting read settles (a client gone for good).
    await iterator.return?.();
    assert.equal(returned, true);
    answer({ done: true, value: undefined });
    await waiting;
    // Sync iterables are read too (a local call's input).
    const sync = checked([1, 2], (n) => n + 1);
    const seen: number[] = [];
    for await (const n of sync) seen.push(n);
    assert.deepEqual(seen, [2, 3]);
    // Their values are awaited, as `for await` awaits them.
    const promised = checked([Promise.resolve(5), 6] as unknown as number[], (n) => n + 1);
    const awaited: number[] = [];
    for await (const n of promised) awaited.push(n);
    assert.deepEqual(awaited, [6, 7]);
  });
});
