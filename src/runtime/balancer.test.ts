import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createBalancer } from './balancer.ts';
import type { OutboundCall } from './pipeline.ts';
import type { Endpoint } from './registry.ts';

function call(options: { key?: string } = {}, tried: string[] = []): OutboundCall {
  return {
    service: 's',
    action: 'a',
    input: {},
    deadline: 0,
    idempotent: false,
    options,
    parent: undefined,
    tried,
  };
}

const remote = (id: string): Endpoint => ({ nodeId: id, local: false });

describe('balancer', () => {
  it('prefers the local endpoint', () => {
    const pick = createBalancer();
    const eps = [{ nodeId: 'me', local: true }, remote('a'), remote('b')];
    for (let i = 0; i < 10; i++) assert.equal(pick(eps, call())?.nodeId, 'me');
    const remoteFirst = createBalancer({ preferLocal: false });
    const seen = new Set(Array.from({ length: 9 }, () => remoteFirst(eps, call())?.nodeId));
    assert.equal(seen.size, 3);
  });

  it('round robin spreads evenly', () => {
    const pick = createBalancer();
    const eps = ['a', 'b', 'c'].map(remote);
    const counts = new Map<string, number>();
    for (let i = 0; i < 300; i++) {
      const id = pick(eps, call())?.nodeId as string;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    assert.deepEqual([...counts.values()], [100, 100, 100]);
  });

  it('key hash: same key same node; removing a node moves only its keys', () => {
    const pick = createBalancer();
    const four = ['a', 'b', 'c', 'd'].map(remote);
    const three = four.filter((e) => e.nodeId !== 'd');
    let moved = 0;
    const perNode = new Map<string, number>();
    for (let k = 0; k < 2000; k++) {
      const key = `customer-${k}`;
      const before = pick(four, call({ key }))?.nodeId as string;
      assert.equal(pick(four, call({ key }))?.nodeId, before, 'stable');
      perNode.set(before, (perNode.get(before) ?? 0) + 1);
      const after = pick(three, call({ key }))?.nodeId;
      if (before !== 'd') assert.equal(after, before, 'keys of surviving nodes stay');
      else moved++;
    }
    assert.equal(moved, perNode.get('d'));
    for (const n of perNode.values()) assert.ok(n > 350 && n < 650, `spread ${[...perNode.values()]}`);
  });

  it('avoids endpoints the call already tried while others remain', () => {
    const pick = createBalancer();
    const eps = ['a', 'b'].map(remote);
    for (let i = 0; i < 5; i++) assert.equal(pick(eps, call({}, ['a']))?.nodeId, 'b');
    assert.ok(pick(eps, call({}, ['a', 'b'])) !== undefined, 'all tried: still picks one');
    assert.equal(pick([], call()), undefined);
  });
});
