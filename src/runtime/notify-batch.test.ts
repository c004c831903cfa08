import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createJsonCodec } from '../codec/json.ts';
import { assertEnvelope, createEnvelope, type Envelope } from '../envelope/envelope.ts';
import { ParleyError } from '../errors.ts';
import { NOTIFICATION_BATCH, NotificationBatcher, unbatch } from './notify-batch.ts';

const codec = createJsonCodec();
const tick = () => new Promise((r) => setImmediate(r));

function event(data: unknown, more: Partial<Envelope> = {}): Envelope {
  return {
    ...createEnvelope({
      source: '/parley/n1/orders',
      type: 'order.status',
      data,
      dataschema: 'urn:parley:orders:order.status:v1',
    }),
    ...more,
  };
}

/** A batcher whose frames are kept, decoded as envelopes. */
function capture(maxPayload = 1024 * 1024) {
  const frames: Envelope[] = [];
  const sizes: number[] = [];
  const failures: unknown[] = [];
  const batcher = new NotificationBatcher(
    (frame) => {
      sizes.push(frame.byteLength);
      frames.push(assertEnvelope(codec.decode(frame)));
    },
    () => maxPayload,
    (error) => void failures.push(error),
  );
  return { batcher, frames, sizes, failures };
}

const all = () => true;
const none = () => {
  throw new Error('nothing is malformed here');
};
/** Without the attributes left undefined: what a round trip through JSON keeps. */
const defined = (e: Envelope) => JSON.parse(JSON.stringify(e)) as Envelope;

