/**
 * The dead letter's room, on a broker with a message limit: a message (its envelope's JSON and its
 * key) one byte over the room is refused with INVALID_ARGUMENT, naming the limit; one exactly at
 * it is stored, fails, and becomes a dead letter with the failure's text cut. Before these checks,
 * such a message was stored, failed, and came back for ever, its dead letter over the limit.
 */
import assert from 'node:assert/strict';
import { LETTER_ROOM } from '../src/broker/check.ts';
import { letterBodyRoom, MAX_LETTER_MESSAGE } from '../src/broker/outcome.ts';
import { type Broker, createEnvelope, type DeadLetter, ParleyError } from '../src/index.ts';

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

/**
 * Another writer's body that is no envelope and too large for a dead letter holding all of it in
 * base64 (4 characters for 3 bytes) but under the broker's limit: its letter keeps its first
 * bytes, says how many of how many, and the message is settled, not delivered again. Before,
 * the store refused the letter, the message was not acknowledged, and it came back for ever.
 */
export async function foreignLetterRoomCase(
  b: Broker,
  topic: string,
  limit: number,
  inject: (topic: string, body: Buffer) => Promise<void>,
): Promise<void> {
  const size = limit - LETTER_ROOM - 100;
  const body = Buffer.alloc(size, 'x'.charCodeAt(0));
  body.write('not json ', 0);
  let runs = 0;
  const consumer = await b.subscribe({ topic, group: 'g', maxAttempts: 1, lease: 1000 }, async () => {
    runs++;
  });
  try {
    await inject(topic, body);
    let letters = await b.deadLetters.list({ topic });
    for (let i = 0; i < 600 && letters.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      letters = await b.deadLetters.list({ topic });
    }
    assert.equal(letters.length, 1);
    const kept = letterBodyRoom(limit);
    assert.ok(kept < size && kept > 0.7 * size, `${kept} of ${size}`);
    const letter = letters[0] as DeadLetter;
    assert.equal(letter.code, 'INVALID_ARGUMENT');
    assert.match(letter.message, new RegExp(`^the letter keeps the first ${kept} of its ${size} bytes`));
    assert.ok(Buffer.from(String(letter.envelope.data), 'base64').equals(body.subarray(0, kept)));
    // Settled: past a lease and more, no second letter and no handler run.
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal((await b.deadLetters.list({ topic })).length, 1);
    assert.equal(runs, 0);
  } finally {
    await consumer.close();
  }
}

/** The dead letter of a message whose not-before header (1e15) is past any delay a publish may set. */
export function assertFarNotBeforeLetter(letters: readonly DeadLetter[], id: string): void {
  assert.equal(letters.length, 1);
  assert.equal(letters[0]?.code, 'INVALID_ARGUMENT');
  assert.match(
    letters[0]?.message ?? '',
    /not-before time 1000000000000000 is more than 2147483647 ms ahead/,
  );
  assert.equal(letters[0]?.envelope.id, id);
}
