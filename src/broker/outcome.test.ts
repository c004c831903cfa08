import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createEnvelope } from '../envelope/envelope.ts';
import { ParleyError } from '../errors.ts';
import { LETTER_ROOM } from './check.ts';
import { createEmbeddedBroker } from './embedded/embedded-broker.ts';
import {
  failure,
  letterBodyRoom,
  MAX_LETTER_MESSAGE,
  replayable,
  runHandler,
  spentAttempts,
  storedLetter,
  UNDECODABLE,
  undecodableLetter,
} from './outcome.ts';

const json = (b: Uint8Array) => JSON.parse(Buffer.from(b).toString('utf8'));
const envelope = createEnvelope({ source: '/t', type: 'orders.placed', data: { n: 1 } });
const letter = {
  topic: 'orders.placed',
  group: 'mail',
  envelope,
  code: 'INTERNAL',
  message: 'boom',
  retryable: false,
  attempts: 5,
  firstFailureAt: 10,
  lastFailureAt: 20,
};
const text = (v: unknown) => JSON.stringify(v);
const bytesOf = (l: { envelope: { data: unknown } }) =>
  Buffer.from(String(l.envelope.data), 'base64').toString();

describe('storedLetter', () => {
  it("passes a store's own letter as it was, with its key", () => {
    const read = storedLetter(7, text({ ...letter, key: 'k1' }), json);
    assert.deepEqual(read, { ...letter, id: 7, key: 'k1' });
    assert.equal(replayable(read), true);
  });

  it('a letter whose envelope is none keeps its fields; the envelope is kept as text and not replayed', () => {
    const read = storedLetter(8, text({ ...letter, envelope: null }), json);
    assert.equal(read.topic, 'orders.placed');
    assert.equal(read.code, 'INTERNAL');
    assert.equal(read.envelope.source, UNDECODABLE);
    assert.equal(bytesOf(read), 'null');
    assert.equal(replayable(read), false);
  });

  it('a record that is no letter is an unreadable letter (DATA_LOSS) holding all its bytes', () => {
    for (const raw of [
      'null',
      'not json',
      text({ ...letter, topic: 5 }),
      text({ ...letter, attempts: '5' }),
      '',
    ]) {
      const read = storedLetter(9, raw, json);
      assert.equal(read.id, 9);
      assert.equal(read.code, 'DATA_LOSS', raw);
      assert.equal(read.topic, '');
      assert.equal(read.envelope.source, UNDECODABLE);
      assert.equal(bytesOf(read), raw, 'every byte kept');
      assert.equal(replayable(read), false);
    }
  });

  it('an unknown code becomes UNKNOWN, as on the wire', () => {
    assert.equal(storedLetter(1, text({ ...letter, code: 'MELTDOWN' }), json).code, 'UNKNOWN');
  });
});

describe('failure', () => {
  const e = (message: string) => new ParleyError('FAILED_PRECONDITION', message);

  it('cuts a long text once, marking the length it had; a text cut already is kept as it is', () => {
    const once = failure(e('e'.repeat(5000))).message;
    assert.equal(once, `${'e'.repeat(MAX_LETTER_MESSAGE)}… (5000 characters)`);
    // A hub's client cuts before it settles, and the hub's broker stores it: still 5000.
    assert.equal(failure(e(once)).message, once);
    assert.equal(failure(e('short')).message, 'short');
    assert.equal(failure(e('e'.repeat(MAX_LETTER_MESSAGE))).message, 'e'.repeat(MAX_LETTER_MESSAGE));
  });

  it('a text that only looks cut (the mark elsewhere, or too long after it) is cut again', () => {
    const shifted = `${'e'.repeat(MAX_LETTER_MESSAGE + 1)}… (5000 characters)`;
    assert.equal(
      failure(e(shifted)).message,
      `${'e'.repeat(MAX_LETTER_MESSAGE)}… (${shifted.length} characters)`,
    );
    const trailing = `${'e'.repeat(MAX_LETTER_MESSAGE)}… (5000 characters) and more`;
    assert.equal(
      failure(e(trailing)).message,
      `${'e'.repeat(MAX_LETTER_MESSAGE)}… (${trailing.length} characters)`,
    );
  });
});

