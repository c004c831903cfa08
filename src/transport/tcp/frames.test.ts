import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeFrame, type Frame, FrameReader, FrameType } from './frames.ts';

const frames = [
  encodeFrame(FrameType.Request, 1, Buffer.from('{"a":1}')),
  encodeFrame(FrameType.Reply, 0xffffffff, Buffer.alloc(0)),
  encodeFrame(FrameType.Broadcast, 7, Buffer.alloc(300, 0x61)),
];
const stream = Buffer.concat(frames);
const expected = [
  { type: FrameType.Request, id: 1, payload: '{"a":1}' },
  { type: FrameType.Reply, id: 0xffffffff, payload: '' },
  { type: FrameType.Broadcast, id: 7, payload: 'a'.repeat(300) },
];

function read(chunks: Buffer[], max = 1024) {
  const got: { type: number; id: number; payload: string }[] = [];
  const errors: string[] = [];
  const reader = new FrameReader(
    max,
    (f: Frame) => void got.push({ type: f.type, id: f.id, payload: f.payload.toString() }),
    (reason) => void errors.push(reason),
  );
  for (const c of chunks) reader.push(c);
  return { got, errors };
}

describe('FrameReader', () => {
  it('reads the same frames however the stream is cut', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const { got, errors } = read([stream.subarray(0, cut), stream.subarray(cut)]);
      assert.deepEqual(got, expected, `cut at ${cut}`);
      assert.deepEqual(errors, []);
    }
    const bytes = [...stream].map((b) => Buffer.from([b]));
    assert.deepEqual(read(bytes).got, expected, 'one byte at a time');
  });

  it('refuses an oversized length from the header alone, once, and reads nothing after', () => {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(2000, 0);
    const { got, errors } = read([frames[0] as Buffer, head, frames[1] as Buffer]);
    assert.deepEqual(got, expected.slice(0, 1));
    assert.equal(errors.length, 1);
    assert.match(errors[0] as string, /over the maximum of 1024/);
  });

  it('refuses an unknown frame type', () => {
    const { got, errors } = read([encodeFrame(42 as FrameType, 1, Buffer.alloc(2)), frames[0] as Buffer]);
    assert.deepEqual(got, []);
    assert.deepEqual(errors, ['unknown frame type 42']);
  });
});
