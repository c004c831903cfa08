/**
 * Type tests. `npm test` runs `tsc` over this file first: each `@ts-expect-error` line must be a
 * compile error (or tsc fails with "unused directive"), and each `expectTypeOf` must hold. The
 * functions are never called; the run-time test only checks the file loaded.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { expectTypeOf } from 'expect-type';
import {
  type Client,
  type Context,
  createNode,
  defineContract,
  type InputOf,
  implement,
  type OutputOf,
  type ParleyError,
  subscribe,
  z,
} from '../src/index.ts';

const shop = defineContract({
  name: 'shop',
  version: '1.0.0',
  actions: {
    place: {
      input: z.object({ sku: z.string(), qty: z.number().int().default(1) }),
      output: z.object({ id: z.string(), total: z.number() }),
      errors: { OUT_OF_STOCK: 'FAILED_PRECONDITION', BLOCKED: 'PERMISSION_DENIED' },
    },
    ping: { input: z.object({}), output: z.object({ ok: z.literal(true) }) },
  },
  events: { 'order.placed': { schema: z.object({ id: z.string() }), version: 1 } },
});

function clientTypes(client: Client<typeof shop>) {
  expectTypeOf(client.place).parameter(0).toEqualTypeOf<{ sku: string; qty?: number | undefined }>();
  expectTypeOf(client.place({ sku: 'a' })).resolves.toEqualTypeOf<{ id: string; total: number }>();
  expectTypeOf<InputOf<typeof shop, 'place'>>().toEqualTypeOf<{ sku: string; qty?: number | undefined }>();
  expectTypeOf<OutputOf<typeof shop, 'ping'>>().toEqualTypeOf<{ ok: true }>();

  // @ts-expect-error — wrong action name
  void client.plac({ sku: 'a' });
  // @ts-expect-error — wrong input type
  void client.place({ sku: 1 });
  // @ts-expect-error — missing required input field
  void client.place({ qty: 2 });
  // @ts-expect-error — wrong call option
  void client.place({ sku: 'a' }, { timeout: 'soon' });
  async function useOutput() {
    const out = await client.place({ sku: 'a' });
    // @ts-expect-error — the output has no such field
    void out.totl;
    // @ts-expect-error — wrong output type
    const s: string = out.total;
    return s;
  }
  return useOutput;
}

function serviceTypes() {
  implement(shop, {
    actions: {
      place: (input, ctx) => {
        // The handler sees the parsed input: the default is applied.
        expectTypeOf(input).toEqualTypeOf<{ sku: string; qty: number }>();
        expectTypeOf(ctx.fail('OUT_OF_STOCK')).toEqualTypeOf<ParleyError>();
        // @ts-expect-error — not a declared reason of this action
        ctx.fail('NOPE');
        return { id: 'x', total: input.qty };
      },
      ping: () => ({ ok: true as const }),
    },
  });

  implement(shop, {
    actions: {
      // @ts-expect-error — wrong output type from a handler
      place: () => ({ id: 1, total: 2 }),
      ping: () => ({ ok: true as const }),
    },
  });

  // @ts-expect-error — a handler is missing
  implement(shop, { actions: { place: () => ({ id: 'x', total: 1 }) } });

  subscribe(shop, 'order.placed', (payload, ctx) => {
    expectTypeOf(payload).toEqualTypeOf<{ id: string }>();
    expectTypeOf(ctx).toEqualTypeOf<Context>();
  });
  // @ts-expect-error — no such event
  subscribe(shop, 'order.lost', () => undefined);
}

async function contextTypes(ctx: Context) {
  const r = await ctx.call(shop, 'place', { sku: 'a' });
  expectTypeOf(r).toEqualTypeOf<{ id: string; total: number }>();
  // @ts-expect-error — wrong action name through ctx.call
  await ctx.call(shop, 'nope', {});
  // @ts-expect-error — wrong input through ctx.call
  await ctx.call(shop, 'place', { sku: 2 });
  await ctx.publish(shop, 'order.placed', { id: 'o1' });
  // @ts-expect-error — wrong payload
  await ctx.publish(shop, 'order.placed', { id: 1 });
  // @ts-expect-error — no such event
  await ctx.notify(shop, 'order.gone', { id: 'o1' });
}

async function nodeTypes() {
  const node = createNode();
  await node.publish(shop, 'order.placed', { id: 'x' });
  // @ts-expect-error — wrong payload through the node
  await node.publish(shop, 'order.placed', {});
}

it('type tests compiled (tsc checks this file before the tests run)', () => {
  assert.equal(typeof clientTypes, 'function');
  assert.equal(typeof serviceTypes, 'function');
  assert.equal(typeof contextTypes, 'function');
  assert.equal(typeof nodeTypes, 'function');
});
