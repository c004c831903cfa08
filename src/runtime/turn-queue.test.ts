import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TurnQueue } from './turn-queue.ts';

const turnEnd = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('per-turn batching', () => {
  it('a turn’s items are handed over together, in order, at its end; the next turn is its own batch', async () => {
    const sent: number[][] = [];
    const q = new TurnQueue<number>((items) => sent.push(items));
    q.add(1);
    q.add(2);
    q.add(3);
    assert.deepEqual(sent, [], 'nothing before the end of the turn');
    await turnEnd();
    assert.deepEqual(sent, [[1, 2, 3]]);
    q.add(4);
    await turnEnd();
    assert.deepEqual(sent, [[1, 2, 3], [4]]);
  });

  it('flush hands over now (once); clear drops; an empty turn sends nothing', async () => {
    const sent: string[][] = [];
    const q = new TurnQueue<string>((items) => sent.push(items));
    q.add('a');
    q.flush();
    assert.deepEqual(sent, [['a']]);
    q.add('b');
    q.clear();
    await turnEnd();
    q.flush();
    assert.deepEqual(sent, [['a']], 'the scheduled hand-over found nothing and sent nothing');
  });
});
