/**
 * @module runtime/turn-queue
 * Gathering work over one turn of the event loop, for the adapters and the runtime alike.
 */
/**
 * Items gathered over one turn of the event loop and handed over together at its end
 * (`setImmediate`): one command, one socket write, one `multiple` ack for a turn's worth of
 * publishes or acks instead of one each. Per-turn batching goes through it: the adapters' publishes
 * and acks, and the runtime's notification batches.
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
