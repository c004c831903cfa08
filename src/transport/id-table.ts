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
 * A null-prototype object holds the entries instead: V8 keeps integer keys in the object's
 * elements (a number dictionary once they are sparse, which growing ids soon make them), and a
 * replaced elements store points nowhere. Keys are non-negative integers; values are never
 * undefined (undefined is "not here").
 */
export class IdTable<V> {
  private entries: Record<number, V> = Object.create(null);
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(id: number): V | undefined {
    return this.entries[id];
  }

  has(id: number): boolean {
    return this.entries[id] !== undefined;
  }

  set(id: number, value: V): void {
    if (this.entries[id] === undefined) this.count++;
    this.entries[id] = value;
  }

  /** False when `id` was not there. */
  delete(id: number): boolean {
    if (this.entries[id] === undefined) return false;
    delete this.entries[id];
    this.count--;
    return true;
  }

  /** The value of `id`, removed; undefined when it was not there. */
  take(id: number): V | undefined {
    const value = this.entries[id];
    if (value === undefined) return undefined;
    delete this.entries[id];
    this.count--;
    return value;
  }

  /** The values now, as an array: the table may change while the caller works through them. */
  values(): V[] {
    const out: V[] = [];
    for (const key in this.entries) out.push(this.entries[key as unknown as number] as V);
    return out;
  }

  /** The ids and values now, as an array (see `values`). */
  list(): [number, V][] {
    const out: [number, V][] = [];
    for (const key in this.entries) out.push([Number(key), this.entries[key as unknown as number] as V]);
    return out;
  }

  clear(): void {
    this.entries = Object.create(null);
    this.count = 0;
  }
}
