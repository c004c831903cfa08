/**
 * orders: takes an order (prices from catalog by RPC), stores it PENDING and publishes
 * order.placed in the same transaction (outbox); follows the choreography to CONFIRMED, REJECTED
 * or CANCELLED, and announces each outcome (outbox again). Every consumer uses the inbox.
 */
import { createHash } from 'node:crypto';
import {
  createInbox,
  createOutbox,
  defineServiceModule,
  type Inbox,
  implement,
  subscribe,
  uuidv7,
} from '../../../src/index.ts';
import { catalog, inventory, type Order, orders, payments, shipping } from '../contracts.ts';
import { openDatabase } from '../db.ts';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS orders (
  id TEXT PRIMARY KEY, customer TEXT NOT NULL, status TEXT NOT NULL, total INTEGER NOT NULL,
  lines TEXT NOT NULL, reason TEXT, shipment TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS orders_status ON orders (status, created_at);`;

interface Row {
  id: string;
  customer: string;
  status: Order['status'];
  total: number;
  lines: string;
  reason: string | null;
  shipment: string | null;
  created_at: number;
  updated_at: number;
}

/** A UUID (version 8, RFC 9562) from an idempotency key: the same key, the same order id. */
function keyedId(key: string): string {
  const h = createHash('sha256').update(key).digest();
  h[6] = ((h[6] as number) & 0x0f) | 0x80;
  h[8] = ((h[8] as number) & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

const toOrder = (r: Row): Order => ({
  id: r.id,
  customer: r.customer,
  status: r.status,
  total: r.total,
  lines: JSON.parse(r.lines) as Order['lines'],
  reason: r.reason,
  shipment: r.shipment,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export default defineServiceModule({
  name: 'orders',
  setup({ dataDir }) {
    const db = openDatabase(dataDir, 'orders', SCHEMA);
    const inbox: Inbox = createInbox(db);
    const outbox = createOutbox(db);
    const insert = db.prepare(
      `INSERT INTO orders (id, customer, status, total, lines, created_at, updated_at)
       VALUES (@id, @customer, 'PENDING', @total, @lines, @now, @now)`,
    );
    const byId = db.prepare('SELECT * FROM orders WHERE id = ?');
    const list = db.prepare('SELECT * FROM orders ORDER BY created_at DESC LIMIT ?');
    const listByStatus = db.prepare('SELECT * FROM orders WHERE status = ? ORDER BY created_at DESC LIMIT ?');
    // Only a PENDING order moves: a late or repeated event changes nothing.
    const settle = db.prepare(
      `UPDATE orders SET status = @status, reason = @reason, updated_at = @now WHERE id = @id AND status = 'PENDING'`,
    );
    const ship = db.prepare('UPDATE orders SET shipment = ?, updated_at = ? WHERE id = ?');
    const get = (id: string) => byId.get(id) as Row | undefined;

    // Prices are cached; catalog's ephemeral price-changed notification evicts an entry.
    const prices = new Map<string, number>();

    const outcome = (
      id: string,
      status: 'CONFIRMED' | 'REJECTED' | 'CANCELLED',
      reason: string | null,
      announce: (row: Row) => void,
    ) => {
      if (settle.run({ id, status, reason, now: Date.now() }).changes === 0) return;
      announce(get(id) as Row);
    };

    return {
      outbox,
      services: [
        implement(orders, {
          actions: {
            place: async (input, ctx) => {
              // The client's id, else one derived from its Idempotency-Key: a repeat finds the order.
              const id =
                input.id ?? (ctx.idempotencyKey === undefined ? uuidv7() : keyedId(ctx.idempotencyKey));
              const existing = get(id);
              if (existing !== undefined) return toOrder(existing);
              const skus = [...new Set(input.lines.map((l) => l.sku))];
              const missing = skus.filter((s) => !prices.has(s));
              if (missing.length > 0) {
                try {
                  const { products } = await ctx.call(catalog, 'prices', { skus: missing });
                  for (const p of products) prices.set(p.sku, p.price);
                } catch (error) {
                  if ((error as { code?: string }).code === 'NOT_FOUND') {
                    throw ctx.fail('UNKNOWN_SKU', (error as Error).message);
                  }
                  throw error;
                }
              }
              const lines = input.lines.map((l) => ({ ...l, price: prices.get(l.sku) as number }));
              const total = lines.reduce((sum, l) => sum + l.price * l.quantity, 0);
              db.transaction(() => {
                if (get(id) !== undefined) return; // placed meanwhile by a retry of the same id
                insert.run({
                  id,
                  customer: input.customer,
                  total,
                  lines: JSON.stringify(lines),
                  now: Date.now(),
                });
                void ctx.publish(
                  orders,
                  'order.placed',
                  { orderId: id, customer: input.customer, card: input.card, total, lines: input.lines },
                  { key: id },
                );
              }).immediate();
              ctx.log.info({ order: id, total }, 'order placed');
              return toOrder(get(id) as Row);
            },
            get: ({ id }, ctx) => {
              const row = get(id);
              if (row === undefined) throw ctx.fail('NO_ORDER', `no order ${id}`);
              return toOrder(row);
            },
            list: ({ status, limit }) => ({
              orders: (
                (status === undefined ? list.all(limit) : listByStatus.all(status, limit)) as Row[]
              ).map(toOrder),
            }),
          },
          on: [
            subscribe(
              inventory,
              'inventory.rejected',
              ({ orderId, reason }, ctx) => {
                inbox.once(ctx, () =>
                  outcome(orderId, 'REJECTED', reason, (o) => {
                    void ctx.publish(
                      orders,
                      'order.rejected',
                      { orderId, customer: o.customer, reason },
                      { key: orderId },
                    );
                  }),
                );
              },
              { startFrom: 'beginning' },
            ),
            subscribe(
              payments,
              'payment.failed',
              ({ orderId, reason }, ctx) => {
                inbox.once(ctx, () =>
                  outcome(orderId, 'CANCELLED', `payment failed: ${reason}`, (o) => {
                    void ctx.publish(
                      orders,
                      'order.cancelled',
                      { orderId, customer: o.customer, reason: `payment failed: ${reason}` },
                      { key: orderId },
                    );
                  }),
                );
              },
              { startFrom: 'beginning' },
            ),
            subscribe(
              payments,
              'payment.succeeded',
              ({ orderId }, ctx) => {
                inbox.once(ctx, () =>
                  outcome(orderId, 'CONFIRMED', null, (o) => {
                    void ctx.publish(
                      orders,
                      'order.confirmed',
                      { orderId, customer: o.customer, total: o.total },
                      { key: orderId },
                    );
                  }),
                );
              },
              { startFrom: 'beginning' },
            ),
            subscribe(
              shipping,
              'shipment.created',
              ({ orderId, shipmentId }, ctx) => {
                inbox.once(ctx, () => ship.run(shipmentId, Date.now(), orderId));
              },
              { startFrom: 'beginning' },
            ),
            subscribe(catalog, 'catalog.price-changed', ({ sku }) => void prices.delete(sku), {
              ephemeral: true,
            }),
          ],
        }),
      ],
      close: () => db.close(),
    };
  },
});
