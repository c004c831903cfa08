/**
 * @module runtime/deadlines
 * Expires many pending calls with one timer. Calls are grouped into 1 ms slots by deadline; a
 * min-heap of slot numbers finds the next one to fire. Tracking a call costs a map lookup and a
 * list link, a fraction of a `setTimeout` + `clearTimeout` pair, which matters on the in-process
 * path where a whole call takes well under a microsecond.
 */
import type { Clock, TimerHandle } from './clock.ts';

/** The longest delay a Node timer takes as it is (2³¹ − 1 ms, about 24.8 days). */
const LONGEST_TIMER = 2_147_483_647;

export interface DeadlineEntry {
  /** Stops tracking; the callback will not run. Safe to call more than once. */
  cancel(): void;
}

/**
 * Something waiting for a deadline. The wheel links it into a list by its own fields, so a caller
 * that extends this class (the server's race of a call against its deadline) costs no extra object.
 */
export abstract class Expiring implements DeadlineEntry {
  prev: Expiring | undefined = undefined;
  next: Expiring | undefined = undefined;
  slot: Slot | undefined = undefined;
  wheel: DeadlineWheel | undefined = undefined;
  /** Called once, at the deadline (no reason) or from `expireAll(reason)`. */
  abstract expire(reason?: unknown): void;
  cancel(): void {
    if (this.slot?.remove(this)) this.wheel?.released();
  }
}

class Entry extends Expiring {
  constructor(private readonly onExpire: (reason?: unknown) => void) {
    super();
  }
  expire(reason?: unknown): void {
    this.onExpire(reason);
  }
}

class Slot {
  head: Expiring | undefined = undefined;
  size = 0;
  add(entry: Expiring): void {
    entry.next = this.head;
    if (this.head !== undefined) this.head.prev = entry;
    this.head = entry;
    this.size++;
  }
  /** False when the entry was already removed. */
  remove(entry: Expiring): boolean {
    if (entry.prev === undefined && entry.next === undefined && this.head !== entry) return false;
    if (entry.prev !== undefined) entry.prev.next = entry.next;
    else this.head = entry.next;
    if (entry.next !== undefined) entry.next.prev = entry.prev;
    entry.prev = undefined;
    entry.next = undefined;
    this.size--;
    return true;
  }
}

const noop: DeadlineEntry = { cancel() {} };

/**
 * While entries are tracked the timer holds the process open, as a pending `setTimeout` would.
 * When the last entry leaves, nothing is done: a node making one call after another would
 * otherwise pay for cancelling and re-arming a timer per call, which is most of what this class
 * saves. The armed timer then fires once at its time, finds nothing due, and is not re-armed; or
 * `close()` (called by `node.stop()`) cancels it at once.
 */
export class DeadlineWheel {
  private readonly slots = new Map<number, Slot>();
  private live = 0;
  private lastKey = Number.NaN;
  private lastSlot: Slot | undefined;
  private readonly heap: number[] = [];
  private timer: TimerHandle | undefined;
  private armedFor = Number.POSITIVE_INFINITY;

  constructor(private readonly clock: Clock) {}

  /**
   * Calls `onExpire()` once `deadline` (epoch ms) has passed, unless cancelled first.
   * `expireAll(reason)` calls it early with a reason.
   */
  track(deadline: number, onExpire: (reason?: unknown) => void): DeadlineEntry {
    if (deadline === Number.POSITIVE_INFINITY) return noop;
    const entry = new Entry(onExpire);
    this.add(deadline, entry);
    return entry;
  }

  /** Like `track`, for an object that is its own entry. */
  add(deadline: number, entry: Expiring): void {
    if (deadline === Number.POSITIVE_INFINITY) return;
    const key = Math.ceil(deadline);
    // Consecutive calls mostly share a millisecond: skip the map for them.
    let slot = key === this.lastKey ? this.lastSlot : this.slots.get(key);
    if (slot === undefined) {
      slot = new Slot();
      this.slots.set(key, slot);
      heapPush(this.heap, key);
      if (key < this.armedFor) this.arm(key);
    }
    this.lastKey = key;
    this.lastSlot = slot;
    entry.slot = slot;
    entry.wheel = this;
    slot.add(entry);
    this.live++;
  }

  /** Number of tracked, unexpired entries. */
  size(): number {
    return this.live;
  }

  /** Expires every tracked entry now, passing `reason` (used when a node stops). */
  expireAll(reason: unknown): void {
    const slots = [...this.slots.values()];
    for (const slot of slots) {
      for (let e = slot.head; e !== undefined; ) {
        const next = e.next;
        e.cancel();
        e.expire(reason);
        e = next;
      }
    }
  }

  /** An entry left (cancelled or expired). */
  released(): void {
    this.live--;
  }

  /** Expires nothing; drops the timer and every slot, so an idle wheel holds nothing. */
  close(): void {
    if (this.live > 0) return;
    this.timer?.cancel();
    this.timer = undefined;
    this.armedFor = Number.POSITIVE_INFINITY;
    this.reset();
  }

  private dropSlot(key: number): void {
    this.slots.delete(key);
    if (key === this.lastKey) {
      this.lastKey = Number.NaN;
      this.lastSlot = undefined;
    }
  }

  private reset(): void {
    this.slots.clear();
    this.heap.length = 0;
    this.lastKey = Number.NaN;
    this.lastSlot = undefined;
  }

  private arm(key: number): void {
    this.timer?.cancel();
    this.armedFor = key;
    // Node runs a longer timer after 1 ms (with a warning): a deadline weeks away, which a peer
    // may send, would spin the wheel every millisecond. A timer that ends early just re-arms.
    this.timer = this.clock.setTimeout(() => this.fire(), Math.min(key - this.clock.now(), LONGEST_TIMER));
  }

  private fire(): void {
    this.timer = undefined;
    this.armedFor = Number.POSITIVE_INFINITY;
    const now = this.clock.now();
    while (this.heap.length > 0 && (this.heap[0] as number) <= now) {
      const key = heapPop(this.heap) as number;
      const slot = this.slots.get(key);
      this.dropSlot(key);
      for (let e = slot?.head; e !== undefined; ) {
        const next = e.next;
        slot?.remove(e);
        this.live--;
        e.expire();
        e = next;
      }
    }
    if (this.live === 0) {
      // Idle: no timer until the next entry arrives.
      this.reset();
      return;
    }
    // Skip slots emptied by cancellation; arm for the first that still holds entries.
    while (this.heap.length > 0) {
      const key = this.heap[0] as number;
      if ((this.slots.get(key)?.size ?? 0) > 0) {
        this.arm(key);
        return;
      }
      heapPop(this.heap);
      this.dropSlot(key);
    }
  }
}

function heapPush(heap: number[], value: number): void {
  heap.push(value);
  let i = heap.length - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if ((heap[parent] as number) <= value) break;
    heap[i] = heap[parent] as number;
    i = parent;
  }
  heap[i] = value;
}

function heapPop(heap: number[]): number | undefined {
  const top = heap[0];
  const last = heap.pop();
  if (heap.length === 0 || last === undefined) return top;
  let i = 0;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= heap.length) break;
    const r = l + 1;
    const child = r < heap.length && (heap[r] as number) < (heap[l] as number) ? r : l;
    if ((heap[child] as number) >= last) break;
    heap[i] = heap[child] as number;
    i = child;
  }
  heap[i] = last;
  return top;
}
