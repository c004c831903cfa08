/**
 * @module broker/inbox
 * Effectively-once handling on top of at-least-once delivery. The consumer's own SQLite database
 * records each handled message id in the same transaction as the handler's writes, so a
 * redelivered message finds its id there and changes nothing twice.
 *
 * ```ts
 * const inbox = createInbox(db);
 * subscribe(orders, 'order.placed', (order, ctx) => {
 *   inbox.once(ctx, () => db.prepare('INSERT INTO reservations ...').run(order.id));
 * });
 * ```
 */
import type Database from 'better-sqlite3';

export interface InboxOptions {
  /** Table name. Default `parley_inbox`. */
  table?: string;
}

export interface Inbox {
  /**
   * Runs `work` in a transaction with the record of message `ctx.id` for `ctx.service`, unless
   * that message was handled before. Returns whether `work` ran. `work` must be synchronous
   * (better-sqlite3 transactions are), and should use the same database.
   */
  once(ctx: { id: string; service: string }, work: () => void): boolean;
  /** Forgets records older than `ms` (keep longer than any redelivery can take). Returns how many. */
  prune(ms: number, now?: number): number;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function createInbox(db: Database.Database, options: InboxOptions = {}): Inbox {
  const table = options.table ?? 'parley_inbox';
  if (!NAME.test(table)) throw new Error(`invalid inbox table name ${table}`);
  db.exec(`CREATE TABLE IF NOT EXISTS ${table} (
    consumer TEXT NOT NULL, message_id TEXT NOT NULL, handled_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, message_id)) WITHOUT ROWID`);
  const record = db.prepare(
    `INSERT OR IGNORE INTO ${table} (consumer, message_id, handled_at) VALUES (?, ?, ?)`,
  );
  const prune = db.prepare(`DELETE FROM ${table} WHERE handled_at < ?`);
  const run = db.transaction((ctx: { id: string; service: string }, work: () => void) => {
    if (record.run(ctx.service, ctx.id, Date.now()).changes === 0) return false;
    work();
    return true;
  });
  return {
    once: (ctx, work) => run.immediate(ctx, work),
    prune: (ms, now = Date.now()) => prune.run(now - ms).changes,
  };
}
