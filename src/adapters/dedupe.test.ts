import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DedupeWindow } from './dedupe.ts';

/** A store the test settles by hand. */
function manual() {
  const calls: { resolve(): void; reject(e: Error): void }[] = [];
  const store = () =>
    new Promise<void>((resolve, reject) => {
      calls.push({ resolve, reject });
    });
  return { calls, store };
}

describe('publisher dedupe window', () => {
  it('a key published again while its first publish is in flight waits for it and is a duplicate', async () => {
    const w = new DedupeWindow(1000, 100);
    const { calls, store } = manual();
    const first = w.publish('k', 'id1', 0, store);
    const second = w.publish('k', 'id2', 1, store);
    assert.equal(calls.length, 1);
    calls[0]?.resolve();
    assert.deepEqual(await first, { id: 'id1', duplicate: false });
    assert.deepEqual(await second, { id: 'id1', duplicate: true });
  });

  it('a key whose first publish failed is stored anew', async () => {
    const w = new DedupeWindow(1000, 100);
    const { calls, store } = manual();
    const first = w.publish('k', 'id1', 0, store);
    const second = w.publish('k', 'id2', 1, store);
    calls[0]?.reject(new Error('lost'));
    await assert.rejects(first, /lost/);
    await new Promise((r) => setImmediate(r));
    assert.equal(calls.length, 2, 'the second publish stores');
    calls[1]?.resolve();
    assert.deepEqual(await second, { id: 'id2', duplicate: false });
    assert.deepEqual(await w.publish('k', 'id3', 2, store), { id: 'id2', duplicate: true });
  });

  it('a store that throws at once rejects and leaves no key behind', async () => {
    const w = new DedupeWindow(1000, 100);
    await assert.rejects(
      w.publish('k', 'id1', 0, () => {
        throw new Error('bad body');
      }),
      /bad body/,
    );
    assert.deepEqual(await w.publish('k', 'id2', 1, () => Promise.resolve()), {
      id: 'id2',
      duplicate: false,
    });
  });

  it('keys leave after the window, oldest first, and beyond maxKeys', async () => {
    const w = new DedupeWindow(100, 3);
    const ok = () => Promise.resolve();
    await w.publish('a', 'a', 0, ok);
    await w.publish('b', 'b', 50, ok);
    assert.equal((await w.publish('a', 'a2', 100, ok)).duplicate, true, 'a at the edge of its window');
    assert.equal((await w.publish('a', 'a3', 101, ok)).duplicate, false, 'a past its window');
    assert.equal((await w.publish('b', 'b2', 120, ok)).duplicate, true, 'b still in its window');
    await w.publish('c', 'c', 121, ok);
    await w.publish('d', 'd', 122, ok);
    await w.publish('e', 'e', 123, ok);
    // Over 3 keys, the oldest go first (b, then a): d is still known, b is not.
    assert.equal((await w.publish('d', 'd2', 124, ok)).duplicate, true);
    assert.equal((await w.publish('b', 'b3', 125, ok)).duplicate, false);
  });

  it('a publish without a key is stored every time and takes no room in the window', async () => {
    const w = new DedupeWindow(1000, 1);
    let stored = 0;
    const ok = async () => {
      stored++;
    };
    await w.publish('k', 'k1', 0, ok);
    assert.deepEqual(await w.publish(undefined, 'id1', 1, ok), { id: 'id1', duplicate: false });
    assert.deepEqual(await w.publish(undefined, 'id1', 2, ok), { id: 'id1', duplicate: false });
    assert.equal(stored, 3);
    // With room for one key, the keyless publishes did not push 'k' out.
    assert.deepEqual(await w.publish('k', 'k2', 3, ok), { id: 'k1', duplicate: true });
    await assert.rejects(
      w.publish(undefined, 'id2', 4, () => {
        throw new Error('bad body');
      }),
      /bad body/,
    );
  });
});
