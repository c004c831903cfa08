/**
 * @module runtime/remote-streams
 * The calling side of streams to another node (see `runtime/streams` for the protocol): an output
 * stream is an async iterator that pulls one page ahead of what it has handed out; an input
 * stream pushes pages and waits for each answer before the next.
 */
import { ParleyError } from '../errors.ts';
import type { OutboundCall } from './pipeline.ts';
import { callRemote, type RemoteDeps } from './remote.ts';
import { IDLE_TIMEOUT, iteratorOf, LONG_POLL, PAGE, type Page, sizeOf } from './streams.ts';

/** How long chunks an input stream has gathered wait for more before they leave, ms. */
const FLUSH_MS = 20;
/** How long an input stream with no chunk waits before an empty push keeps its session, ms. */
const KEEPALIVE_MS = IDLE_TIMEOUT / 3;

/** How long one pull or push may take on the wire, beyond the server's long poll. */
const OP_TIMEOUT = LONG_POLL + 10_000;
const NO_OPTIONS = Object.freeze({});

/**
 * One `$stream` operation. A pull or a push is bound by the stream call's own deadline and
 * signal, as the call is (until 2026-12-03 each got 15 s of its own and no signal, so a stream
 * ran on past its deadline and its caller's cancel); a cancel gets its own time, to be sent even
 * once the stream's time is up.
 */
function op(
  deps: RemoteDeps,
  target: string,
  call: OutboundCall,
  action: string,
  input: unknown,
): Promise<Page> {
  const now = deps.clock.now();
  const bound = action !== 'cancel';
  const signal = bound ? call.options.signal : undefined;
  if (bound && now >= call.deadline) return Promise.reject(pastDeadline(call));
  return callRemote(deps, target, {
    service: '$stream',
    action,
    input,
    deadline: bound ? Math.min(call.deadline, now + OP_TIMEOUT) : now + OP_TIMEOUT,
    idempotent: false,
    options: signal === undefined ? NO_OPTIONS : { signal },
    parent: call.parent,
    traceparent: call.traceparent,
    tried: [],
  }).then(
    (page) => pageOf(page, target),
    (error: unknown) => {
      // The callee ended the session at the same deadline a moment before this op reached it.
      const e = ParleyError.from(error);
      throw bound && e.code === 'NOT_FOUND' && deps.clock.now() >= call.deadline ? pastDeadline(call) : e;
    },
  );
}

const pastDeadline = (call: OutboundCall) =>
  new ParleyError('DEADLINE_EXCEEDED', `stream ${call.service}.${call.action} ran past its deadline`);

/**
 * A peer's answer as a page: a stream session, a list of chunks and whether it is done. Anything
 * else is refused (a string's characters are not chunks, nor does a page without `done` go on).
 */
function pageOf(value: unknown, target: string): Page {
  const p = (typeof value === 'object' && value !== null ? value : {}) as Partial<
    Record<keyof Page, unknown>
  >;
  if (typeof p.session !== 'string' || !Array.isArray(p.chunks) || typeof p.done !== 'boolean')
    throw new ParleyError('INTERNAL', `node ${target} answered a stream call with something that is no page`);
  return value as Page;
}

/** Opens an output stream on `target`; resolves to its iterator once the first page is in. */
export async function openRemoteOutput(
  deps: RemoteDeps,
  target: string,
  call: OutboundCall,
): Promise<AsyncIterableIterator<unknown>> {
  const first = pageOf(await callRemote(deps, target, call), target);
  return new RemoteOutput(deps, target, call, first);
}

class RemoteOutput implements AsyncIterableIterator<unknown> {
  private chunks: unknown[];
  private index = 0;
  private done: boolean;
  private next_: Promise<Page> | undefined;
  private failed: unknown;
  private readonly sessionId: string;