describe('notification batches', () => {
  it("a turn's notifications leave as one frame and come back as the same envelopes, in order", async () => {
    const { batcher, frames } = capture();
    const sent = [
      event({ n: 1 }),
      event({ n: 2 }, { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' }),
      event({ n: 3 }, { source: '/parley/n1/payments', correlationid: 'c-1', causationid: 'e-9' }),
      event({ n: 4 }, { principal: '{"kind":"user","subject":"ann","roles":[],"scopes":[]}', time: 'x' }),
    ];
    for (const e of sent) batcher.add(e);
    assert.equal(frames.length, 0, 'nothing leaves before the end of the turn');
    await tick();
    assert.equal(frames.length, 1);
    const batch = frames[0] as Envelope;
    assert.equal(batch.type, NOTIFICATION_BATCH);
    assert.equal(batch.source, '/parley/n1/orders');
    assert.deepEqual(unbatch(batch, all, none).map(defined), sent.map(defined));
  });

  it('closes a frame near 60 KiB; a notification larger than that travels alone; nothing is lost', async () => {
    const { batcher, frames, sizes } = capture();
    const sent = Array.from({ length: 700 }, (_, n) => event({ n, note: 'x'.repeat(200) }));
    const big = event({ n: 'big', note: 'y'.repeat(100_000) });
    sent.splice(300, 0, big);
    for (const e of sent) batcher.add(e);
    await tick();
    assert.ok(frames.length >= 4, `${frames.length} frames`);
    for (const [i, size] of sizes.entries()) {
      const alone = unbatch(frames[i] as Envelope, all, none).length === 1;
      assert.ok(alone || size <= 64 * 1024, `frame ${i}: ${size} bytes`);
    }
    const back = frames.flatMap((f) => unbatch(f, all, none));
    assert.deepEqual(back.map(defined), sent.map(defined));
  });

  it("never makes a frame over the transport's maximum, however many notifications a turn makes", async () => {
    const max = 4096;
    const { batcher, frames, sizes } = capture(max);
    // Escapes make JSON longer than the text: the split must count them.
    const sent = Array.from({ length: 200 }, (_, n) =>
      event({ n, note: '"\\'.repeat(40) }, { traceparent: 't'.repeat(55) }),
    );
    for (const e of sent) batcher.add(e);
    await tick();
    assert.ok(frames.length > 1);
    assert.ok(Math.max(...sizes) <= max, `largest frame ${Math.max(...sizes)} bytes`);
    assert.deepEqual(frames.flatMap((f) => unbatch(f, all, none)).map(defined), sent.map(defined));
  });

  it('a frame the transport refuses is reported, not thrown at the end of the turn', async () => {
    const failures: unknown[] = [];
    const batcher = new NotificationBatcher(
      () => {
        throw new Error('socket gone');
      },
      () => 1024 * 1024,
      (error) => void failures.push(error),
    );
    batcher.add(event({ n: 1 }));
    await tick();
    assert.equal((failures[0] as Error).message, 'socket gone');
  });

  it('refuses at once what cannot be sent: data with no JSON, a notification over the maximum', () => {
    const { batcher } = capture(4096);
    assert.throws(
      () => batcher.add(event({ n: 10n })),
      (e: unknown) => e instanceof ParleyError && e.code === 'INVALID_ARGUMENT',
    );
    assert.throws(
      () => batcher.add(event({ note: 'z'.repeat(5000) })),
      (e: unknown) => e instanceof ParleyError && e.code === 'RESOURCE_EXHAUSTED',
    );
    batcher.flush();
  });

  it('flush sends what waits now (a node stopping)', () => {
    const { batcher, frames } = capture();
    batcher.add(event({ n: 1 }));
    batcher.flush();
    assert.equal(frames.length, 1);
    batcher.flush();
    assert.equal(frames.length, 1, 'nothing twice');
  });

  it('a run of one type and dataschema names them once; the rest of the run says 0, 0', async () => {
    const { batcher, frames } = capture();
    const other = { type: 'order.other', dataschema: 'urn:parley:orders:order.other:v1' };
    const sent = [
      event({ n: 1 }),
      event({ n: 2 }),
      event({ n: 3 }, other),
      event({ n: 4 }, other),
      event({ n: 5 }, { dataschema: undefined }),
      event({ n: 6 }, { dataschema: undefined }),
      event({ n: 7 }),
    ];
    for (const e of sent) batcher.add(e);
    await tick();
    const batch = frames[0] as Envelope;
    assert.deepEqual(
      (batch.data as unknown[][]).map((item) => item.slice(1, 3)),
      [
        ['order.status', 'urn:parley:orders:order.status:v1'],
        [0, 0],
        ['order.other', 'urn:parley:orders:order.other:v1'],
        [0, 0],
        ['order.status', ''],
        [0, 0],
        ['order.status', 'urn:parley:orders:order.status:v1'],
      ],
    );
    assert.deepEqual(unbatch(batch, all, none).map(defined), sent.map(defined));
    // An item skipped for its type still names the type the next ones repeat.
    assert.deepEqual(
      unbatch(batch, (type) => type === 'order.other', none).map((e) => e.data),
      [{ n: 3 }, { n: 4 }],
    );
  });

  it("a run that shares its attributes (one handler's notifications) comes back with each one's own", async () => {
    const { batcher, frames } = capture();
    const handler = {
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      correlationid: 'c-1',
      causationid: 'e-9',
    };
    // Each of the attributes an item may state, changed alone from the run before it, then the
    // run again; and values JSON must escape.
    const changes: Partial<Envelope>[] = [
      { source: '/parley/n2/orders' },
      { time: '2026-12-01T00:00:00.000Z' },
      { subject: 'order "7"\n\u2028' },
      { datacontenttype: 'application/json; charset=utf-8' },
      { traceparent: '00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
      { tracestate: 'vendor=a\\b' },
      { correlationid: 'c-2' },
      { causationid: 'e-10' },
      { principal: '{"kind":"user","subject":"zoë","roles":[],"scopes":[]}' },
    ];
    const sent: Envelope[] = [event({ n: 0 }), event({ n: 1 }, handler), event({ n: 2 }, handler)];
    for (const [k, change] of changes.entries()) {
      sent.push(event({ n: 10 * k }, { ...handler, ...change }));
      sent.push(event({ n: 10 * k + 1 }, handler));
    }
    sent.push(event({ n: 99 }));
    for (const e of sent) batcher.add(e);
    await tick();
    assert.equal(frames.length, 1);
    assert.deepEqual(unbatch(frames[0] as Envelope, all, none).map(defined), sent.map(defined));
  });

  it('skips the types nobody listens to, before building them', async () => {
    const { batcher, frames } = capture();
    batcher.add(event({ n: 1 }));
    batcher.add({ ...event({ n: 2 }), type: 'other.thing' });
    await tick();
    const back = unbatch(frames[0] as Envelope, (type) => type === 'other.thing', none);
    assert.deepEqual(
      back.map((e) => e.data),
      [{ n: 2 }],
    );
  });

  it('drops each malformed item with its reason and delivers its neighbours', () => {
    const good = ['0190b6a4-1c2d-7e3f-8a4b-5c6d7e8f9a0b', 'order.status', '', { n: 1 }];
    const batch = createEnvelope({
      source: '/parley/n9',
      type: NOTIFICATION_BATCH,
      data: [
        good,
        ['r', 0, 0, { n: 3 }],
        'not a list',
        ['id-only'],
        [1, 2, 3, 4, 5, 6],
        ['x', 42, '', {}],
        ['', 'order.status', '', {}],
        [7, 'order.status', '', {}],
        ['x', 'order.status', '', {}, 'more is not an object'],
        ['x', 'order.status', '', {}, { source: '' }],
        ['x', 'order.status', 5, {}],
        ['x', 0, '', {}],
        ['x', 'order.status', 0, {}],
        ['x', 0, 'urn:x', {}],
        // Attributes an item may not state are ignored: its data and id stay its own.
        ['y', 'order.status', '', { n: 2 }, { data: 'evil', id: 'z', specversion: '0.3', deadline: 'x' }],
      ],
    });
    const reasons: [number, string][] = [];
    const back = unbatch(batch, all, (reason, index) => void reasons.push([index, reason]));
    assert.deepEqual(
      back.map((e) => [e.id, e.data, e.specversion, e.deadline]),
      [
        [good[0], { n: 1 }, '1.0', undefined],
        ['r', { n: 3 }, '1.0', undefined],
        ['y', { n: 2 }, '1.0', undefined],
      ],
    );
    assert.equal(back[1]?.type, 'order.status', '0, 0 repeats the type of the item before');
    assert.deepEqual(
      reasons.map(([i]) => i),
      [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
    );
    for (const [, reason] of reasons) assert.ok(reason.length > 0);
    const orphan: [number, string][] = [];
    const first = unbatch(
      { ...batch, data: [['r', 0, 0, { n: 3 }], good] },
      all,
      (r, i) => void orphan.push([i, r]),
    );
    assert.deepEqual(
      first.map((e) => e.id),
      [good[0]],
      'a first item cannot repeat a type',
    );
    assert.deepEqual(
      orphan.map(([i]) => i),
      [0],
    );
    assert.throws(
      () => unbatch({ ...batch, data: { not: 'a list' } }, all, none),
      (e: unknown) => e instanceof ParleyError && e.code === 'INVALID_ARGUMENT',
    );
  });
});
