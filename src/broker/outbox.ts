/**
 * @module broker/outbox
 * The transactional outbox: an event published inside a transaction of the service's own SQLite
 * database is written to an outbox table in that transaction, so the event exists if and only if
 * the service's change committed. A relay publishes outbox rows to the broker and deletes them.
 * If the process dies between commit and publish, the relay publishes after restart; if it dies
 * between publish and delete, the message is published again with the same id and idempotency key,
 * which the broker's dedupe window (and the consumer's inbox) absorb.
 *
 * With `createNode({ outbox })`, `ctx.publish` called while `outbox.db` is inside a transaction
 * writes to the outbox; outside a transaction it publishes directly.
 */
import type Database from 'better-sqlite3';
import type { Envelope } from '../envelope/envelope.ts';
import type { Clock, TimerHandle } from '../runtime/clock.ts';
import { systemClock } from '../runtime/clock.ts';
import type { Broker, BrokerPublishOptions } from './broker.ts';

export interface OutboxOptions {
  /** Table name. Default `parley_outbox`. */
  table?: string;
}

export interface Outbox {
  readonly db: Database.Database;
  /** True while `db` is inside a transaction: a publish now belongs in the outbox. */
  inTransaction(): boolean;
  /** Writes one event. Synchronous; call inside the service's transaction. */
  write(envelope: Envelope, options?: BrokerPublishOptions): void;
  /** Publishes what is waiting, oldest first; returns how many were published. */
  flush(broker: Broker): Promise<number>;
  /** Publishes waiting rows every `interval` ms until stopped. */
  startRelay(broker: Broker, options?: { interval?: number; clock?: Clock }): { stop(): Promise<void> };
  /** Rows waiting to be published. */
  waiting(): number;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function createOutbox(db: Database.Database, options: OutboxOptions = {}): Outbox {
  const table = options.table ?? 'parley_outbox';
  if (!NAME.test(table)) throw new Error(`invalid outbox table name ${table}`);
  db.exec(`CREATE TABLE IF NOT EXISTS ${table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT, envelope TEXT NOT NULL, msg_key TEXT, delay INTEGER)`);
  const insert = db.prepare(`INSERT INTO ${table} (envelope, msg_key, delay) VALUES (?, ?, ?)`);
  const batch = db.prepare(`SELECT id, envelope, msg_key, delay FROM ${table} ORDER BY id LIMIT 100`);
  const remove = db.prepare(`DELETE FROM ${table} WHERE id = ?`);
  const count = db.prepare(`SELECT count(*) AS n FROM ${table}`);
  let flushing: Promise<number> | undefined;

  const flushOnce = async (broker: Broker): Promise<number> => {
    let published = 0;
    for (;;) {
      const rows = batch.all() as {
        id: number;
        envelope: string;
        msg_key: string | null;
        delay: number | null;
      }[];
      if (rows.length === 0) return published;
      for (const row of rows) {
        const env = JSON.parse(row.envelope) as Envelope;
        const opts: BrokerPublishOptions = {};
        if (row.msg_key !== null) opts.key = row.msg_key;
        if (row.delay !== null) opts.delay = row.delay;
        await broker.publish(env, opts);
        remove.run(row.id);
        published++;
      }
    }
  };

  const outbox: Outbox = {
    db,
    inTransaction: () => db.inTransaction,
    write(envelope, opts = {}) {
      // The envelope id doubles as the idempotency key, so a re-publish after a crash is absorbed.
      const env =
        envelope.idempotencykey === undefined ? { ...envelope, idempotencykey: envelope.id } : envelope;
      insert.run(JSON.stringify(env), opts.key ?? null, opts.delay ?? null);
    },
    flush(broker) {
      // One flush at a time, so a row is never published twice by this process.
      flushing ??= flushOnce(broker).finally(() => {
        flushing = undefined;
      });
      return flushing;
    },
    startRelay(broker, relay = {}) {
      const clock = relay.clock ?? systemClock;
      const interval = relay.interval ?? 50;
      let timer: TimerHandle | undefined;
      let stopped = false;
      const tick = () => {
        outbox
          .flush(broker)
          .catch(() => undefined) // the broker is unreachable: the rows wait for the next tick
          .finally(() => {
            if (!stopped) timer = clock.setTimeout(tick, interval);
          });
      };
      tick();
      return {
        async stop() {
          stopped = true;
          timer?.cancel();
          await outbox.flush(broker).catch(() => undefined);
        },
      };
    },
    waiting: () => (count.get() as { n: number }).n,
  };
  return outbox;
}
