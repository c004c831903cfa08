/**
 * @module broker/inbox
 * Effectively-once handling on top of at-least-once delivery. The consumer's own SQLite database
 * records each handled message, by its sender and id, in the same transaction as the handler's
 * writes, so a redelivered message finds its record there and changes nothing twice.
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

/** What the inbox reads of a handler's context: a message is (`source`, `id`), per `service`. */
export interface InboxMessage {
  id: string;
  service: string;
  /** The envelope's `source`; undefined for a local call. */
  source?: string | undefined;
}

export interface Inbox {
  /**
   * Runs `work` in a transaction with the record of message (`ctx.source`, `ctx.id`) for
   * `ctx.service`, unless that message was handled before. Returns whether `work` ran. `work`
   * must be synchronous (better-sqlite3 transactions are), and should use the same database.
   */
  once(ctx: InboxMessage, work: () => void): boolean;
  /** Forgets records older than `ms` (keep longer than any redelivery can take). Returns how many. */
  prune(ms: number, now?: number): number;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * CloudEvents makes `source` + `id` unique, not `id` alone: two producers may both send id `1`.
 * Records made before the inbox kept sources (one table keyed on consumer and id) are moved, on
 * first open, to `<table>_legacy` as they are, and a message whose id is there counts as handled
 * whatever its source, until `prune` has removed them all and drops that table. Another inbox on
 * the same database (another process) that opened while the table was there finds it gone on its
 * next message and goes on without it, as the one that dropped it does.
 */
export function createInbox(db: Database.Database, options: InboxOptions = {}): Inbox {
  const table = options.table ?? 'parley_inbox';
  if (!NAME.test(table)) throw new Error(`invalid inbox table name ${table}`);
  const legacyTable = `${table}_legacy`;
  db.transaction(() => {
    const columns = db.pragma(`table_info(${table})`) as { name: string }[];
    const legacy = columns.length > 0 && !columns.some((c) => c.name === 'source');
    if (legacy) db.exec(`ALTER TABLE ${table} RENAME TO ${legacyTable}`);
    db.exec(`CREATE TABLE IF NOT EXISTS ${table} (
      consumer TEXT NOT NULL, source TEXT NOT NULL, message_id TEXT NOT NULL, handled_at INTEGER NOT NULL,
      PRIMARY KEY (consumer, source, message_id)) WITHOUT ROWID`);
  }).immediate();
  const record = db.prepare(
    `INSERT OR IGNORE INTO ${table} (consumer, source, message_id, handled_at) VALUES (?, ?, ?, ?)`,
  );
  const prune = db.prepare(`DELETE FROM ${table} WHERE handled_at < ?`);

  let legacy: { handled: Database.Statement; prune: Database.Statement } | undefined;
  if (db.prepare('SELECT 1 FROM sqlite_master WHERE type = ? AND name = ?').get('table', legacyTable)) {
    legacy = {
      handled: db.prepare(`SELECT 1 FROM ${legacyTable} WHERE consumer = ? AND message_id = ?`),
      prune: db.prepare(`DELETE FROM ${legacyTable} WHERE handled_at < ?`),
    };
  }

  // The legacy table's statements, until it is found dropped (by this inbox or another).
  const fromLegacy = <T>(use: (l: NonNullable<typeof legacy>) => T, none: T): T => {
    if (legacy === undefined) return none;
    try {
      return use(legacy);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith(`no such table: ${legacyTable}`))
        throw error;
      legacy = undefined;
      return none;
    }
  };

  const run = db.transaction((ctx: InboxMessage, work: () => void) => {
    if (fromLegacy((l) => l.handled.get(ctx.service, ctx.id) !== undefined, false)) return false;
    // A local call has no source: '' is none that CloudEvents allows (it must be non-empty).
    if (record.run(ctx.service, ctx.source ?? '', ctx.id, Date.now()).changes === 0) return false;
    work();
    return true;
  });
  const pruneAll = db.transaction((before: number) => {
    let removed = prune.run(before).changes;
    removed += fromLegacy((l) => l.prune.run(before).changes, 0);
    if (legacy !== undefined && db.prepare(`SELECT 1 FROM ${legacyTable} LIMIT 1`).get() === undefined) {
      db.exec(`DROP TABLE ${legacyTable}`);
      legacy = undefined;
    }
    return removed;
  });
  return {
    once: (ctx, work) => run.immediate(ctx, work),
    prune: (ms, now = Date.now()) => pruneAll.immediate(now - ms),
  };
}
