import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { createJsonCodec } from '../codec/json.ts';
import { createMsgpackCodec } from '../codec/msgpack.ts';
import { type AnyContract, defineContract } from '../contract/contract.ts';
import { assertEnvelope } from '../envelope/envelope.ts';
import type { Context } from './context.ts';
import { callEnvelope, callEnvelopeJson, eventEnvelope } from './envelopes.ts';

const contract = defineContract({
  name: 'shop',
  version: '1.0.0',
  actions: {},
  events: { 'order.placed': { schema: z.object({ id: z.string() }), version: 2 } },
});
const base = {
  nodeId: 'n1',
  contract,
  event: 'order.placed',
  payload: { id: 'o1' },
  now: Date.UTC(2026, 0, 1),
};

describe('event envelopes', () => {
  it('outside a handler: no trace context, and no datacontenttype for JSON (CloudEvents assumes it)', () => {
    const env = eventEnvelope({ ...base, parent: undefined, codec: createJsonCodec() });
    assert.deepEqual(Object.keys(env).sort(), [
      'data',
      'dataschema',
      'id',
      'source',
      'specversion',
      'time',
      'type',
    ]);
    assert.equal(env.dataschema, 'urn:parley:shop:order.placed:v2');
    assert.equal(env.time, '2026-01-01T00:00:00.000Z');
  });

  it('names the dataschema of each event sent, in any order (it is kept for the last one sent)', () => {
    // Another contract with an event of the same name, and one of another name.
    const other = defineContract({
      name: 'billing',
      version: '1.0.0',
      actions: {},
      events: {
        'order.placed': { schema: z.object({ id: z.string() }), version: 1 },
        'invoice.sent': { schema: z.object({ id: z.string() }), version: 3 },
      },
    });
    const schemaOf = (c: AnyContract, event: string) =>
      eventEnvelope({ ...base, contract: c, event, parent: undefined, codec: createJsonCodec() }).dataschema;
    for (let round = 0; round < 2; round++) {
      assert.equal(schemaOf(contract, 'order.placed'), 'urn:parley:shop:order.placed:v2');
      assert.equal(schemaOf(contract, 'order.placed'), 'urn:parley:shop:order.placed:v2');
      assert.equal(schemaOf(other, 'order.placed'), 'urn:parley:billing:order.placed:v1');
      assert.equal(schemaOf(other, 'invoice.sent'), 'urn:parley:billing:invoice.sent:v3');
    }
    // A definition's version changed in place (a contract is frozen, its events' definitions are not).
    const shared = { schema: z.object({ id: z.string() }), version: 1 };
    const mutable = defineContract({ name: 'm', version: '1.0.0', actions: {}, events: { 'm.e': shared } });
    assert.equal(schemaOf(mutable, 'm.e'), 'urn:parley:m:m.e:v1');
    shared.version = 2;
    assert.equal(schemaOf(mutable, 'm.e'), 'urn:parley:m:m.e:v2');
  });

  it('names a codec other than JSON', () => {
    const env = eventEnvelope({ ...base, parent: undefined, codec: createMsgpackCodec() });
    assert.equal(env.datacontenttype, 'application/msgpack');
  });

  it('inside a handler: the trace, correlation and causation of the handler', () => {
    const parent = {
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      correlationId: 'c1',
      id: 'r1',
      service: 'orders',
    } as unknown as Context;
    const env = eventEnvelope({ ...base, parent, codec: createJsonCodec() });
    assert.equal(env.traceparent, parent.traceparent);
    assert.equal(env.correlationid, 'c1');
    assert.equal(env.causationid, 'r1');
  });

  it('refuses an invalid payload before anything is built', () => {
    assert.throws(
      () => eventEnvelope({ ...base, payload: { id: 1 }, parent: undefined, codec: createJsonCodec() }),
      (e: unknown) => (e as { code?: string }).code === 'INVALID_ARGUMENT',
    );
  });
});

describe('call envelopes as JSON text', () => {
  const now = Date.UTC(2026, 0, 1);
  interface Case {
    parent?: Context;
    data: unknown;
    deadline: number;
    key?: string;
    principal?: string;
    nodeId?: string;
    type?: string;
  }
  /** What JSON.stringify makes of callEnvelope's envelope with the key and principal, id aside. */
  function expected(c: Case): unknown {
    const env = callEnvelope(c.nodeId ?? 'n1', c.parent, c.type ?? 'calc.add', c.data, now, c.deadline);
    if (c.key !== undefined) env.idempotencykey = c.key;
    if (c.principal !== undefined) env.principal = c.principal;
    return { ...JSON.parse(JSON.stringify(env)), id: 'id' };
  }
  /** What callEnvelopeJson writes, id aside (checked to be a UUIDv7). */
  function written(c: Case): unknown {
    const text = callEnvelopeJson(
      c.nodeId ?? 'n1',
      c.parent,
      c.type ?? 'calc.add',
      c.data,
      now,
      c.deadline,
      c.key,
      c.principal,
    );
    const value = JSON.parse(text) as Record<string, unknown>;
    assert.match(String(value.id), /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    if (Number.isFinite(c.deadline)) assertEnvelope(value);
    return { ...value, id: 'id' };
  }
  const parent = {
    service: 'orders',
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    correlationId: 'corr "1"',
    id: 'req-1',
  } as unknown as Context;

  it('holds what JSON.stringify of the envelope holds', () => {
    const deadline = now + 5000;
    const cases: Case[] = [
      { data: { a: 1, b: 2 }, deadline },
      {
        parent,
        data: { text: 'é "quoted" \\ \n\u2028 😀' },
        deadline,
        key: 'key "k"\r\n',
        principal: '{"sub":"ada"}',
      },
      { parent, data: [1, 'two', null], deadline, nodeId: 'node "x"\u0001', type: 'svc.act"ion' },
      { data: 'a string', deadline },
      { data: 0, deadline },
      { data: null, deadline },
      { data: new Date(now), deadline },
      // No data (an action without input): the attribute is left out, as JSON.stringify leaves it.
      { data: undefined, deadline },
      { data: () => 1, deadline },
      // A deadline JSON has no number for is null, as JSON.stringify writes it.
      { data: {}, deadline: Number.POSITIVE_INFINITY },
      // Back to node n1 after another node's call: the source's kept text follows.
      { data: 1, deadline },
    ];
    for (const c of cases) assert.deepEqual(written(c), expected(c), JSON.stringify(c.data));
  });

  it('data with no JSON (a cycle, a BigInt) is INVALID_ARGUMENT', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    for (const data of [cyclic, { n: 1n }]) {
      assert.throws(
        () => callEnvelopeJson('n1', undefined, 'calc.add', data, now, now + 1, undefined, undefined),
        {
          code: 'INVALID_ARGUMENT',
        },
      );
    }
  });
});
