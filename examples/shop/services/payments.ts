/**
 * payments: charges the card when stock is reserved, through a fake card processor that can be
 * told to decline everything or to be slow (`parley call payments.setProcessor '{"mode":"slow"}'`)
 * and always declines card 4000 0000 0000 0002. Idempotent by order id: the processor call
 * carries the order id as its idempotency key, and one charge per order is recorded, so a
 * redelivery after a crash charges nobody twice.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  createInbox,
  createOutbox,
  defineServiceModule,
  implement,
  subscribe,
  uuidv7,
} from '../../../src/index.ts';
import { DECLINED_CARD, inventory, payments } from '../contracts.ts';
import { openDatabase } from '../db.ts';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS charges (
  order_id TEXT PRIMARY KEY, amount INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT, charge_id TEXT,
  created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS processor_ledger (
  idempotency_key TEXT PRIMARY KEY, amount INTEGER NOT NULL, approved INTEGER NOT NULL, charge_id TEXT);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);`;

type Mode = 'ok' | 'fail' | 'slow';

export default defineServiceModule({
  name: 'payments',
  setup({ dataDir, env }) {
    const db = openDatabase(dataDir, 'payments', SCHEMA);
    const inbox = createInbox(db);
    const outbox = createOutbox(db);
    const getSetting = db.prepare('SELECT value FROM settings WHERE key = ?').pluck();
    const putSetting = db.prepare(
      'INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    );
    const ledgerGet = db.prepare(
      'SELECT approved, charge_id AS chargeId FROM processor_ledger WHERE idempotency_key = ?',
    );
    const ledgerPut = db.prepare(
      'INSERT OR IGNORE INTO processor_ledger (idempotency_key, amount, approved, charge_id) VALUES (?, ?, ?, ?)',
    );
    const record = db.prepare(
      'INSERT OR IGNORE INTO charges (order_id, amount, status, reason, charge_id, created_at) VALUES (?, ?, ?, ?, ?, ?)',
    );
    const processor = () => ({
      mode: ((getSetting.get('mode') as string | undefined) ?? env.SHOP_PAYMENTS_MODE ?? 'ok') as Mode,
      delayMs: Number(getSetting.get('delayMs') ?? env.SHOP_PAYMENTS_DELAY_MS ?? 2000),
    });

    /**
     * The fake card processor. Like a real one it keeps its own record by idempotency key: asked
     * again about the same order it answers as the first time and charges nothing new.
     */
    const charge = async (
      orderId: string,
      amount: number,
      card: string,
      signal: AbortSignal,
    ): Promise<{ chargeId: string; declined: null } | { chargeId: null; declined: string }> => {
      const seen = ledgerGet.get(orderId) as { approved: number; chargeId: string | null } | undefined;
      if (seen !== undefined) {
        return seen.approved === 1 && seen.chargeId !== null
          ? { chargeId: seen.chargeId, declined: null }
          : { chargeId: null, declined: 'card declined' };
      }
      const { mode, delayMs } = processor();
      if (mode === 'slow') await sleep(delayMs, undefined, { signal });
      const declined =
        mode === 'fail'
          ? 'processor is failing every charge'
          : card === DECLINED_CARD
            ? 'card declined'
            : null;
      if (declined !== null) {
        ledgerPut.run(orderId, amount, 0, null);
        return { chargeId: null, declined };
      }
      const chargeId = `ch_${uuidv7()}`;
      ledgerPut.run(orderId, amount, 1, chargeId);
      return { chargeId, declined: null };
    };

    return {
      outbox,
      services: [
        implement(payments, {
          actions: {
            charges: () => ({
              charges: db
                .prepare('SELECT order_id AS orderId, amount, status, reason FROM charges ORDER BY order_id')
                .all() as {
                orderId: string;
                amount: number;
                status: 'SUCCEEDED' | 'FAILED';
                reason: string | null;
              }[],
            }),
            setProcessor: ({ mode, delayMs }) => {
              db.transaction(() => {
                putSetting.run('mode', mode);
                putSetting.run('delayMs', String(delayMs));
              })();
              return { mode, delayMs };
            },
          },
          on: [
            subscribe(
              inventory,
              'inventory.reserved',
              async ({ orderId, total, card }, ctx) => {
                const result = await charge(orderId, total, card, ctx.signal);
                inbox.once(ctx, () => {
                  const { chargeId, declined } = result;
                  const status = chargeId === null ? 'FAILED' : 'SUCCEEDED';
                  // One charge per order, whichever message brought it.
                  if (record.run(orderId, total, status, declined, chargeId, Date.now()).changes === 0)
                    return;
                  if (chargeId !== null) {
                    void ctx.publish(
                      payments,
                      'payment.succeeded',
                      { orderId, amount: total, chargeId },
                      { key: orderId },
                    );
                  } else {
                    void ctx.publish(
                      payments,
                      'payment.failed',
                      { orderId, reason: declined ?? 'declined' },
                      { key: orderId },
                    );
                  }
                });
              },
              // A charge that takes longer than the lease would be handed to another instance.
              { startFrom: 'beginning', timeout: 8000, lease: 10_000 },
            ),
          ],
        }),
      ],
      close: () => db.close(),
    };
  },
});
