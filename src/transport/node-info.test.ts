import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nodeInfoOf } from './node-info.ts';

const service = { name: 'orders', version: '1.0.0', actions: ['place'], notifications: ['order.placed'] };
const valid = { id: 'n1', status: 'up', codec: 'json', services: [service], labels: { zone: 'a' } };

describe('nodeInfoOf', () => {
  it('keeps valid info, copied down to the fields a node reads', () => {
    const info = nodeInfoOf({ ...valid, extra: 1, services: [{ ...service, secret: 'x' }] });
    assert.deepEqual(info, valid);
    assert.deepEqual(nodeInfoOf({ ...valid, status: 'draining', labels: undefined, services: [] }), {
      id: 'n1',
      status: 'draining',
      codec: 'json',
      services: [],
    });
  });

  it('gives the reason for each malformed shape', () => {
    const cases: [unknown, string][] = [
      [null, 'node info is not an object'],
      [[valid], 'node info is not an object'],
      [{ ...valid, id: '' }, 'node info has no id'],
      [{ ...valid, id: 7 }, 'node info has no id'],
      [{ ...valid, id: 'x'.repeat(1025) }, 'node info has no id'],
      [{ ...valid, status: 'sideways' }, "node n1: status is neither 'up' nor 'draining'"],
      [{ ...valid, codec: undefined }, 'node n1: codec is not a name'],
      [{ ...valid, services: 'all' }, 'node n1: services is not a list'],
      [{ ...valid, services: new Array(100_001).fill(service) }, 'node n1: more than 100000 services'],
      [{ ...valid, services: [service, null] }, 'node n1: service 1 is not an object'],
      [{ ...valid, services: [{ ...service, name: {} }] }, 'node n1: service 0 has no name'],
      [{ ...valid, services: [{ ...service, version: 2 }] }, 'node n1: service orders has no version'],
      [
        { ...valid, services: [{ ...service, actions: 'place' }] },
        "node n1: service orders's actions is not a list",
      ],
      [
        { ...valid, services: [{ ...service, actions: ['place', null] }] },
        "node n1: service orders's actions holds something that is not a name",
      ],
      [
        { ...valid, services: [{ ...service, notifications: undefined }] },
        "node n1: service orders's notifications is not a list",
      ],
      [{ ...valid, labels: ['a'] }, 'node n1: labels is not an object'],
      [{ ...valid, labels: { zone: 5 } }, 'node n1: label zone is not a short string'],
    ];
    for (const [value, reason] of cases)
      assert.equal(nodeInfoOf(value), reason, JSON.stringify(value)?.slice(0, 80));
  });

  it('drops a __proto__ label from parsed JSON and leaves Object.prototype alone', () => {
    const parsed: unknown = JSON.parse(
      `{"id":"n1","status":"up","codec":"json","services":[],"labels":{"__proto__":"x","constructor":"y"}}`,
    );
    const info = nodeInfoOf(parsed);
    assert.ok(typeof info !== 'string');
    assert.deepEqual(Object.keys(info.labels ?? {}), ['constructor']);
    assert.equal(Object.getPrototypeOf(info.labels), Object.prototype);
    assert.equal(({} as Record<string, unknown>).x, undefined);
  });
});
