/**
 * @module runtime/clock
 * Time as a dependency. Everything time-based in Parley (deadlines, fault delays, and later
 * retries, breakers and leases) reads this interface, so tests drive it with a fake clock instead
 * of waiting.
 */

export interface TimerHandle {
  cancel(): void;
  /** Lets the process exit while this timer is pending (Node's `unref`). */
  unref(): void;
  /** Undoes `unref`. */
  ref(): void;
}

export interface Clock {
  /** Epoch milliseconds. */
  now(): number;
  /** Runs `fn` once after `ms`. */
  setTimeout(fn: () => void, ms: number): TimerHandle;
}

export const systemClock: Clock = {
  now: Date.now,
  setTimeout(fn, ms) {
    const t = setTimeout(fn, Math.max(0, ms));
    return {
      cancel: () => clearTimeout(t),
      unref: () => void t.unref(),
      ref: () => void t.ref(),
    };
  },
};

export interface FakeClock extends Clock {
  /** Moves time forward, firing due timers in deadline order (ties in creation order). */
  advance(ms: number): void;
  /** Moves time forward and lets promise callbacks run between timers. */
  tick(ms: number): Promise<void>;
  /** Number of timers waiting that would keep a process alive (not unref'd). */
  pending(): number;
}

interface FakeTimer {
  at: number;
  seq: number;
  fn: () => void;
  live: boolean;
  refd: boolean;
}

/** A manual clock for tests. Starts at `start` (epoch ms). */
export function createFakeClock(start = 1_700_000_000_000): FakeClock {
  let now = start;
  let seq = 0;
  let timers: FakeTimer[] = [];

  const nextDue = (until: number): FakeTimer | undefined => {
    let best: FakeTimer | undefined;
    for (const t of timers) {
      if (!t.live || t.at > until) continue;
      if (best === undefined || t.at < best.at || (t.at === best.at && t.seq < best.seq)) best = t;
    }
    return best;
  };

  const clock: FakeClock = {
    now: () => now,
    setTimeout(fn, ms) {
      const timer: FakeTimer = { at: now + Math.max(0, ms), seq: seq++, fn, live: true, refd: true };
      timers.push(timer);
      return {
        cancel: () => {
          timer.live = false;
        },
        unref: () => {
          timer.refd = false;
        },
        ref: () => {
          timer.refd = true;
        },
      };
    },
    advance(ms) {
      const until = now + ms;
      for (let t = nextDue(until); t !== undefined; t = nextDue(until)) {
        t.live = false;
        now = Math.max(now, t.at);
        t.fn();
      }
      now = until;
      timers = timers.filter((t) => t.live);
    },
    async tick(ms) {
      const until = now + ms;
      await flushMicrotasks();
      for (let t = nextDue(until); t !== undefined; t = nextDue(until)) {
        t.live = false;
        now = Math.max(now, t.at);
        t.fn();
        await flushMicrotasks();
      }
      now = until;
      timers = timers.filter((t) => t.live);
      await flushMicrotasks();
    },
    pending: () => timers.filter((t) => t.live && t.refd).length,
  };
  return clock;
}

/** Lets queued promise callbacks run (several rounds, for chains of awaits). */
export async function flushMicrotasks(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await Promise.resolve();
  await new Promise<void>((resolve) => setImmediate(resolve));
}
