import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { ParleyError } from '../errors.ts';
import {
  assertEnvelope,
  createEnvelope,
  fromHeaders,
  OPTIONAL_STRINGS,
  REQUIRED,
  toHeaders,
} from './envelope.ts';
import { randomHex, uuidv7, uuidv7Time } from './ids.ts';

describe('ids', () => {
  it('UUIDv7: version 7, RFC 9562 variant, time-sortable, strictly increasing within a millisecond', () => {
    // Later than any time other tests in this file use: ids never go back in time.
    const now = Date.UTC(2031, 0, 1, 0, 0, 0, 123);
    const ids = Array.from({ length: 5000 }, () => uuidv7(now));
    for (const id of ids) {
      assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    }
    assert.equal(new Set(ids).size, ids.length);
    const sorted = [...ids].sort();
    assert.deepEqual(sorted, ids, 'generation order is sort order');
    assert.ok(uuidv7Time(ids[0] as string) >= now);
    assert.ok(uuidv7(now + 10_000) > (ids.at(-1) as string));
    assert.equal(uuidv7Time(uuidv7(now + 20_000)), now + 20_000);
  });

  it('UUIDv7 from a time between two milliseconds: the millisecond it is in', () => {
    // Later than the test above: ids never go back in time.
    const at = Date.UTC(2031, 0, 2) + 0.75;
    const id = uuidv7(at);
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(uuidv7Time(id), Math.floor(at));
    assert.ok(uuidv7(at + 0.1) > id, 'later in the same millisecond: still increasing');
  });

  it('randomHex gives the asked length', () => {
    assert.match(randomHex(16), /^[0-9a-f]{32}$/);
    assert.match(randomHex(3), /^[0-9a-f]{6}$/);
  });
});

describe('envelope', () => {
  const env = createEnvelope(
    {
      source: '/parley/n1/orders',
      type: 'order.placed',
      data: { id: 'o1' },
      deadline: Date.UTC(2030, 0, 1),
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      idempotencykey: 'k1',
      correlationid: 'c1',
      causationid: 'x1',
      datacontenttype: 'application/json',
    },
    Date.UTC(2029, 0, 1),
  );

  it('createEnvelope: one hidden class for envelopes made alike; extensions copied, __proto__ never', () => {
    // The engine's own answer: a shape per envelope made every reader of them megamorphic.
    setFlagsFromString('--allow-natives-syntax');
    const sameMap = new Function('a', 'b', 'return %HaveSameMap(a, b)') as (
      a: unknown,
      b: unknown,
    ) => boolean;
    const made = Array.from({ length: 200 }, (_, i) =>
      createEnvelope({ source: '/t', type: 't', data: { i } }),
    );
    assert.ok(
      made.every((e) => sameMap(e, made[0])),
      'every envelope has the first one’s map',
    );
    const init = JSON.parse(
      '{"source":"/t","type":"t","data":1,"subject":"s","myext":"x","__proto__":{"p":1}}',
    );
    const env = createEnvelope(init);
    assert.equal(env.subject, 's');
    assert.equal((env as unknown as Record<string, unknown>).myext, 'x');
    assert.equal(Object.getPrototypeOf(env), Object.prototype);
    assert.equal(Object.hasOwn(env, '__proto__'), false);
    assert.equal(({} as Record<string, unknown>).p, undefined);
    assert.equal(createEnvelope({ source: '/t', type: 't', data: 1, id: 'given' }).id, 'given');
  });

  it('has the CloudEvents 1.0 required attributes', () => {
    assert.equal(env.specversion, '1.0');
    assert.equal(env.time, '2029-01-01T00:00:00.000Z');
    assert.equal(assertEnvelope(env), env);
  });

  it('round-trips through binary-mode headers, deadline as an RFC 3339 time', () => {
    const headers = toHeaders(env);
    assert.equal(headers['ce-deadline'], '2030-01-01T00:00:00.000Z');
    assert.equal(headers['content-type'], 'application/json');
    assert.equal(headers['ce-data'], undefined);
    assert.deepEqual(fromHeaders(headers, env.data), env);
    const kafka = toHeaders(env, 'ce_');
    assert.deepEqual(fromHeaders(kafka, env.data, 'ce_'), env);
  });

  it('malformed envelopes are INVALID_ARGUMENT naming the attribute', () => {
    const cases: [unknown, string | undefined][] = [
      [null, undefined],
      [[], undefined],
      [{ ...env, id: '' }, 'id'],
      [{ ...env, type: 5 }, 'type'],
      [{ ...env, specversion: '0.3' }, 'specversion'],
      [{ ...env, deadline: 'soon' }, 'deadline'],
      // Finite, but past what a Date holds: toHeaders could not write it.
      [{ ...env, deadline: 1e300 }, 'deadline'],
      [{ ...env, deadline: -8.64e15 - 1 }, 'deadline'],
      [{ ...env, traceparent: 1 }, 'traceparent'],
    ];
    // Every attribute is checked: each required one missing, each optional one not a string.
    for (const key of REQUIRED) cases.push([{ ...env, [key]: undefined }, key]);
    for (const key of OPTIONAL_STRINGS) cases.push([{ ...env, [key]: { not: 'a string' } }, key]);
    for (const [value, attribute] of cases) {
      assert.throws(
        () => assertEnvelope(value),
        (e: unknown) =>
          e instanceof ParleyError && e.code === 'INVALID_ARGUMENT' && e.details?.attribute === attribute,
      );
    }
    const headers = (deadline: string) => ({
      'ce-id': 'x',
      'ce-source': 's',
      'ce-type': 't',
      'ce-specversion': '1.0',
      'ce-deadline': deadline,
    });
    // Only RFC 3339 date-times: Date.parse alone took each of these (`1` as 2001-01-01).
    for (const deadline of [
      'never',
      '1',
      '2030',
      '2030-01-01',
      'March 7 2030',
      'Tue, 01 Jan 2030 00:00:00 GMT',
    ]) {
      assert.throws(
        () => fromHeaders(headers(deadline), 1),
        (e: unknown) => e instanceof ParleyError && e.details?.attribute === 'deadline',
        deadline,
      );
    }
    for (const [deadline, ms] of [
      ['2030-01-01T00:00:00Z', Date.UTC(2030, 0, 1)],
      ['2030-01-01t01:00:00.250+01:00', Date.UTC(2030, 0, 1, 0, 0, 0, 250)],
    ] as const) {
      assert.equal(fromHeaders(headers(deadline), 1).deadline, ms);
    }
  });
});

describe('ids when the clock goes back', () => {
  it('stay increasing', () => {
    const later = uuidv7(Date.UTC(2032, 0, 1));
    const earlier = uuidv7(Date.UTC(2020, 0, 1));
    assert.ok(earlier > later);
  });
});
