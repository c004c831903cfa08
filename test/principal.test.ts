/**
 * A principal set at the edge reaches the callee as ctx.caller.principal and goes on with the
 * calls and events made from that handler: in process, over the memory transport, and through the
 * broker. Anything that is not a principal is dropped, never trusted half-way.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import {
  createEmbeddedBroker,
  createMemoryNetwork,
  defineContract,
  implement,
  type ParleyNode,
  type Principal,
  subscribe,
  z,
} from '../src/index.ts';
import { decodePrincipal, encodePrincipal, MAX_PRINCIPAL_BYTES } from '../src/runtime/principal.ts';
import { testNode, waitFor } from './helpers.ts';

const front = defineContract({
  name: 'front',
  version: '1.0.0',
  actions: { who: { input: z.object({}), output: z.object({ me: z.string(), back: z.string() }) } },
  events: { 'front.seen': { schema: z.object({}), version: 1 } },
});
const back = defineContract({
  name: 'back',
  version: '1.0.0',
  actions: { who: { input: z.object({}), output: z.object({ me: z.string() }) } },
});

const alice: Principal = {
  kind: 'user',
  subject: 'alice',
  roles: ['customer'],
  scopes: ['orders:write'],
  claims: { tier: 'gold' },
};
const label = (p: Principal | undefined) =>
  p === undefined ? 'nobody' : `${p.kind}:${p.subject}:${p.roles.join('+')}`;

describe('principal', () => {
  it('round-trips through its wire form; refuses what is not one', () => {
    assert.deepEqual(decodePrincipal(encodePrincipal(alice)), alice);
    for (const bad of [
      '',
      'null',
      '[]',
      '{"kind":"user"}',
      '{"kind":"user","subject":1,"roles":[],"scopes":[]}',
      'x'.repeat(MAX_PRINCIPAL_BYTES + 1),
    ])
      assert.equal(decodePrincipal(bad), undefined, bad.slice(0, 40));
    assert.throws(
      () => encodePrincipal({ ...alice, claims: { big: 'x'.repeat(MAX_PRINCIPAL_BYTES) } }),
      /over/,
    );
    assert.throws(() => encodePrincipal({ kind: 'user', subject: 'a' } as unknown as Principal), /needs/);
  });

  const nodes: ParleyNode[] = [];
  after(async () => {
    await Promise.allSettled(nodes.map((n) => n.stop()));
  });

  for (const where of ['in process', 'over the memory transport'] as const) {
    it(`reaches the callee and the calls and events it makes, ${where}`, async () => {
      const seenByConsumer: string[] = [];
      const backService = implement(back, {
        actions: { who: (_i, ctx) => ({ me: label(ctx.caller?.principal) }) },
      });
      const frontService = implement(front, {
        actions: {
          who: async (_i, ctx) => {
            await ctx.publish(front, 'front.seen', {});
            const b = await ctx.call(back, 'who', {});
            return { me: label(ctx.caller?.principal), back: b.me };
          },
        },
        on: [
          subscribe(
            front,
            'front.seen',
            (_p, ctx) => void seenByConsumer.push(label(ctx.caller?.principal)),
            { group: 'audit' },
          ),
        ],
      });
      const broker = createEmbeddedBroker({ path: ':memory:' });
      let client: ParleyNode;
      if (where === 'in process') {
        client = testNode({ services: [frontService, backService], broker });
        nodes.push(client);
      } else {
        const net = createMemoryNetwork();
        const a = testNode({ transport: net.transport(), services: [frontService], broker });
        const b = testNode({ transport: net.transport(), services: [backService] });
        client = testNode({ transport: net.transport() });
        nodes.push(a, b, client);
        await a.start();
        await b.start();
      }
      await client.start();
      await waitFor(
        () => client.registry.endpoints('front').length > 0 && client.registry.endpoints('back').length > 0,
      );

      const as = await client.client(front).who({}, { principal: alice });
      assert.deepEqual(as, { me: 'user:alice:customer', back: 'user:alice:customer' });
      await waitFor(() => seenByConsumer.length === 1, 5000, 'the event');
      assert.deepEqual(seenByConsumer, ['user:alice:customer']);

      const anon = await client.client(front).who({});
      assert.deepEqual(anon, { me: 'nobody', back: 'nobody' });
      await waitFor(() => seenByConsumer.length === 2, 5000, 'the second event');
      assert.equal(seenByConsumer[1], 'nobody');
    });
  }

  it('a frozen principal is encoded once, however often it travels; another each time', () => {
    let reads = 0;
    const counted = () => ({
      kind: 'user',
      subject: 'ann',
      roles: [],
      scopes: [],
      claims: {
        tenant: {
          toJSON: () => {
            reads++;
            return 't1';
          },
        },
      },
    });
    const frozen: Principal = Object.freeze(counted());
    assert.equal(encodePrincipal(frozen), encodePrincipal(frozen));
    assert.equal(reads, 1, 'the gateway checks it and the call sends it: one encoding');
    const open: Principal = counted();
    encodePrincipal(open);
    encodePrincipal(open);
    assert.equal(reads, 3, 'one that may change is encoded each time');
    assert.match(encodePrincipal(frozen), /"claims":\{"tenant":"t1"\}/);
  });

  it('claims reach the callee as given', async () => {
    let claims: unknown;
    const node = testNode({
      services: [
        implement(back, {
          actions: {
            who: (_i, ctx) => {
              claims = ctx.caller?.principal?.claims;
              return { me: 'x' };
            },
          },
        }),
      ],
    });
    nodes.push(node);
    await node.start();
    await node.client(back).who({}, { principal: alice });
    assert.deepEqual(claims, { tier: 'gold' });
  });
});
