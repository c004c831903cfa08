/**
 * inventory: reserves stock when an order is placed (or rejects it), and releases the reservation
 * when its payment fails: the compensation. Inbox on every consumer, outbox for what it publishes.
 */
import { createInbox, createOutbox, defineServiceModule, implement, subscribe } from '../../../src/index.ts';
import { inventory, orders, payments } from '../contracts.ts';
import { openDatabase } from '../db.ts';

/** Starting stock: plenty of everything but the poster, which is sold out. */
export const INITIAL_STOCK: Record<string, number> = {
  keyboard: 1000,
  mouse: 1000,
  monitor: 1000,
  cable: 1000,
  poster: 0,
};

const SCHEMA = `
CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, available INTEGER NOT NULL, reserved INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS reservations (order_id TEXT PRIMARY KEY, state TEXT NOT NULL, lines TEXT NOT NULL);`;

export default defineServiceModule({
  name: 'inventory',
  setup({ dataDir }) {
    const db = openDatabase(dataDir, 'inventory', SCHEMA);
    const seed = db.prepare('INSERT OR IGNORE INTO stock (sku, available) VALUES (?, ?)');
    db.transaction(() => {
      for (const [sku, n] of Object.entries(INITIAL_STOCK)) seed.run(sku, n);
    })();
    const inbox = createInbox(db);
    const outbox = createOutbox(db);
    const available = db.prepare('SELECT available FROM stock WHERE sku = ?').pluck();
    const take = db.prepare(
      'UPDATE stock SET available = available - ?, reserved = reserved + ? WHERE sku = ?',
    );
    const giveBack = db.prepare(
      'UPDATE stock SET available = available + ?, reserved = reserved - ? WHERE sku = ?',
    );
    const restock = db.prepare(
      'INSERT INTO stock (sku, available) VALUES (?, ?) ON CONFLICT (sku) DO UPDATE SET available = available + excluded.available',
    );
    const hold = db.prepare(
      "INSERT OR IGNORE INTO reservations (order_id, state, lines) VALUES (?, 'HELD', ?)",
    );
    const reservation = db.prepare('SELECT state, lines FROM reservations WHERE order_id = ?');
    const release = db.prepare(
      "UPDATE reservations SET state = 'RELEASED' WHERE order_id = ? AND state = 'HELD'",
    );

    return {
      outbox,
      services: [
        implement(inventory, {
          actions: {
            stock: () => ({
              items: db.prepare('SELECT sku, available, reserved FROM stock ORDER BY sku').all() as {
                sku: string;
                available: number;
                reserved: number;
              }[],
              reservations: (
                db.prepare('SELECT order_id AS orderId, state FROM reservations ORDER BY order_id').all() as {
                  orderId: string;
                  state: 'HELD' | 'RELEASED';
                }[]
              ).map((r) => ({ orderId: r.orderId, state: r.state })),
            }),
            restock: ({ sku, quantity }) => {
              restock.run(sku, quantity);
              return { available: available.get(sku) as number };
            },
          },
          on: [
            subscribe(
              orders,
              'order.placed',
              (order, ctx) => {
                inbox.once(ctx, () => {
                  const wanted = new Map<string, number>();
                  for (const l of order.lines) wanted.set(l.sku, (wanted.get(l.sku) ?? 0) + l.quantity);
                  const short = [...wanted].filter(
                    ([sku, n]) => ((available.get(sku) as number | undefined) ?? 0) < n,
                  );
                  if (short.length > 0) {
                    const reason = `out of stock: ${short
                      .map(
                        ([sku, n]) =>
                          `${sku} (${n} wanted, ${(available.get(sku) as number | undefined) ?? 0} left)`,
                      )
                      .join(', ')}`;
                    void ctx.publish(
                      inventory,
                      'inventory.rejected',
                      { orderId: order.orderId, reason },
                      { key: order.orderId },
                    );
                    return;
                  }
                  if (hold.run(order.orderId, JSON.stringify([...wanted])).changes === 0) return;
                  for (const [sku, n] of wanted) take.run(n, n, sku);
                  void ctx.publish(
                    inventory,
                    'inventory.reserved',
                    {
                      orderId: order.orderId,
                      customer: order.customer,
                      card: order.card,
                      total: order.total,
                    },
                    { key: order.orderId },
                  );
                });
              },
              { startFrom: 'beginning' },
            ),
            subscribe(
              payments,
              'payment.failed',
              ({ orderId }, ctx) => {
                inbox.once(ctx, () => {
                  const r = reservation.get(orderId) as { state: string; lines: string } | undefined;
                  if (r === undefined || release.run(orderId).changes === 0) return;
                  for (const [sku, n] of JSON.parse(r.lines) as [string, number][]) giveBack.run(n, n, sku);
                  ctx.log.info({ order: orderId }, 'reservation released');
                });
              },
              { startFrom: 'beginning' },
            ),
          ],
        }),
      ],
      close: () => db.close(),
    };
  },
});
