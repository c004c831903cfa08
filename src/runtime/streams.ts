/**
 * @module runtime/streams
 * Streaming calls over any transport, built on request/reply, pulled by the side that consumes:
 *
 * - **Output stream** (`stream: 'output'`): the open request runs the handler, which returns an
 *   (async) iterable; the reply carries a session id and the first page of chunks. The caller
 *   then pulls pages (`$stream.pull`), one page ahead of what it has handed out. The server
 *   advances the handler's iterator only when asked, so a slow consumer slows the producer: that
 *   is the backpressure. A pull with nothing ready waits up to {@link LONG_POLL} ms, then answers
 *   an empty page, so a stream may be quiet for as long as it likes.
 * - **Input stream** (`stream: 'input'`): the open request starts the handler on a bounded queue;
 *   the caller pushes pages of chunks (`$stream.push`) and each push is answered only when the
 *   queue has room again: that is the backpressure. The last push says `end` and is answered with
 *   the handler's output.
 *
 * Pages are bounded by count and by encoded size (half the transport's frame limit); a single
 * chunk over that is refused with RESOURCE_EXHAUSTED. A session nobody pulls from or pushes to for
 * {@link IDLE_TIMEOUT} ms is cancelled, and so is one whose caller breaks out of its loop.
 */
import { uuidv7 } from '../envelope/ids.ts';
import { ParleyError } from '../errors.ts';
import type { CallContext } from './context.ts';
import { type DeadlineWheel, Expiring } from './deadlines.ts';

/** How long a pull waits for a chunk before answering an empty page, ms. */
export const LONG_POLL = 5000;
/** A session left alone this long is cancelled, ms. */
export const IDLE_TIMEOUT = 30_000;
/** Chunks per page. */
export const PAGE = 64;
/** Chunks an input stream's queue holds before pushes wait. */
const QUEUE_HIGH = 256;

export interface Page {
  session: string;
  chunks: unknown[];
  done: boolean;
  /** The handler's output, on the page that ends an input stream. */
  result?: unknown;
}

/** Encoded size of a chunk, as JSON; the frame limit is about bytes on the wire. */
export function sizeOf(chunk: unknown): number {
  const text = JSON.stringify(chunk);
  return text === undefined ? 4 : Buffer.byteLength(text);
}

/** A bounded queue read as an async iterable: what an input-stream handler consumes. */
export class ChunkQueue<T> implements AsyncIterable<T> {
  private items: T[] = [];
  private head = 0;
  private ended = false;
  private error: unknown;
  private reader: ((r: IteratorResult<T>) => void) | undefined;
  private readerFail: ((e: unknown) => void) | undefined;
  private roomWaiters: (() => void)[] = [];
  private closedByReader = false;

  get size(): number {
    return this.items.length - this.head;
  }

  /** True once the reader stopped reading (returned early). */
  get abandoned(): boolean {
    return this.closedByReader;
  }

  push(item: T): void {
    if (this.ended || this.closedByReader) return;
    if (this.reader !== undefined) {
      const r = this.reader;
      this.reader = undefined;
      this.readerFail = undefined;
      r({ value: item, done: false });
      return;
    }
    this.items.push(item);
  }

  end(): void {
    this.ended = true;
    if (this.reader !== undefined && this.size === 0) {
      const r = this.reader;
      this.reader = undefined;
      r({ value: undefined, done: true });
    }
  }

  fail(error: unknown): void {
    if (this.ended && this.error !== undefined) return;
    this.ended = true;
    this.error = error;
    if (this.readerFail !== undefined) {
      const f = this.readerFail;
      this.reader = undefined;
      this.readerFail = undefined;
      f(error);
    }
    this.wakeRoom();
  }

