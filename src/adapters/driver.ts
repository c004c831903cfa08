/**
 * @module adapters/driver
 * Broker clients are optional peer dependencies: each is loaded when its URL is first used, and
 * a missing one is a clear error that says what to install.
 */
import { ParleyError } from '../errors.ts';
import { TurnQueue } from '../runtime/turn-queue.ts';

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
