/**
 * Shared test helpers: silent nodes, bounded waiting, a contract used across suites.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { pino } from 'pino';
import {
  type ActionHandlers,
  createNode,
  defineContract,
  type FakeClock,
  implement,
  type NodeOptions,
  type ParleyNode,
  type Service,
  type Subscription,
  type Transport,
  z,
} from '../src/index.ts';
import { encodeFrame, type Frame, FrameReader, type FrameType } from '../src/transport/tcp/frames.ts';

export const silent = pino({ level: 'silent' });

/** A node that logs nothing unless PARLEY_LOG_LEVEL says so. */
export function testNode(options: NodeOptions): ParleyNode {
  return createNode({ logger: process.env.PARLEY_LOG_LEVEL ? undefined : silent, ...options } as NodeOptions);
}

/** Polls `check` until it is true; fails after `timeoutMs`. For real-network waits only. */
export async function waitFor(check: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Runs fake time in steps of 10 ms until `check` holds; fails after `steps` of them. */
export async function ticksUntil(
  clock: FakeClock,
  check: () => boolean,
  what: string,
  steps = 5_000,
): Promise<void> {
  for (let i = 0; !check(); i++) {
    if (i > steps) throw new Error(`still waiting for ${what} after ${steps} ticks of 10 ms`);
    await clock.tick(10);
  }
}

/**
 * A seeded generator (mulberry32) for fuzz tests: the same seed gives the same inputs on every
 * run, so a failure names the seed that reproduces it.
 */
export function seeded(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(list: readonly T[]): T => list[int(list.length)] as T;
  return { next, int, pick, chance: (p: number) => next() < p };
}
export type Seeded = ReturnType<typeof seeded>;

/** Values that break naive handling, for fuzz tests to put where a valid value was. */
export const ODD_VALUES: readonly unknown[] = [
  null,
  true,
  0,
  -0,
  1e308,
  -1e308,
  Number.MAX_SAFE_INTEGER + 2,
  0.1,
  '',
  'x'.repeat(5000),
  '\u0000',
  '\ud800',
  '\u202e',
  [],
  [[[[]]]],
  {},
  { __proto__x: 1 },
];

/** `value` with some fields dropped, changed to odd values or added, at any depth up to 3. */
export function mutate(g: Seeded, value: unknown, depth = 0): unknown {
  if (depth > 3 || g.chance(0.3)) return g.pick(ODD_VALUES);
  if (Array.isArray(value)) return value.map((v) => mutate(g, v, depth + 1));
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (g.chance(0.15)) continue; // a missing field
      out[k] = g.chance(0.5) ? mutate(g, v, depth + 1) : v;
    }
    if (g.chance(0.2)) out[g.pick(Object.keys(value).concat('extra'))] = g.pick(ODD_VALUES);
    return out;
  }
  return g.pick(ODD_VALUES);
}

/** A promise with its resolve exposed. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve: (value: T) => void = () => undefined;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

export const calc = defineContract({
  name: 'calc',
  version: '1.0.0',
  actions: {
    add: {
      input: z.object({ a: z.number(), b: z.number(), note: z.string().max(200).optional() }),
      output: z.object({ sum: z.number() }),
      idempotent: true,
    },
    echo: {
      input: z.object({ text: z.string() }),
      output: z.object({ text: z.string(), length: z.number() }),
    },
    wait: { input: z.object({ tag: z.string() }), output: z.object({ aborted: z.boolean() }) },
  },
  events: {
    'calc.done': { schema: z.object({ n: z.number() }), version: 1 },
  },
});

/** A transport that forwards to `inner` and reports request and reply frames as they pass. */
export function wrapTransport(
  inner: Transport,
  spy: { onRequest?(frame: Uint8Array): void; onReply?(frame: Uint8Array): void },
): Transport {
  return {
    get maxPayload() {
      return inner.maxPayload;
    },
    start: (self, handler) => inner.start(self, handler),
    announce: (self) => inner.announce(self),
    async request(nodeId, frame, options) {
      spy.onRequest?.(frame);
      const reply = await inner.request(nodeId, frame, options);
      spy.onReply?.(reply);
      return reply;
    },
    broadcast: (frame) => inner.broadcast(frame),
    stop: () => inner.stop(),
  };
}

type CalcHandlers = ActionHandlers<typeof calc>;

/** The calc service with plain handlers, any of which a test may replace, and subscriptions. */
export function calcService(
  overrides: Partial<CalcHandlers> = {},
  on: readonly Subscription[] = [],
): Service<typeof calc> {
  const actions: CalcHandlers = {
    add: ({ a, b }) => ({ sum: a + b }),
    echo: ({ text }) => ({ text, length: text.length }),
    wait: () => ({ aborted: false }),
    ...overrides,
  };
  return implement(calc, { actions, on });
}

/** A temporary directory removed when the test file ends; `file(name)` gives a path inside it. */
export function tempDir(prefix: string): { path: string; file(name: string): string } {
  const path = mkdtempSync(join(tmpdir(), `parley-${prefix}-`));
  after(() => rmSync(path, { recursive: true, force: true }));
  return { path, file: (name) => join(path, name) };
}

/**
 * A raw connection speaking Parley's frames: the frames it received, and a way to send one (a
 * string payload as it is, anything else as JSON).
 */
export function framePeer(socket: Socket) {
  const frames: Frame[] = [];
  const reader = new FrameReader(
    1 << 20,
    (f) => void frames.push(f),
    () => undefined,
  );
  socket.on('data', (c: Buffer) => reader.push(c));
  socket.on('error', () => undefined);
  const send = (type: FrameType, id: number, payload: unknown = '') =>
    socket.write(
      encodeFrame(type, id, Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload))),
    );
  return { frames, send };
}
