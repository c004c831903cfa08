/**
 * @module adapters/idle-pool
 * The readers a broker's history keeps between reads (Kafka's assigned consumers, JetStream's
 * ordered consumers), so that a read going on from where the last one ended needs no new one. At
 * most `max` are kept. One kept for `idleMs` without being taken is handed to the `idle` callback
 * it was kept with, which stops it working and says whether the pool should go on holding it.
 */
export class IdlePool<T> {
  private readonly kept: { item: T; timer: ReturnType<typeof setTimeout> | undefined }[] = [];

  constructor(
    private readonly max: number,
    private readonly idleMs: number,
  ) {}

  /** Takes out the first kept item `fits` accepts; with `any`, else the one kept last; else none. */
  take(fits: (item: T) => boolean, any = false): T | undefined {
    let i = this.kept.findIndex((k) => fits(k.item));
    if (i === -1 && any) i = this.kept.length - 1;
    if (i === -1) return undefined;
    const [k] = this.kept.splice(i, 1);
    clearTimeout(k?.timer);
    return k?.item;
  }

  /**
   * Keeps `item` for a next read; false when the pool is full (the caller disposes of it). After
   * `idleMs` untaken, `idle(item)` runs: true keeps holding it (idle, untimed), false drops it.
   */
  keep(item: T, idle: (item: T) => boolean): boolean {
    if (this.kept.length >= this.max) return false;
    const k: (typeof this.kept)[number] = { item, timer: undefined };
    k.timer = setTimeout(() => {
      k.timer = undefined;
      if (idle(item)) return;
      const i = this.kept.indexOf(k);
      if (i !== -1) this.kept.splice(i, 1);
    }, this.idleMs);
    k.timer.unref?.();
    this.kept.push(k);
    return true;
  }

  /** Empties the pool (the broker closes): what it held. */
  drain(): T[] {
    const all = this.kept.splice(0);
    for (const k of all) clearTimeout(k.timer);
    return all.map((k) => k.item);
  }
}
