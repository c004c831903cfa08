import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type BusMessage, decodeMessage, encodeFrame, FrameWriter, Kind } from './bus-frames.ts';

const from = new TextEncoder().encode('node-a');
const bytes = (...values: number[]) => Uint8Array.from(values);
const turnEnd = () => new Promise<void>((resolve) => setImmediate(resolve));

function frames(message: Uint8Array): BusMessage[] {
  const m = decodeMessage(message);
  assert.ok(Array.isArray(m), String(m));
  return m;
}

/** A writer that records what it publishes. */
function recording(maxBytes = 1024, maxFrames = 16) {
  const sent: { subject: string; frames: BusMessage[] }[] = [];
  const writer = new FrameWriter(
    (subject, message) => sent.push({ subject, frames: frames(message) }),
    maxBytes,
    maxFrames,
  );
  writer.setSender(from);
  return { sent, writer };
}

describe('bus frames', () => {
  it('a single frame decodes to what was encoded', () => {
    const [m] = frames(encodeFrame(Kind.REQUEST, 0xfffffffe, from, bytes(1, 2, 3)));
    assert.deepEqual(
      { ...m, payload: [...(m?.payload ?? [])] },
      {
        kind: Kind.REQUEST,
        id: 0xfffffffe,
        from: 'node-a',
        payload: [1, 2, 3],
      },
    );
  });

  it('a turn: the first frame leaves at once, the rest as one batch per subject, in order', async () => {
    const { sent, writer } = recording();
    writer.send('a', Kind.REQUEST, 1, bytes(1));
    assert.equal(sent.length, 1, 'the first frame is not held back');
    writer.send('a', Kind.REQUEST, 2, bytes(2));
    writer.send('b', Kind.REPLY, 3, bytes());
    writer.send('a', Kind.CANCEL, 4, bytes(4, 4));
    assert.equal(sent.length, 1, 'the rest wait for the end of the turn');
    await turnEnd();
    assert.deepEqual(
      sent.map((s) => [s.subject, s.frames.map((f) => [f.kind, f.id, [...f.payload], f.from])]),
      [
        ['a', [[Kind.REQUEST, 1, [1], 'node-a']]],
        [
          'a',
          [
            [Kind.REQUEST, 2, [2], 'node-a'],
            [Kind.CANCEL, 4, [4, 4], 'node-a'],
          ],
        ],
        ['b', [[Kind.REPLY, 3, [], 'node-a']]],
      ],
    );
    writer.send('a', Kind.REQUEST, 5, bytes());
    assert.equal(sent.length, 3, 'after a turn of several frames, the first frame of the next waits too');
    await turnEnd();
    assert.equal(sent.length, 4);
    writer.send('a', Kind.REQUEST, 6, bytes());
    assert.equal(sent.length, 5, 'after a turn of one frame, the first frame leaves at once again');
    await turnEnd();
  });

  it('a batch leaves when it holds maxBatchFrames frames or would pass maxBatchBytes', async () => {
    const { sent, writer } = recording(40, 3);
    writer.send('s', Kind.REQUEST, 0, bytes());
    for (let i = 1; i <= 4; i++) writer.send('s', Kind.REQUEST, i, bytes(i));
    assert.deepEqual(
      sent.map((s) => s.frames.map((f) => f.id)),
      [[0], [1, 2, 3]],
    );
    writer.send('s', Kind.REQUEST, 5, new Uint8Array(25)); // 4 (10 B) + 5 (34 B) > 40: 4 goes first
    writer.send('s', Kind.REQUEST, 6, new Uint8Array(100)); // over the limit alone: after 5, by itself
    assert.deepEqual(
      sent.map((s) => s.frames.map((f) => f.id)),
      [[0], [1, 2, 3], [4], [5], [6]],
    );
    await turnEnd();
    assert.equal(sent.length, 5);
  });

  it('notifications fill a batch up to the byte limit, whatever the frame count', async () => {
    const { sent, writer } = recording(100, 3);
    for (let i = 0; i <= 12; i++) writer.send('s', Kind.BROADCAST, i, bytes());
    await turnEnd();
    assert.deepEqual(
      sent.map((s) => s.frames.length),
      [1, 11, 1],
    );
  });

  it('clear forgets what waits', async () => {
    const { sent, writer } = recording();
    writer.send('s', Kind.BROADCAST, 1, bytes());
    writer.send('s', Kind.BROADCAST, 2, bytes());
    writer.clear();
    await turnEnd();
    assert.deepEqual(
      sent.map((s) => s.frames.map((f) => f.id)),
      [[1]],
    );
  });

  it('refuses malformed messages and batches with a reason, never a partial batch', () => {
    const head = (count: number) => bytes(Kind.BATCH, 0, 0, 0, count, 1, 120);
    const entry = (kind: number, payload: number[]) => [
      kind,
      0,
      0,
      0,
      7,
      0,
      0,
      0,
      payload.length,
      ...payload,
    ];
    const cases: [Uint8Array, RegExp][] = [
      [bytes(1, 2), /a message of 2 bytes/],
      [bytes(99, 0, 0, 0, 1, 0), /unknown message kind 99/],
      [bytes(1, 0, 0, 0, 1, 40, 65), /cut short/],
      [head(0), /a batch of 0 frames/],
      [bytes(Kind.BATCH, 0xff, 0xff, 0xff, 0xff, 0), /a batch of 4294967295 frames/],
      [Uint8Array.from([...head(2), ...entry(Kind.REQUEST, [1])]), /a batch cut short/],
      [Uint8Array.from([...head(1), Kind.REQUEST, 0, 0, 0, 7, 0, 0, 1, 0, 1]), /a batch cut short/],
      [Uint8Array.from([...head(1), ...entry(Kind.BATCH, [])]), /unknown message kind 9 in a batch/],
      [Uint8Array.from([...head(1), ...entry(0, [])]), /unknown message kind 0 in a batch/],
      [Uint8Array.from([...head(1), ...entry(Kind.REPLY, [1]), 0]), /bytes after its last frame/],
    ];
    for (const [message, reason] of cases) {
      const m = decodeMessage(message);
      assert.equal(typeof m, 'string', `${[...message]} was accepted`);
      assert.match(m as string, reason);
    }
    const ok = frames(Uint8Array.from([...head(2), ...entry(Kind.REQUEST, [1]), ...entry(Kind.REPLY, [])]));
    assert.deepEqual(
      ok.map((f) => [f.kind, f.id, f.from, f.payload.byteLength]),
      [
        [Kind.REQUEST, 7, 'x', 1],
        [Kind.REPLY, 7, 'x', 0],
      ],
    );
  });
});
