/**
 * notifications: hears everything a customer should hear about an order and keeps it for them
 * (the gateway pushes it to browsers). A consumer group: instances share the work.
 */
import { createInbox, defineServiceModule, implement, subscribe } from '../../../src/index.ts';
import { notifications, orders, shipping } from '../contracts.ts';
import { openDatabase } from '../db.ts';

export default defineServiceModule({
  name: 'notifications',
  setup({ dataDir }) {
    const db = openDatabase(
      dataDir,
      'notifications',
      'CREATE TABLE IF NOT EXISTS notifications (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, order_id TEXT NOT NULL, text TEXT NOT NULL, at INTEGER NOT NULL)',
    );
    const inbox = createInbox(db);
    const insert = db.prepare('INSERT INTO notifications (customer, order_id, text, at) VALUES (?, ?, ?, ?)');
    const customerOf = db.prepare('SELECT customer FROM notifications WHERE order_id = ? LIMIT 1').pluck();
    const tell = (ctx: { id: string; service: string }, customer: string, orderId: string, text: string) =>
      inbox.once(ctx, () => insert.run(customer, orderId, text, Date.now()));
    const euros = (cents: number) => `€${(cents / 100).toFixed(2)}`;
    return {
      services: [
        implement(notifications, {
          actions: {
            list: ({ customer, limit }) => ({
              notifications: (customer === undefined
                ? db
                    .prepare(
                      'SELECT customer, order_id AS orderId, text, at FROM notifications ORDER BY id DESC LIMIT ?',
                    )
                    .all(limit)
                : db
                    .prepare(
                      'SELECT customer, order_id AS orderId, text, at FROM notifications WHERE customer = ? ORDER BY id DESC LIMIT ?',
                    )
                    .all(customer, limit)) as {
                customer: string;
                orderId: string;
                text: string;
                at: number;
              }[],
            }),
          },
          on: [
            subscribe(
              orders,
              'order.confirmed',
              (o, ctx) =>
                void tell(
                  ctx,
                  o.customer,
                  o.orderId,
                  `Order ${o.orderId} is confirmed: ${euros(o.total)} charged.`,
                ),
              { startFrom: 'beginning' },
            ),
            subscribe(
              orders,
              'order.rejected',
              (o, ctx) =>
                void tell(ctx, o.customer, o.orderId, `Order ${o.orderId} could not be taken: ${o.reason}.`),
              { startFrom: 'beginning' },
            ),
            subscribe(
              orders,
              'order.cancelled',
              (o, ctx) =>
                void tell(
                  ctx,
                  o.customer,
                  o.orderId,
                  `Order ${o.orderId} was cancelled: ${o.reason}. Nothing was charged.`,
                ),
              { startFrom: 'beginning' },
            ),
            subscribe(
              shipping,
              'shipment.created',
              (s, ctx) =>
                void tell(
                  ctx,
                  (customerOf.get(s.orderId) as string | undefined) ?? 'unknown',
                  s.orderId,
                  `Order ${s.orderId} has shipped (${s.shipmentId}).`,
                ),
              { startFrom: 'beginning' },
            ),
          ],
        }),
      ],
      close: () => db.close(),
    };
  },
});
