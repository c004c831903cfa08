/**
 * The dead letter's room, on a broker with a message limit: a message (its envelope's JSON and its
 * key) one byte over the room is refused with INVALID_ARGUMENT, naming the limit; one exactly at
 * it is stored, fails, and becomes a dead letter with the failure's text cut. Before these checks,
 * such a message was stored, failed, and came back for ever, its dead letter over the limit.
 */
import assert from 'node:assert/strict';
import { LETTER_ROOM } from '../src/broker/check.ts';
import { MAX_LETTER_MESSAGE } from '../src/broker/outcome.ts';
import { type Broker, createEnvelope, ParleyError } from '../src/index.ts';

export async function letterRoomCase(
  b: Broker,
  topic: string,
  limit: number,
  limitName: string,
): Promise<void> {
  const max = limit - LETTER_ROOM;
  const key = 'k1';
  // An envelope whose JSON and key together are `bytes` long (ids and times have fixed lengths).
  const empty = Buffer.byteLength(JSON.stringify(createEnvelope({ source: '/t', type: topic, data: '' })));
  const sized = (bytes: number) =>
    createEnvelope({ source: '/t', type: topic, data: 'x'.repeat(bytes - empty - key.length) });
  const runs: number[] = [];
  const consumer = await b.subscribe(
    { topic, group: 'g', maxAttempts: 1, startFrom: 'beginning' },
    async (d) => {
      runs.push(String(d.envelope.data).length);
      throw new ParleyError('FAILED_PRECONDITION', 'e'.repeat(5000), { retryable: false });
    },
  );
  try {
    await assert.rejects(b.publish(sized(max + 1), { key }), {
      code: 'INVALID_ARGUMENT',
      message: new RegExp(
        `over the largest this broker takes, ${max} \\(${limitName} ${limit} less ${LETTER_ROOM}`,
      ),
    });
    await b.publish(sized(max), { key });
    let letters = await b.deadLetters.list({ topic });
    for (let i = 0; i < 600 && letters.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      letters = await b.deadLetters.list({ topic });
    }
    assert.equal(letters.length, 1);
    assert.deepEqual(runs, [max - empty - key.length], 'handled once, then dead-lettered');
    assert.equal(letters[0]?.code, 'FAILED_PRECONDITION');
    assert.equal(letters[0]?.message, `${'e'.repeat(MAX_LETTER_MESSAGE)}… (5000 characters)`);
  } finally {
    await consumer.close();
  }
}
