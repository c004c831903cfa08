import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { createJsonCodec } from '../codec/json.ts';
import { createMsgpackCodec } from '../codec/msgpack.ts';
import { defineContract } from '../contract/contract.ts';
import type { Context } from './context.ts';
import { eventEnvelope } from './envelopes.ts';

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
