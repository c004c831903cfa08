import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeFrame, type Frame, FrameReader, FrameType, parseHubUrl } from './frames.ts';

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

describe('FrameReader with a group', () => {
  const nextTurn = () => new Promise((r) => setImmediate(r));
  const frame = (id: number, bytes = 4) => encodeFrame(FrameType.Request, id, Buffer.alloc(bytes, 0x61));

  function grouped(group: number) {
    const ids: number[] = [];
    const reader = new FrameReader(1024, (f) => void ids.push(f.id), assert.fail, group);
    return { ids, reader };
  }

  it('hands over a group at once and the rest of the read one group per later callback, in order', async () => {
    const { ids, reader } = grouped(2);
    reader.push(Buffer.concat([1, 2, 3, 4, 5].map((id) => frame(id))));
    assert.deepEqual(ids, [1, 2]);
    await nextTurn();
    assert.deepEqual(ids, [1, 2, 3, 4]);
    await nextTurn();
    assert.deepEqual(ids, [1, 2, 3, 4, 5]);
  });

  it("runs the microtasks of one group's frames before the next group is read", async () => {
    const seen: string[] = [];
    const reader = new FrameReader(
      1024,
      (f) => {
        seen.push(`frame ${f.id}`);
        // What a request's handler does: answer in a microtask.
        queueMicrotask(() => seen.push(`answer ${f.id}`));
      },
      assert.fail,
      2,
    );
    reader.push(Buffer.concat([1, 2, 3].map((id) => frame(id))));
    await nextTurn();
    assert.deepEqual(seen, ['frame 1', 'frame 2', 'answer 1', 'answer 2', 'frame 3', 'answer 3']);
  });

  it('reads what arrives while frames wait after them, a frame cut across the two included', async () => {
    const { ids, reader } = grouped(2);
    const later = Buffer.concat([frame(4, 300), frame(5)]);
    reader.push(Buffer.concat([frame(1), frame(2), frame(3), later.subarray(0, 100)]));
    reader.push(later.subarray(100));
    assert.deepEqual(ids, [1, 2]);
    await nextTurn();
    await nextTurn();
    assert.deepEqual(ids, [1, 2, 3, 4, 5]);
  });

  it('reads nothing after stop, waiting frames included', async () => {
    const { ids, reader } = grouped(2);
    reader.push(Buffer.concat([1, 2, 3, 4].map((id) => frame(id))));
    reader.stop();
    reader.push(frame(5));
    await nextTurn();
    await nextTurn();
    assert.deepEqual(ids, [1, 2]);
  });

  it('refuses a bad frame that waited for its turn, once, and reads nothing after', async () => {
    const ids: number[] = [];
    const errors: string[] = [];
    const reader = new FrameReader(
      1024,
      (f) => void ids.push(f.id),
      (e) => void errors.push(e),
      1,
    );
    reader.push(Buffer.concat([frame(1), encodeFrame(42 as FrameType, 2, Buffer.alloc(1)), frame(3)]));
    await nextTurn();
    await nextTurn();
    assert.deepEqual(ids, [1]);
    assert.deepEqual(errors, ['unknown frame type 42']);
  });
});

describe('parseHubUrl', () => {
  it('reads host and port, IPv6 in brackets', () => {
    assert.deepEqual(parseHubUrl('parley://127.0.0.1:7400'), { host: '127.0.0.1', port: 7400 });
    assert.deepEqual(parseHubUrl('parley://[::1]:65535/'), { host: '::1', port: 65535 });
  });

  it('refuses a URL without a port, or with one past 65535, as INVALID_ARGUMENT', () => {
    // A port past 65535 used to pass here and fail in connect as an unexpected RangeError.
    for (const url of ['parley://127.0.0.1', 'parley://127.0.0.1:99999', 'nats://127.0.0.1:4222']) {
      assert.throws(() => parseHubUrl(url), { code: 'INVALID_ARGUMENT' }, url);
    }
  });
});
