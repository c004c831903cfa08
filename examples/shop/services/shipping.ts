/** shipping: creates a shipment once an order is paid; publishes shipment.created. */
import {
  createInbox,
  createOutbox,
  defineServiceModule,
  implement,
  subscribe,
  uuidv7,
} from '../../../src/index.ts';
import { payments, shipping } from '../contracts.ts';
import { openDatabase } from '../db.ts';

export default defineServiceModule({
  name: 'shipping',
  setup({ dataDir }) {
    const db = openDatabase(
      dataDir,
      'shipping',
      'CREATE TABLE IF NOT EXISTS shipments (id TEXT PRIMARY KEY, order_id TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL)',
    );
    const inbox = createInbox(db);
    const outbox = createOutbox(db);
    const insert = db.prepare('INSERT OR IGNORE INTO shipments (id, order_id, created_at) VALUES (?, ?, ?)');
    return {
      outbox,
      services: [
        implement(shipping, {
          actions: {
            shipments: () => ({
              shipments: db
                .prepare(
                  'SELECT id, order_id AS orderId, created_at AS createdAt FROM shipments ORDER BY created_at',
                )
                .all() as { id: string; orderId: string; createdAt: number }[],
            }),
          },
          on: [
            subscribe(
              payments,
              'payment.succeeded',
              ({ orderId }, ctx) => {
                inbox.once(ctx, () => {
                  const shipmentId = `shp_${uuidv7()}`;
                  if (insert.run(shipmentId, orderId, Date.now()).changes === 0) return;
                  void ctx.publish(shipping, 'shipment.created', { orderId, shipmentId }, { key: orderId });
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