describe('undecodableLetter', () => {
  const why = new ParleyError('INVALID_ARGUMENT', 'stored message is not an envelope: not JSON', {
    details: { at: 0 },
  });

  it('keeps every byte of a body within the room, and the failure as it was', () => {
    const body = Buffer.from('not json');
    const { envelope, error } = undecodableLetter('m1', 'orders.placed', body, why, body.byteLength);
    assert.equal(envelope.source, UNDECODABLE);
    assert.equal(envelope.id, 'm1');
    assert.ok(Buffer.from(String(envelope.data), 'base64').equals(body));
    assert.equal(error, why);
    assert.equal(replayable({ envelope }), false);
  });

  it('keeps the first `room` bytes of a longer body and says how many of how many', () => {
    const body = Buffer.from('0123456789');
    const { envelope, error } = undecodableLetter('m2', 't', body, why, 6);
    assert.ok(Buffer.from(String(envelope.data), 'base64').equals(body.subarray(0, 6)));
    assert.equal(error.code, 'INVALID_ARGUMENT');
    assert.equal(
      error.message,
      "the letter keeps the first 6 of its 10 bytes (whole, it would be over the broker's largest message); stored message is not an envelope: not JSON",
    );
    assert.deepEqual(error.details, { at: 0 });
  });

  it('counts a string body in UTF-8 bytes', () => {
    const { envelope, error } = undecodableLetter('m3', 't', 'ééé', why, 4);
    assert.ok(Buffer.from(String(envelope.data), 'base64').equals(Buffer.from('éé')));
    assert.match(error.message, /^the letter keeps the first 4 of its 6 bytes/);
    assert.ok(
      Buffer.from(String(undecodableLetter('m4', 't', 'ééé', why, 6).envelope.data), 'base64').equals(
        Buffer.from('ééé'),
      ),
    );
  });

  it('the room under a limit leaves LETTER_ROOM for the rest, in whole groups of 3 bytes', () => {
    assert.equal(letterBodyRoom(1024 * 1024), ((1024 * 1024 - LETTER_ROOM) / 4) * 3);
    assert.equal(letterBodyRoom(LETTER_ROOM + 7), 3);
    assert.equal(letterBodyRoom(100), 0);
    // What the room lets through fits: base64 of it and LETTER_ROOM are within the limit.
    for (const limit of [1_000_000, 1024 * 1024, 268_435_460])
      assert.ok(Math.ceil(letterBodyRoom(limit) / 3) * 4 + LETTER_ROOM <= limit, String(limit));
  });
});

describe('runHandler', () => {
  it('a handler that throws, rejects or returns no promise settles as a promise all the same', async () => {
    const boom = new Error('boom');
    await assert.rejects(
      runHandler(() => {
        throw boom;
      }, 1),
      (e: unknown) => e === boom,
    );
    await assert.rejects(
      runHandler(() => Promise.reject(boom), 1),
      (e: unknown) => e === boom,
    );
    // Plain JavaScript: `(d) => { … }` returns nothing, and is done when it returns.
    const plain = (() => undefined) as unknown as (d: number) => Promise<void>;
    const settled = runHandler(plain, 1);
    assert.ok(settled instanceof Promise);
    await settled;
  });

  it('a broker consumer whose handler returns no promise acks its messages, and closes', async () => {
    const broker = createEmbeddedBroker({ path: ':memory:' });
    const got: unknown[] = [];
    const plain = ((d: { envelope: { data: unknown } }) => {
      got.push(d.envelope.data);
    }) as unknown as Parameters<typeof broker.subscribe>[1];
    const consumer = await broker.subscribe({ topic: 'orders.placed', group: 'g' }, plain);
    await broker.publish(createEnvelope({ source: '/t', type: 'orders.placed', data: 1 }));
    await broker.publish(createEnvelope({ source: '/t', type: 'orders.placed', data: 2 }));
    for (let i = 0; i < 200 && (got.length < 2 || broker.stats().pending > 0); i++)
      await new Promise((r) => setTimeout(r, 10));
    // Until 2026-12-03 each delivery threw an uncaught TypeError, stayed pending, and close hung.
    assert.deepEqual(got, [1, 2]);
    assert.equal(broker.stats().pending, 0);
    await consumer.close();
    await broker.close();
  });
});

describe('spentAttempts', () => {
  it('reads a whole number from 0; anything else a client may write reads as 0, as if absent', () => {
    assert.equal(spentAttempts(undefined), 0);
    assert.equal(spentAttempts('0'), 0);
    assert.equal(spentAttempts('3'), 3);
    for (const odd of ['Infinity', '1e400', '2.5', '-3', 'x', '', '99999999999999999999'])
      assert.equal(spentAttempts(odd), 0, odd);
  });
});