  /** Resolves when the queue is at most half full (or the reader is gone). */
  room(): Promise<void> {
    if (this.size <= QUEUE_HIGH / 2 || this.closedByReader || this.error !== undefined)
      return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  private wakeRoom(): void {
    const waiters = this.roomWaiters;
    this.roomWaiters = [];
    for (const w of waiters) w();
  }

  private take(): T {
    const item = this.items[this.head] as T;
    this.items[this.head] = undefined as T;
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    if (this.size <= QUEUE_HIGH / 2) this.wakeRoom();
    return item;
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.size > 0) return Promise.resolve({ value: this.take(), done: false });
        if (this.error !== undefined) return Promise.reject(this.error);
        if (this.ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise<IteratorResult<T>>((resolve, reject) => {
          this.reader = resolve;
          this.readerFail = reject;
        });
      },
      return: () => {
        this.closedByReader = true;
        this.items = [];
        this.head = 0;
        this.wakeRoom();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

/**
 * Maps each chunk of an iterable through `check` (validation), lazily. An iterator, not a
 * generator: a generator waiting in `next` takes `return` only after that `next` settles, so a
 * reader that went away (a gateway client) would not stop the producer until its next chunk.
 */
export function checked<T>(source: AsyncIterable<T> | Iterable<T>, check: (chunk: T) => T): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]() {
      const sync = !(Symbol.asyncIterator in source);
      const iterator = sync
        ? (source as Iterable<T>)[Symbol.iterator]()
        : (source as AsyncIterable<T>)[Symbol.asyncIterator]();
      return {
        async next() {
          const step = await iterator.next();
          if (step.done === true) return step;
          // A sync iterable's values are awaited, as `for await` does (an array of promises).
          return { done: false, value: check(sync ? await step.value : step.value) };
        },
        async return(value?: unknown) {
          return (await iterator.return?.(value)) ?? { done: true, value: undefined };
        },
      };
    },
  };
}

interface OutputSession {
  kind: 'output';
  iterator: AsyncIterator<unknown>;
  /** A `next()` already asked for and not yet used (a page closed before it settled). */
  pending: Promise<IteratorResult<unknown>> | undefined;
  busy: boolean;
  /** The handler failed after some chunks of a page: they go first, the error on the next pull. */
  failure: unknown;
}

interface InputSession {
  kind: 'input';
  queue: ChunkQueue<unknown>;
  result: Promise<unknown>;
  settled: { ok: true; value: unknown } | { ok: false; error: unknown } | undefined;
  check: ((chunk: unknown) => unknown) | undefined;
}

class Session extends Expiring {
  constructor(
    readonly id: string,
    readonly ctx: CallContext,
    readonly body: OutputSession | InputSession,
    private readonly host: StreamHost,
  ) {
    super();
  }

  expire(reason?: unknown): void {
    const late = this.host.now() >= this.ctx.deadline;
    this.host.close(
      this,
      reason ??
        new ParleyError(
          'DEADLINE_EXCEEDED',
          late ? `stream ${this.id} ran past its deadline` : `stream ${this.id} was idle too long`,
        ),
    );
  }
}

export interface StreamHostDeps {
  readonly deadlines: DeadlineWheel;
  readonly now: () => number;
  /** Largest reply frame, bytes. */
  readonly maxPayload: () => number;
  /** A session counts as work in flight while open (graceful stop waits for it). */
  readonly opened: () => void;
  readonly closed: () => void;
}

/** The server side of streams: open sessions and the `$stream.*` operations on them. */
export class StreamHost {
  private readonly sessions = new Map<string, Session>();

  constructor(private readonly deps: StreamHostDeps) {}

  get open(): number {
    return this.sessions.size;
  }

  private add(ctx: CallContext, body: OutputSession | InputSession): Session {
    const session = new Session(uuidv7(), ctx, body, this);
    this.sessions.set(session.id, session);
    this.deps.opened();
    this.touch(session);
    return session;
  }

  now(): number {
    return this.deps.now();
  }

  /** On the wheel again: at the idle timeout, or the call's deadline if that comes first. */
  private touch(session: Session): void {
    session.cancel();
    this.deps.deadlines.add(Math.min(this.deps.now() + IDLE_TIMEOUT, session.ctx.deadline), session);
  }

  /** Ends a session; `reason` cancels the handler's work (its signal aborts, its iterator returns). */
  close(session: Session, reason?: unknown): void {
    if (!this.sessions.delete(session.id)) return;
    session.cancel();
    const error = reason === undefined ? undefined : ParleyError.from(reason);
    if (error !== undefined) session.ctx.abort(error);
    const body = session.body;
    if (body.kind === 'output') {
      if (error !== undefined) void Promise.resolve(body.iterator.return?.()).catch(() => undefined);
    } else if (error !== undefined) body.queue.fail(error);
    this.deps.closed();
  }

