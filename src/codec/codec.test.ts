import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ParleyError } from '../errors.ts';
import { createRandom } from '../transport/faults.ts';
import type { Codec } from './codec.ts';
import { createJsonCodec } from './json.ts';
import { createMsgpackCodec } from './msgpack.ts';

const codecs: Codec[] = [createJsonCodec(), createMsgpackCodec()];

/** The kind of deep merge user code writes; it is what prototype pollution exploits. */
function naiveMerge(
  target: Record<string, unknown>,
  source: Record<string, unknown>,
): Record<string, unknown> {
  for (const key of Object.keys(source)) {
    const value = source[key];
    if (typeof value === 'object' && value !== null) {
      if (typeof target[key] !== 'object' || target[key] === null) target[key] = {};
      naiveMerge(target[key] as Record<string, unknown>, value as Record<string, unknown>);
    } else target[key] = value;
  }
  return target;
}

function assertPrototypeClean(): void {
  const probe = {} as Record<string, unknown>;
  assert.equal(probe.polluted, undefined, 'Object.prototype was polluted');
  assert.equal(Object.hasOwn(Object.prototype, 'polluted'), false);
}

/** MessagePack bytes for a one-entry map {key: {polluted: true}}. */
function msgpackMap(key: string): Uint8Array {
  const k = Buffer.from(key);
  const p = Buffer.from('polluted');
  return Buffer.concat([
    Buffer.from([0x81, 0xa0 | k.length]),
    k,
    Buffer.from([0x81, 0xa0 | p.length]),
    p,
    Buffer.from([0xc3]),
  ]);
}

describe('codecs', () => {
  for (const codec of codecs) {
    describe(codec.name, () => {
      it('round-trips plain data', () => {
        const value = { a: 1, b: 'two', c: [true, null, { d: 1.5 }], e: 'ünïcödé', n: -0.25 };
        assert.deepEqual(codec.decode(codec.encode(value)), value);
      });

      it('bad bytes give INVALID_ARGUMENT, never another kind of throw (2,000 random frames)', () => {
        const random = createRandom(7);
        for (let i = 0; i < 2000; i++) {
          const bytes = new Uint8Array(1 + Math.floor(random() * 40)).map(() => Math.floor(random() * 256));
          try {
            codec.decode(bytes);
          } catch (error) {
            assert.ok(error instanceof ParleyError, `a ${String(error)} escaped`);
            assert.equal(error.code, 'INVALID_ARGUMENT');
            assert.equal(error.details?.codec, codec.name);
          }
        }
        // Truncated frames of a valid value.
        const good = codec.encode({ hello: 'world', list: [1, 2, 3] });
        for (let n = 1; n < good.byteLength; n++) {
          try {
            codec.decode(good.subarray(0, n));
          } catch (error) {
            assert.ok(error instanceof ParleyError && error.code === 'INVALID_ARGUMENT');
          }
        }
      });

      it('values that cannot be encoded give INVALID_ARGUMENT', () => {
        const cyclic: Record<string, unknown> = {};
        cyclic.self = cyclic;
        assert.throws(
          () => codec.encode(cyclic),
          (e: unknown) => e instanceof ParleyError && e.code === 'INVALID_ARGUMENT',
        );
      });
    });
  }

  it('JSON: __proto__ and constructor.prototype are refused and never reach a prototype', () => {
    const json = createJsonCodec();
    const attacks = [
      '{"__proto__":{"polluted":true}}',
      '{"a":{"__proto__":{"polluted":true}}}',
      '{"constructor":{"prototype":{"polluted":true}}}',
      '{"a":[{"constructor":{"prototype":{"polluted":true}}}]}',
      '{"\\u005f_proto__":{"polluted":true}}',
    ];
    for (const text of attacks) {
      assert.throws(
        () => json.decode(Buffer.from(text)),
        (e: unknown) => e instanceof ParleyError && e.code === 'INVALID_ARGUMENT',
        text,
      );
      assertPrototypeClean();
    }
    // A key that only looks similar is data.
    assert.deepEqual(json.decode(Buffer.from('{"proto":1,"constructor":"x"}')), {
      proto: 1,
      constructor: 'x',
    });
  });

  it('MessagePack: a __proto__ key never reaches a prototype, even through a deep merge', () => {
    const mp = createMsgpackCodec();
    for (const key of ['__proto__', 'constructor']) {
      const decoded = mp.decode(msgpackMap(key)) as Record<string, unknown>;
      assert.equal(Object.getPrototypeOf(decoded), Object.prototype);
      naiveMerge({}, decoded);
      Object.assign({}, decoded);
      assertPrototypeClean();
    }
    const nested = mp.encode({ a: JSON.parse('{"__proto__":{"polluted":true}}') });
    naiveMerge({}, mp.decode(nested) as Record<string, unknown>);
    assertPrototypeClean();
  });

  it('MessagePack: references, cycles and msgpackr-only types are refused; plain data, binary and dates are read', async () => {
    const mp = createMsgpackCodec();
    const { Packr } = (await import('msgpackr')) as typeof import('msgpackr');
    // A peer with structured clones on: shared children (2^depth values when walked) and a cycle.
    const clone = new Packr({ structuredClone: true, useRecords: false });
    let shared: unknown = ['leaf'];
    for (let i = 0; i < 24; i++) shared = [shared, shared];
    const cyclic: unknown[] = ['x'];
    cyclic.push(cyclic);
    const extended = new Packr({ useRecords: false, moreTypes: true, structuredClone: false });
    const refused = [
      clone.pack({ data: shared }),
      clone.pack({ data: cyclic }),
      extended.pack({ data: new Set([1]) }),
      extended.pack({ data: /a+$/ }),
      extended.pack({ data: new Error('x') }),
      extended.pack({ data: new Float64Array([1]) }),
      extended.pack({ data: 2n ** 70n }),
    ];
    for (const frame of refused) {
      const started = performance.now();
      assert.throws(
        () => mp.decode(frame),
        (e: unknown) => e instanceof ParleyError && e.code === 'INVALID_ARGUMENT',
      );
      // Refused when read, not after a walk of what the references expand to.
      assert.ok(performance.now() - started < 200);
    }
    const when = new Date('2026-12-03T10:00:00Z');
    const plain = { a: [1, 'two', null, true, { b: 1.5 }], bin: Buffer.from([1, 2]), when };
    const decoded = mp.decode(mp.encode(plain)) as typeof plain;
    assert.deepEqual(decoded.a, plain.a);
    assert.deepEqual([...decoded.bin], [1, 2]);
    assert.equal(decoded.when.getTime(), when.getTime());
  });
});
