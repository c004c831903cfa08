/**
 * @module transport/id-table
 * What is in flight by numeric id: a transport's pending calls and the requests it is handling,
 * the hub's broker operations and held deliveries. Ids come and go all the time (one per call)
 * and a few dozen are held at once.
 *
 * Not a `Map`. V8 replaces a Map's hash table when deletions fill it, and the replaced table keeps
 * a pointer to its successor and the entries it held (for iterators still walking it). Once one
 * replaced table reaches the old generation (it only has to be alive at two young collections, as
 * happens whenever the process pauses between calls), it keeps its successor alive in every
 * young collection although nothing uses it: the successor is promoted in turn, with the calls it
 * held, and so on, table after table, until a full collection cuts the chain and it can start
 * again. The gateway bench's server fell into that in 4 runs of 6: 0.58 MB promoted at every
 * young collection instead of 2 KB, young collections of 2–5 ms instead of 1, 4–5 full ones
 * instead of 1, and 49–55 µs of CPU per request instead of 40–46. `bench/map-churn.mts` shows it
 * alone: the same churn through a Map and through this table.
 *
 * Calls sit in a ring indexed by the id's low bits instead: ids are handed out in sequence, so
 * the calls in flight rarely share a slot. One that finds its slot taken (a call still running
 * from a full turn of the ring before) grows the ring while it is less than four times what is
 * held (up to 65,536 slots), and otherwise waits in a null-prototype object, whose integer keys
 * V8 keeps in a number dictionary (a replaced dictionary points nowhere). A set and a take cost
 * 28–42 ns here against 83–107 ns in a Map and 287–415 ns in the object alone (20 million of
 * each with 64 in flight). Keys are non-negative integers; values are never undefined
 * (undefined is "not here"). The ring does not shrink: at most four times the most ever held.
 */
const FIRST_RING = 64;
const MAX_RING = 1 << 16;
const FREE = -1;

export class IdTable<V> {
  private ids: number[] = new Array<number>(FIRST_RING).fill(FREE);
  private slots: (V | undefined)[] = new Array<V | undefined>(FIRST_RING).fill(undefined);
  private mask = FIRST_RING - 1;
  /** Entries whose ring slot was taken; undefined while there are none. */
  private spill: Record<number, V> | undefined;
  private spilled = 0;
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(id: number): V | undefined {
    const i = id & this.mask;
    if (this.ids[i] === id) return this.slots[i];
    return this.spilled === 0 ? undefined : (this.spill as Record<number, V>)[id];
  }

  has(id: number): boolean {
    return this.get(id) !== undefined;
  }

  set(id: number, value: V): void {
    const i = id & this.mask;
    if (this.ids[i] === id) {
      this.slots[i] = value;
      return;
    }
    const spill = this.spill;
    if (this.spilled > 0 && (spill as Record<number, V>)[id] !== undefined) {
      (spill as Record<number, V>)[id] = value;
      return;
    }
    this.count++;
    this.place(id, value);
  }

  /** False when `id` was not there. */
  delete(id: number): boolean {
    return this.take(id) !== undefined;
  }

  /** The value of `id`, removed; undefined when it was not there. */
  take(id: number): V | undefined {
    const i = id & this.mask;
    if (this.ids[i] === id) {
      const value = this.slots[i];
      this.ids[i] = FREE;
      this.slots[i] = undefined;
      this.count--;
      return value;
    }
    if (this.spilled === 0) return undefined;
    const spill = this.spill as Record<number, V>;
    const value = spill[id];
    if (value === undefined) return undefined;
    delete spill[id];
    this.count--;
    if (--this.spilled === 0) this.spill = undefined;
    return value;
  }

  /** The values now, as an array: the table may change while the caller works through them. */
  values(): V[] {
    return this.list().map(([, value]) => value);
  }

  /** The ids and values now, as an array (see `values`). */
  list(): [number, V][] {
    const out: [number, V][] = [];
    for (let i = 0; i < this.ids.length; i++) {
      const id = this.ids[i] as number;
      if (id !== FREE) out.push([id, this.slots[i] as V]);
    }
    if (this.spill !== undefined) {
      for (const key in this.spill) out.push([Number(key), this.spill[key as unknown as number] as V]);
    }
    return out;
  }

  clear(): void {
    this.ids = new Array<number>(FIRST_RING).fill(FREE);
    this.slots = new Array<V | undefined>(FIRST_RING).fill(undefined);
    this.mask = FIRST_RING - 1;
    this.spill = undefined;
    this.spilled = 0;
    this.count = 0;
  }

  /** Puts a new entry (already counted) in its slot, growing the ring or spilling when taken. */
  private place(id: number, value: V, mayGrow = true): void {
    const i = id & this.mask;
    if (this.ids[i] === FREE) {
      this.ids[i] = id;
      this.slots[i] = value;
      return;
    }
    if (mayGrow && this.ids.length < MAX_RING && this.count * 4 > this.ids.length) {
      this.grow();
      this.place(id, value);
      return;
    }
    this.spill ??= Object.create(null) as Record<number, V>;
    this.spill[id] = value;
    this.spilled++;
  }

  private grow(): void {
    const held = this.list();
    const size = this.ids.length * 2;
    this.ids = new Array<number>(size).fill(FREE);
    this.slots = new Array<V | undefined>(size).fill(undefined);
    this.mask = size - 1;
    this.spill = undefined;
    this.spilled = 0;
    // One growth at a time (what still collides waits in the spill); the entry being placed is
    // counted but not held yet: place() puts it after this.
    for (const [id, value] of held) this.place(id, value, false);
  }
}
