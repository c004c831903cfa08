import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TurnBatch } from './driver.ts';

describe('per-turn batching', () => {
  it('TurnBatch runs a turn’s work together and gives each call its result', async () => {
    const ran: string[] = [];
    const batch = new TurnBatch();
    const a = batch.call(async () => {
      ran.push('a');
      return 1;
    });
    batch.later(() => ran.push('b'));
    assert.deepEqual(ran, []);
    assert.equal(await a, 1);
    assert.deepEqual(ran, ['a', 'b']);
  });
});
