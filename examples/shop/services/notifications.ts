/**
 * notifications: hears everything a customer should hear about an order and keeps it for them.
 * Each step is also announced as `notifications.order-status`, which the gateway pushes to the
 * customer's browser. A consumer group: instances share the work, and a redelivered
 * event (already in the inbox) is neither stored nor announced twice.
 */
import {
  type Context,
  createInbox,
  defineServiceModule,
  implement,
  subscribe,
  type z,
} from '../../../src/index.ts';
import { notifications, orders, shipping } from '../contracts.ts';
import { openDatabase } from '../db.ts';

type Status = z.infer<(typeof notifications)['events']['notifications.order-status']['schema']>['status'];

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
    // Announced after the row is committed, twice: published to the broker's log, from which
    // gateways resume a browser where it left off (on brokers that keep one), and notified, for
    // gateways on brokers that keep none (RabbitMQ, MQTT). Each gateway pushes one of the two.
    const announce = (
      ctx: Context,
      step: { customer: string; orderId: string; status: Status; text: string; reason?: string },
    ) => {
      const status = { reason: null, ...step, at: Date.now() };
      const failed = (error: unknown) =>
        ctx.log.warn({ err: error, order: step.orderId }, 'order status not announced');
      void ctx.publish(notifications, 'notifications.order-status', status).catch(failed);
      void ctx.notify(notifications, 'notifications.order-status', status).catch(failed);
    };
    const tell = (
      ctx: Context,
      customer: string,
      orderId: string,
      step: { status: Status; text: string; reason?: string },
    ) => {
      if (inbox.once(ctx, () => insert.run(customer, orderId, step.text, Date.now()))) {
        announce(ctx, { customer, orderId, ...step });
      }
    };
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
            // PENDING is announced only: the stored notifications stay about how an order ended.
            subscribe(
              orders,
              'order.placed',
              (o, ctx) => {
                if (inbox.once(ctx, () => undefined)) {
                  announce(ctx, {
                    customer: o.customer,
                    orderId: o.orderId,
                    status: 'PENDING',
                    text: `Order ${o.orderId} is received: ${euros(o.total)}.`,
                  });
                }
              },
              { startFrom: 'beginning' },
            ),
            subscribe(
              orders,
              'order.confirmed',
              (o, ctx) =>
                tell(ctx, o.customer, o.orderId, {
                  status: 'CONFIRMED',
                  text: `Order ${o.orderId} is confirmed: ${euros(o.total)} charged.`,
                }),
              { startFrom: 'beginning' },
            ),
            subscribe(
              orders,
              'order.rejected',
              (o, ctx) =>
                tell(ctx, o.customer, o.orderId, {
                  status: 'REJECTED',
                  text: `Order ${o.orderId} could not be taken: ${o.reason}.`,
                  reason: o.reason,
                }),
              { startFrom: 'beginning' },
            ),
            subscribe(
              orders,
              'order.cancelled',
              (o, ctx) =>
                tell(ctx, o.customer, o.orderId, {
                  status: 'CANCELLED',
                  text: `Order ${o.orderId} was cancelled: ${o.reason}. Nothing was charged.`,
                  reason: o.reason,
                }),
              { startFrom: 'beginning' },
            ),
            subscribe(
              shipping,
              'shipment.created',
              (s, ctx) =>
                tell(ctx, (customerOf.get(s.orderId) as string | undefined) ?? 'unknown', s.orderId, {
                  status: 'SHIPPED',
                  text: `Order ${s.orderId} has shipped (${s.shipmentId}).`,
                }),
              { startFrom: 'beginning' },
            ),
          ],
        }),
      ],
      close: () => db.close(),
    };
  },
});
