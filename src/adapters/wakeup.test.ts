import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Wakeup } from './wakeup.ts';

/** Whether `p` has settled once the queued callbacks have run. */
async function settled(p: Promise<void>): Promise<boolean> {
  let done = false;
  void p.then(() => {
    done = true;
  });
  await new Promise((r) => setImmediate(r));
  return done;
}

describe('consumer loop wakeup', () => {
  it('a wait ends at the next wake, and a wake with nobody waiting is not kept for later', async () => {
    const w = new Wakeup();
    w.wake();
    const first = w.wait();
    assert.equal(await settled(first), false, 'the earlier wake does not end a later wait');
    w.wake();
    assert.equal(await settled(first), true);
    const second = w.wait();
    assert.equal(await settled(second), false);
    w.wake();
    assert.equal(await settled(second), true);
  });

  it('many wakes for one wait call its resolve function once', async () => {
    // Resolving a settled promise again is what the wakeup exists to avoid: count the calls of the
    // resolve function the wait's promise hands out (only the first promise made: the promises
    // that `then` derives from it are made by the same class).
    let calls = 0;
    let made = 0;
    const Original = globalThis.Promise;
    class Counting<T> extends Original<T> {
      constructor(
        executor: (resolve: (value: T | PromiseLike<T>) => void, reject: (reason?: unknown) => void) => void,
      ) {
        const first = made++ === 0;
        super((resolve, reject) =>
          executor((value) => {
            if (first) calls++;
            resolve(value);
          }, reject),
        );
      }
    }
    const w = new Wakeup();
    let waiting: Promise<void>;
    globalThis.Promise = Counting as PromiseConstructor;
    try {
      waiting = w.wait();
    } finally {
      globalThis.Promise = Original;
    }
    for (let i = 0; i < 100; i++) w.wake();
    await waiting;
    assert.equal(calls, 1);
  });
});