  constructor(
    private readonly deps: RemoteDeps,
    private readonly target: string,
    private readonly call: OutboundCall,
    first: Page,
  ) {
    this.sessionId = first.session;
    this.chunks = first.chunks;
    this.done = first.done;
    if (!this.done) this.prefetch();
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<unknown> {
    return this;
  }

  private prefetch(): void {
    if (this.next_ !== undefined || this.done) return;
    this.next_ = op(this.deps, this.target, this.call, 'pull', { session: this.sessionId, max: PAGE });
    // Read later by next(); a failure is kept until then.
    this.next_.catch(() => undefined);
  }

  async next(): Promise<IteratorResult<unknown>> {
    for (;;) {
      if (this.index < this.chunks.length) {
        const value = this.chunks[this.index++];
        return { value, done: false };
      }
      if (this.failed !== undefined) throw this.failed;
      if (this.done) return { value: undefined, done: true };
      this.prefetch();
      let page: Page;
      try {
        page = await (this.next_ as Promise<Page>);
      } catch (error) {
        this.failed = ParleyError.from(error);
        this.done = true;
        // Past its deadline, or given up by its caller: the producer stops too.
        void op(this.deps, this.target, this.call, 'cancel', { session: this.sessionId }).catch(
          () => undefined,
        );
        throw this.failed;
      } finally {
        this.next_ = undefined;
      }
      this.chunks = page.chunks;
      this.index = 0;
      this.done = page.done;
      // One page ahead: the next is on its way while this one is read.
      if (!this.done) this.prefetch();
    }
  }

  async return(): Promise<IteratorResult<unknown>> {
    if (!this.done) {
      this.done = true;
      this.chunks = [];
      await op(this.deps, this.target, this.call, 'cancel', { session: this.sessionId }).catch(
        () => undefined,
      );
    }
    return { value: undefined, done: true };
  }
}

/** Sends an input stream to `target`: opens, pushes pages, returns the handler's output. */
export async function callRemoteInput(
  deps: RemoteDeps,
  target: string,
  call: OutboundCall,
): Promise<unknown> {
  // Not an iterable: refused before a session is opened on the callee.
  const iterator = iteratorOf(call.input, 'the input of an input-stream call');
  const opened = (await callRemote(deps, target, { ...call, input: null })) as Page;
  const session = opened.session;
  const budget = Math.floor(deps.transport.maxPayload / 2);
  let carried: unknown[] = [];
  let carriedBytes = 0;
  // A chunk asked of the source and not given yet: it may come after the page it was asked for
  // has left.
  let asked: Promise<IteratorResult<unknown>> | undefined;
  // Resolves when the page should leave however full it is; one timer a page, two at most.
  let due: Promise<undefined> = Promise.resolve(undefined);
  let timer: { cancel(): void } | undefined;
  const dueIn = (ms: number) => {
    timer?.cancel();
    due = new Promise<undefined>((resolve) => {
      timer = deps.clock.setTimeout(() => resolve(undefined), ms);
    });
  };
  try {
    for (;;) {
      const chunks = carried;
      let bytes = carriedBytes;
      carried = [];
      carriedBytes = 0;
      let end = false;
      // A page leaves when full, at the source's end, or when the source is slow: FLUSH_MS after
      // its first chunk, or after KEEPALIVE_MS with none (an empty push keeps the callee's session
      // open). Until 2026-12-03 a page waited to be full: a source slower than 64 chunks in the
      // callee's idle timeout (30 s) had its stream cancelled as idle, no chunk handled.
      dueIn(chunks.length > 0 ? FLUSH_MS : KEEPALIVE_MS);
      while (chunks.length < PAGE) {
        // A read left waiting when the stream ends is handled all the same: the race subscribed.
        asked ??= iterator.next();
        const r = await Promise.race([asked, due]);
        if (r === undefined) break;
        asked = undefined;
        if (r.done) {
          end = true;
          break;
        }
        if (chunks.length === 0) dueIn(FLUSH_MS);
        const size = sizeOf(r.value);
        if (size > budget) {
          throw new ParleyError(
            'RESOURCE_EXHAUSTED',
            `stream chunk of ${size} bytes exceeds the page limit of ${budget}`,
            {
              details: { size, max: budget },
            },
          );
        }
        if (bytes + size > budget && chunks.length > 0) {
          carried = [r.value];
          carriedBytes = size;
          break;
        }
        chunks.push(r.value);
        bytes += size;
      }
      timer?.cancel();
      const page = await op(deps, target, call, 'push', { session, chunks, end });
      if (page.done) {
        // The handler is finished (maybe before reading everything): stop the source.
        if (!end) await iterator.return?.();
        return page.result;
      }
      if (end)
        throw new ParleyError('INTERNAL', 'the stream ended but the server did not answer with a result');
    }
  } catch (error) {
    timer?.cancel();
    const e = ParleyError.from(error);
    // The source failed, or the server refused: the server's side of the session ends too.
    await op(deps, target, call, 'cancel', { session }).catch(() => undefined);
    throw e;
  }
}
