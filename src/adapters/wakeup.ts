/**
 * @module adapters/wakeup
 * What a consumer's read loop waits on while it has no room: `wait` resolves at the next `wake`.
 *
 * `wake` runs once per settled message (the group consumer's `onRoom`), hundreds of times for each
 * time the loop waits. It resolves the wait once and forgets it: calling a promise's resolve
 * function again after it settled costs ≈0.4 µs in Node (the engine reports a second resolve to
 * the runtime), and a loop that kept its resolver until it ran again paid that for nearly every
 * message (Redis, four groups in one process: ≈6% of the subscriber's profile samples).
 */
export class Wakeup {
  private resolve: (() => void) | undefined;

  /** Resolves at the next `wake` (a `wake` before this call does not count). */
  wait(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.resolve = resolve;
    });
  }

  /** Ends the current wait, if there is one. */
  wake(): void {
    const resolve = this.resolve;
    if (resolve === undefined) return;
    this.resolve = undefined;
    resolve();
  }
}
