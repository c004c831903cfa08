/**
 * @module adapters/driver
 * Broker clients are optional peer dependencies: each is loaded when its URL is first used, and
 * a missing one is a clear error that says what to install.
 */
import { ParleyError } from '../errors.ts';

export async function loadDriver<T>(pkg: string, scheme: string): Promise<T> {
  try {
    return (await import(pkg)) as T;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new ParleyError(
        'FAILED_PRECONDITION',
        `${scheme} URLs need the ${pkg} package: npm install ${pkg}`,
        { details: { package: pkg } },
      );
    }
    throw error;
  }
}

/** Node socket error codes that mean the server is not there (yet): UNAVAILABLE for every adapter. */
export const NETWORK_ERRORS: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/**
 * Items gathered over one turn of the event loop and handed over together at its end
 * (`setImmediate`): one command, one socket write, one `multiple` ack for a turn's worth of
 * publishes or acks instead of one each. The adapters' per-turn batching all goes through it.
 */
export class TurnQueue<T> {
  private items: T[] = [];
  private scheduled = false;

  /** `send` gets each turn's items, in the order they were added (never an empty list). */
  constructor(private readonly send: (items: T[]) => void) {}

  /** Adds `item` to this turn's batch. */
  add(item: T): void {
    this.items.push(item);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flush);
  }

  /** Hands over what is queued now (before a close, so nothing queued is left behind). */
  readonly flush = (): void => {
    this.scheduled = false;
    if (this.items.length === 0) return;
    const items = this.items;
    this.items = [];
    this.send(items);
  };

  /** Drops what is queued (a crash, or a channel gone: nothing more is sent). */
  clear(): void {
    this.items = [];
  }
}

/**
 * Work run together at the end of the turn. Broker clients write to their socket once per
 * microtask checkpoint; a caller that awaits between sends would cost one socket write per
 * message. Run together, the client's own buffering makes one write of them.
 */
export class TurnBatch {
  private readonly queue = new TurnQueue<() => void>((work) => {
    for (const fn of work) fn();
  });

  /** Runs `fn` at the end of this turn, with the rest of the turn's work. */
  later(fn: () => void): void {
    this.queue.add(fn);
  }

  /** `fn` at the end of this turn; its result. */
  call<T>(fn: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => this.later(() => fn().then(resolve, reject)));
  }

  /** Drops what is queued (a crash: nothing more is sent). */
  clear(): void {
    this.queue.clear();
  }

  /** Runs what is queued now (before a close, so nothing queued is left behind). */
  flush(): void {
    this.queue.flush();
  }
}
