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
 *
 * A row the broker can never take (it holds no envelope: another program wrote it, or it was
 * written before `write` checked; or the broker refused it as invalid) would
 * stop the relay at it forever, every row behind it waiting. It is moved to `<table>_rejected`
 * with the error's code and message and logged, and the relay goes on; `rejected()` lists them.
 * A broker that is unreachable (a retryable error) is waited for: the rows stay, in order.
 */
import type Database from 'better-sqlite3';
import { encodeJsonText } from '../codec/json.ts';
import type { Envelope } from '../envelope/envelope.ts';
import { ParleyError } from '../errors.ts';
import type { Clock, TimerHandle } from '../runtime/clock.ts';
import { systemClock } from '../runtime/clock.ts';
import type { Broker, BrokerPublishOptions } from './broker.ts';
import { checkPublish } from './check.ts';

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
  /**
   * Publishes what is waiting, oldest first; returns how many were published. Nothing while `db`
   * is inside a transaction: what it wrote may yet roll back.
   */
  flush(broker: Broker): Promise<number>;
  /**
   * Publishes waiting rows every `interval` ms until stopped. `log` hears of rejected rows and of
   * a broker that stopped or started taking publishes again (default: standard error).
   */
  startRelay(
    broker: Broker,
    options?: { interval?: number; clock?: Clock; log?: (message: string) => void },
  ): { stop(): Promise<void> };
  /** Rows waiting to be published. */
  waiting(): number;
  /** Rows the broker can never take, moved aside with the reason; oldest first. */
  rejected(limit?: number): RejectedRow[];
}

/** An outbox row that was moved aside instead of published. */
export interface RejectedRow {
  id: number;
  /** The row's text as it was stored (an envelope's JSON, or whatever else was written). */
  envelope: string;
  key: string | undefined;
  delay: number | undefined;
  code: string;
  message: string;
  /** Epoch ms. */
  rejectedAt: number;
}

/**
 * Why a row can never be published, or undefined when it may be. Only a refusal of the row itself
 * (INVALID_ARGUMENT) sets it aside; any other error (the broker down, or refusing everyone, as a
 * wrong credential would) is the broker's state, and every row waits for it to change.
 */
function rejection(error: unknown): ParleyError | undefined {
  const e = ParleyError.from(error);
  return e.code === 'INVALID_ARGUMENT' && !e.unexpected ? e : undefined;
}

/** A stored row as a publish: parsed and checked as `broker.publish` would (throws if it is none). */
function publishOf(row: { envelope: string; msg_key: string | null; delay: number | null }): {
  envelope: Envelope;
  options: BrokerPublishOptions;
} {
  let envelope: unknown;
  try {
    envelope = JSON.parse(row.envelope);
  } catch {
    throw new ParleyError('INVALID_ARGUMENT', 'the outbox row is not JSON');
  }
  const options: BrokerPublishOptions = {};
  if (row.msg_key !== null) options.key = row.msg_key;
  if (row.delay !== null) options.delay = row.delay;
  checkPublish(envelope, options);
  return { envelope: envelope as Envelope, options };
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
  db.exec(`CREATE TABLE IF NOT EXISTS ${table}_rejected (
    id INTEGER PRIMARY KEY, envelope TEXT NOT NULL, msg_key TEXT, delay INTEGER,
    code TEXT NOT NULL, message TEXT NOT NULL, rejected_at INTEGER NOT NULL)`);
  const reject = db.prepare(
    `INSERT OR REPLACE INTO ${table}_rejected (id, envelope, msg_key, delay, code, message, rejected_at)
     VALUES (?, ?, ?, ?, ?, ?, ?)`,
  );
  const listRejected = db.prepare(`SELECT * FROM ${table}_rejected ORDER BY id LIMIT ?`);
  /** Moves a row aside, in one transaction: it is in exactly one of the two tables. */
  const setAside = db.transaction((row: Row, e: ParleyError, at: number) => {
    reject.run(row.id, row.envelope, row.msg_key, row.delay, e.code, e.message, at);
    remove.run(row.id);
  });
  let flushing: Promise<number> | undefined;
  let onRejected: (row: Row, e: ParleyError) => void = () => undefined;
  let now: () => number = () => Date.now();

  const flushOnce = async (broker: Broker): Promise<number> => {
    let published = 0;
    for (;;) {
      // While `db` is inside a transaction (one begun by hand, open across an await), its rows may
      // yet roll back: they wait for the next flush. Until 2026-12-03 the relay read and published
      // them, and an event of a transaction that then rolled back was delivered all the same.
      if (db.inTransaction) return published;
      const rows = batch.all() as Row[];
      if (rows.length === 0) return published;
      for (const row of rows) {
        if (db.inTransaction) return published;
        try {
          const { envelope, options } = publishOf(row);
          await broker.publish(envelope, options);
        } catch (error) {
          const e = rejection(error);
          if (e === undefined) throw error; // transient: the row waits, and so do the rows behind it
          setAside(row, e, now());
          onRejected(row, e);
          continue;
        }
        remove.run(row.id);
        published++;
      }
    }
  };

  const outbox: Outbox = {
    db,
    inTransaction: () => db.inTransaction,
    write(envelope, opts = {}) {
      // Checked as a publish is, so a bad one throws inside the caller's transaction (which then
      // rolls back) instead of waiting in the table for a relay that must set it aside.
      checkPublish(envelope, opts);
      // The envelope id doubles as the idempotency key, so a re-publish after a crash is absorbed.
      const env =
        envelope.idempotencykey === undefined ? { ...envelope, idempotencykey: envelope.id } : envelope;
      // Data with no JSON form throws INVALID_ARGUMENT, as a publish of it is refused.
      insert.run(encodeJsonText(env), opts.key ?? null, opts.delay ?? null);
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
      const log = relay.log ?? ((m: string) => process.stderr.write(`parley outbox ${table}: ${m}\n`));
      now = () => clock.now();
      onRejected = (row, e) =>
        log(
          `row ${row.id} set aside in ${table}_rejected, the broker can never take it: ${e.code}: ${e.message}`,
        );
      let timer: TimerHandle | undefined;
      let stopped = false;
      /** The last transient failure logged: logged when it starts, and when publishing resumes. */
      let failing: string | undefined;
      const tick = () => {
        outbox
          .flush(broker)
          .then(
            () => {
              if (failing !== undefined) log('publishing again');
              failing = undefined;
            },
            (error: unknown) => {
              // The broker is unreachable: the rows wait for the next tick.
              const message = ParleyError.from(error).message;
              if (failing !== message) log(`rows wait: ${message}`);
              failing = message;
            },
          )
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
    rejected: (limit = 100) =>
      (listRejected.all(limit) as (Row & { code: string; message: string; rejected_at: number })[]).map(
        (r) => ({
          id: r.id,
          envelope: r.envelope,
          key: r.msg_key ?? undefined,
          delay: r.delay ?? undefined,
          code: r.code,
          message: r.message,
          rejectedAt: r.rejected_at,
        }),
      ),
  };
  return outbox;
}

interface Row {
  id: number;
  envelope: string;
  msg_key: string | null;
  delay: number | null;
}