  /** Cancels every open session (the node is stopping and out of time). */
  closeAll(reason: unknown): void {
    for (const s of [...this.sessions.values()]) this.close(s, reason);
  }

  /** An output-stream handler returned `iterable`: open a session and answer its first page. */
  async openOutput(ctx: CallContext, iterable: unknown, max: number): Promise<Page> {
    const iterator = iteratorOf(iterable);
    const session = this.add(ctx, {
      kind: 'output',
      iterator,
      pending: undefined,
      busy: false,
      failure: undefined,
    });
    return this.page(session, max, false);
  }

  /** An input-stream call arrived: a session whose queue the handler reads. */
  openInput(
    ctx: CallContext,
    start: (queue: AsyncIterable<unknown>) => Promise<unknown>,
    check: ((chunk: unknown) => unknown) | undefined,
  ): Page {
    const queue = new ChunkQueue<unknown>();
    const body: InputSession = { kind: 'input', queue, result: Promise.resolve(), settled: undefined, check };
    const session = this.add(ctx, body);
    body.result = start(queue).then(
      (value) => {
        body.settled = { ok: true, value };
        return value;
      },
      (error: unknown) => {
        body.settled = { ok: false, error };
        // The handler gave up: whatever the caller pushes next learns it.
        queue.fail(error);
        throw error;
      },
    );
    body.result.catch(() => undefined);
    return { session: session.id, chunks: [], done: false };
  }

  private get(id: unknown): Session {
    const session = typeof id === 'string' ? this.sessions.get(id) : undefined;
    if (session === undefined) {
      throw new ParleyError(
        'NOT_FOUND',
        `stream ${String(id)} is not open here (ended, cancelled or idle too long)`,
      );
    }
    return session;
  }

  /** `$stream.pull`, `$stream.push`, `$stream.cancel`. */
  async operate(op: string, data: unknown): Promise<Page | null> {
    const d = (typeof data === 'object' && data !== null ? data : {}) as Record<string, unknown>;
    if (op === 'cancel') {
      const session = typeof d.session === 'string' ? this.sessions.get(d.session) : undefined;
      if (session !== undefined)
        this.close(session, new ParleyError('CANCELLED', 'the caller cancelled the stream'));
      return null;
    }
    const session = this.get(d.session);
    this.touch(session);
    if (op === 'pull' && session.body.kind === 'output') {
      const max = typeof d.max === 'number' && d.max >= 1 ? Math.min(d.max, 1024) : PAGE;
      return this.page(session, max, true);
    }
    if (op === 'push' && session.body.kind === 'input') {
      const chunks = Array.isArray(d.chunks) ? d.chunks : [];
      return this.push(session, session.body, chunks, d.end === true);
    }
    throw new ParleyError('INVALID_ARGUMENT', `${op} is not an operation on stream ${session.id}`);
  }

  private async push(session: Session, body: InputSession, chunks: unknown[], end: boolean): Promise<Page> {
    const done = (): Page => {
      const s = body.settled;
      this.close(session);
      if (s === undefined || !s.ok)
        throw ParleyError.from(s?.error ?? new ParleyError('INTERNAL', 'no result'));
      return { session: session.id, chunks: [], done: true, result: s.value };
    };
    if (body.settled !== undefined) return done();
    for (const chunk of chunks) {
      let value = chunk;
      try {
        value = body.check === undefined ? chunk : body.check(chunk);
      } catch (error) {
        body.queue.fail(error);
        this.close(session, error);
        throw error;
      }
      body.queue.push(value);
    }
    if (end) {
      body.queue.end();
      await body.result.catch(() => undefined);
      return done();
    }
    // Answer when the handler has read enough to make room, or has finished.
    await Promise.race([body.queue.room(), body.result.catch(() => undefined)]);
    if (body.settled !== undefined) return done();
    return { session: session.id, chunks: [], done: false };
  }

  /** Takes up to `max` chunks (and half a frame of bytes); waits for the first one only. */
  private async page(session: Session, max: number, longPoll: boolean): Promise<Page> {
    const body = session.body as OutputSession;
    if (body.busy) throw new ParleyError('FAILED_PRECONDITION', `stream ${session.id}: one pull at a time`);
    if (body.failure !== undefined) {
      this.close(session);
      throw body.failure;
    }
    body.busy = true;
    const chunks: unknown[] = [];
    const budget = Math.floor(this.deps.maxPayload() / 2);
    let bytes = 0;
    let done = false;
    try {
      while (chunks.length < max) {
        const next = body.pending ?? body.iterator.next();
        body.pending = next;
        let result: IteratorResult<unknown> | typeof NOT_YET;
        if (chunks.length === 0) {
          result = longPoll ? await raceTimeout(next, LONG_POLL) : await raceTick(next);
        } else {
          // More only if they are ready now: a page never waits for a slow producer.
          result = await raceTick(next);
        }
        if (result === NOT_YET) break;
        body.pending = undefined;
        if (result.done) {
          done = true;
          break;
        }
        const size = sizeOf(result.value);
        if (size > budget) {
          throw new ParleyError(
            'RESOURCE_EXHAUSTED',
            `stream chunk of ${size} bytes exceeds the page limit of ${budget} (half the frame limit)`,
            { details: { size, max: budget } },
          );
        }
        if (bytes + size > budget && chunks.length > 0) {
          // Keep it for the next page.
          body.pending = Promise.resolve(result);
          break;
        }
        bytes += size;
        chunks.push(result.value);
      }
    } catch (error) {
      if (chunks.length === 0) {
        this.close(session, error);
        throw error;
      }
      body.failure = error;
    } finally {
      body.busy = false;
    }
    if (done) this.close(session);
    return { session: session.id, chunks, done };
  }
}

const NOT_YET = Symbol('not yet');

function raceTick<T>(p: Promise<T>): Promise<T | typeof NOT_YET> {
  return Promise.race([p, new Promise<typeof NOT_YET>((r) => setImmediate(() => r(NOT_YET)))]);
}

function raceTimeout<T>(p: Promise<T>, ms: number): Promise<T | typeof NOT_YET> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<typeof NOT_YET>((r) => {
      timer = setTimeout(() => r(NOT_YET), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** An async iterator over an async or a plain iterable; `what` names it in the error otherwise. */
export function iteratorOf(
  iterable: unknown,
  what = 'an output-stream handler’s result',
): AsyncIterator<unknown> {
  const it = iterable as Partial<AsyncIterable<unknown> & Iterable<unknown>> | null;
  const asyncIt = it?.[Symbol.asyncIterator];
  if (typeof asyncIt === 'function') return asyncIt.call(it);
  const syncIt = it?.[Symbol.iterator];
  if (typeof syncIt === 'function') {
    const sync = syncIt.call(it) as Iterator<unknown>;
    return {
      next: () => Promise.resolve(sync.next()),
      return: () => Promise.resolve(sync.return?.() ?? { value: undefined, done: true }),
    };
  }
  throw new ParleyError('INTERNAL', `${what} is not an iterable or async iterable`);
}

/** An async iterable that starts when first read, from a promise of an iterable. */
export function lazyStream<T>(source: Promise<unknown>): AsyncIterable<T> {
  let iterator: AsyncIterator<T> | undefined;
  let opening: Promise<AsyncIterator<T>> | undefined;
  const open = () => {
    opening ??= source.then((it) => (iterator = iteratorOf(it) as AsyncIterator<T>));
    return opening;
  };
  // Nobody may ever read it: do not let a failed open become an unhandled rejection.
  source.catch(() => undefined);
  const self: AsyncIterableIterator<T> = {
    [Symbol.asyncIterator]: () => self,
    next: async () => (iterator ?? (await open())).next(),
    return: async () => {
      if (iterator === undefined && opening === undefined) return { value: undefined, done: true };
      const it = iterator ?? (await open().catch(() => undefined));
      return (await it?.return?.()) ?? { value: undefined, done: true };
    },
  };
  return self;
}
