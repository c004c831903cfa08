/**
 * @module broker/embedded/store
 * The embedded broker's SQLite tables and statements. The log (`messages`) is written once per
 * message; each consumer group keeps a cursor into it per topic and a pending list (leased,
 * waiting to retry, or waiting behind an earlier message with the same key), like a stream's
 * pending-entries list. Every method is one transaction; several processes may share the file.
 */
import Database from 'better-sqlite3';

type Db = Database.Database;

export type Durability = 'process' | 'power';

/** States of a pending row. */
const READY = 0;
const LEASED = 1;
const WAITING = 2;

export interface StoredMessage {
  id: string;
  topic: string;
  key: string | null;
  body: string;
  availableAt: number;
  idempotencyKey: string | undefined;
}

export interface Leased {
  seq: number;
  attempts: number;
  body: string | undefined;
}

export interface Failure {
  code: string;
  message: string;
  retryable: boolean;
}

export interface DeadRow {
  id: number;
  grp: string;
  topic: string;
  seq: number;
  body: string;
  code: string;
  message: string;
  retryable: number;
  attempts: number;
  first_failure_at: number;
  last_failure_at: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS messages (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL,
  topic TEXT NOT NULL,
  key TEXT,
  body TEXT NOT NULL,
  published_at INTEGER NOT NULL,
  available_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_topic ON messages (topic, seq);
CREATE TABLE IF NOT EXISTS groups (
  grp TEXT NOT NULL,
  topic TEXT NOT NULL,
  cursor INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (grp, topic)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
  grp TEXT NOT NULL,
  topic TEXT NOT NULL,
  seq INTEGER NOT NULL,
  key TEXT,
  state INTEGER NOT NULL,
  visible_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  lease_owner TEXT,
  lease_until INTEGER,
  first_failure_at INTEGER,
  last_failure_at INTEGER,
  last_code TEXT,
  last_message TEXT,
  PRIMARY KEY (grp, topic, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_key ON pending (grp, topic, key, seq) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  grp TEXT NOT NULL,
  topic TEXT NOT NULL,
  seq INTEGER NOT NULL,
  key TEXT,
  body TEXT NOT NULL,
  code TEXT NOT NULL,
  message TEXT NOT NULL,
  retryable INTEGER NOT NULL,
  attempts INTEGER NOT NULL,
  first_failure_at INTEGER NOT NULL,
  last_failure_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
  key TEXT PRIMARY KEY,
  message_id TEXT NOT NULL,
  at INTEGER NOT NULL
) WITHOUT ROWID;
`;

export class Store {
  readonly db: Db;
  private readonly s: ReturnType<typeof prepare>;

  constructor(path: string, durability: Durability) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    // NORMAL: a commit survives a crash of the process (it is in the WAL), not a power loss.
    // FULL: the WAL is fsynced at each commit; a commit survives a power loss too.
    this.db.pragma(`synchronous = ${durability === 'power' ? 'FULL' : 'NORMAL'}`);
    // No busy timeout: SQLite's own waits in steps of 1 ms and more, long against a commit of a
    // fraction of one. The broker's tick retries at once instead; other writes use `retrying`.
    this.db.pragma('busy_timeout = 0');
    this.db.exec(SCHEMA);
    this.s = prepare(this.db);
  }

  close(): void {
    this.db.close();
  }

  /** Runs `work` in one write transaction; the methods below nest inside it as savepoints. */
  batch(work: () => void): void {
    this.db.transaction(work).immediate();
  }

  /** Stores messages in one transaction. Returns per message: its id, or the earlier id when deduplicated. */
  publish(
    batch: readonly StoredMessage[],
    now: number,
    idempotencyWindow: number,
  ): { id: string; duplicate: boolean }[] {
    return this.db
      .transaction(() =>
        batch.map((m) => {
          if (m.idempotencyKey !== undefined) {
            const seen = this.s.idemGet.get(m.idempotencyKey, now - idempotencyWindow) as
              | { message_id: string }
              | undefined;
            if (seen !== undefined) return { id: seen.message_id, duplicate: true };
            this.s.idemPut.run(m.idempotencyKey, m.id, now);
          }
          this.s.insertMessage.run(m.id, m.topic, m.key, m.body, now, m.availableAt);
          return { id: m.id, duplicate: false };
        }),
      )
      .immediate();
  }

  ensureGroup(grp: string, topic: string, startFrom: 'beginning' | 'now', now: number): void {
    retrying(() => this.s.ensureGroup.run({ grp, topic, beginning: startFrom === 'beginning' ? 1 : 0, now }));
  }

  /**
   * Leases up to `room` deliveries to `owner`: first pending rows that are due (retries, expired
   * leases, delayed messages whose time came), then new log entries past the group's cursor, which
   * go straight into the pending list as leased (one write each). New entries that must wait (a
   * delay, or an earlier message with the same key still pending) go in as waiting. One transaction.
   */
  take(q: { grp: string; topic: string; owner: string; now: number; lease: number; room: number }): Leased[] {
    return this.db
      .transaction(() => {
        const { grp, topic, now, owner } = q;
        const until = now + q.lease;
        const out: Leased[] = [];
        if (q.room <= 0) return out;
        const due = this.s.lease.all({ owner, until, grp, topic, now, limit: q.room }) as {
          seq: number;
          attempts: number;
        }[];
        due.sort((a, b) => a.seq - b.seq);
        for (const l of due)
          out.push({
            seq: l.seq,
            attempts: l.attempts,
            body: (this.s.body.get(l.seq) as { body: string } | undefined)?.body,
          });
        const room = q.room - out.length;
        if (room <= 0) return out;
        const cursor = (this.s.cursor.get(grp, topic) as { cursor: number } | undefined)?.cursor ?? 0;
        const fresh = this.s.newMessages.all(topic, cursor, room) as {
          seq: number;
          key: string | null;
          available_at: number;
          body: string;
        }[];
        if (fresh.length === 0) return out;
        const busy = new Set<string>();
        for (const m of fresh) {
          const keyTaken =
            m.key !== null && (busy.has(m.key) || this.s.keyBusy.get(grp, topic, m.key) !== undefined);
          if (m.key !== null) busy.add(m.key);
          if (keyTaken) {
            this.s.insertPending.run(grp, topic, m.seq, m.key, WAITING, m.available_at);
          } else if (m.available_at > now) {
            this.s.insertPending.run(grp, topic, m.seq, m.key, READY, m.available_at);
          } else {
            this.s.insertLeased.run(grp, topic, m.seq, m.key, now, owner, until);
            out.push({ seq: m.seq, attempts: 1, body: m.body });
          }
        }
        this.s.setCursor.run((fresh.at(-1) as { seq: number }).seq, grp, topic);
        return out;
      })
      .immediate();
  }

  /** When the next pending row of the group becomes due (ready time or lease end), if any. */
  nextDue(grp: string, topic: string): number | undefined {
    const r = this.s.nextDue.get({ grp, topic }) as { at: number | null } | undefined;
    return r?.at ?? undefined;
  }

  /** Applies acks, retries and dead-letters of many deliveries in one transaction. */
  settle(ops: readonly SettleOp[], now: number): void {
    this.db
      .transaction(() => {
        for (const op of ops) {
          if (op.kind === 'ack') {
            const gone = this.s.deleteLeased.get(op.grp, op.topic, op.seq, op.owner) as
              | { key: string | null }
              | undefined;
            if (gone?.key != null) this.promote(op.grp, op.topic, gone.key);
          } else if (op.kind === 'retry') {
            this.s.retry.run(
              now + op.delay,
              now,
              now,
              op.failure.code,
              op.failure.message,
              op.grp,
              op.topic,
              op.seq,
              op.owner,
            );
          } else {
            this.deadLetter(op, now);
          }
        }
      })
      .immediate();
  }

  private deadLetter(op: SettleOp & { failure: Failure }, now: number): void {
    const row = this.s.pendingRow.get(op.grp, op.topic, op.seq, op.owner) as
      | { key: string | null; attempts: number; first_failure_at: number | null }
      | undefined;
    if (row === undefined) return; // the lease was lost: another consumer owns the message now
    const body = (this.s.body.get(op.seq) as { body: string } | undefined)?.body ?? '';
    this.s.insertDead.run(
      op.grp,
      op.topic,
      op.seq,
      row.key,
      body,
      op.failure.code,
      op.failure.message,
      op.failure.retryable ? 1 : 0,
      row.attempts,
      row.first_failure_at ?? now,
      now,
    );
    this.s.deletePending.run(op.grp, op.topic, op.seq);
    if (row.key !== null) this.promote(op.grp, op.topic, row.key);
  }

  /** The next message waiting behind `key` becomes ready. */
  private promote(grp: string, topic: string, key: string): void {
    this.s.promote.run({ grp, topic, key });
  }

  extendLease(grp: string, topic: string, seq: number, owner: string, until: number): boolean {
    return retrying(() => this.s.extend.run(until, grp, topic, seq, owner).changes > 0);
  }

  deadLetters(where: DeadWhere, limit: number): DeadRow[] {
    const { sql, params } = deadWhere(where);
    return this.db
      .prepare(`SELECT * FROM dead_letters ${sql} ORDER BY id LIMIT ?`)
      .all(...params, limit) as DeadRow[];
  }

  /** Dead letters back into their groups' pending lists, attempts reset. */
  replay(where: DeadWhere, now: number): number {
    const run = this.db.transaction(() => {
      const { sql, params } = deadWhere(where);
      const rows = this.db
        .prepare(`SELECT * FROM dead_letters ${sql} ORDER BY id`)
        .all(...params) as (DeadRow & {
        key: string | null;
      })[];
      for (const r of rows) {
        // Retention may have removed the log entry meanwhile: bring it back from the dead letter.
        if (this.s.body.get(r.seq) === undefined) {
          const env = JSON.parse(r.body) as { id: string };
          this.s.restoreMessage.run(r.seq, env.id, r.topic, r.key, r.body, now, now);
        }
        const waiting = r.key !== null && this.s.keyBusy.get(r.grp, r.topic, r.key) !== undefined;
        this.s.insertPendingOrIgnore.run(r.grp, r.topic, r.seq, r.key, waiting ? WAITING : READY, now);
        this.s.deleteDead.run(r.id);
      }
      return rows.length;
    });
    return retrying(() => run.immediate());
  }

  purge(where: DeadWhere): number {
    const { sql, params } = deadWhere(where);
    return retrying(() => this.db.prepare(`DELETE FROM dead_letters ${sql}`).run(...params).changes);
  }

  /**
   * Removes log entries older than `before` or beyond the newest `keep`, but only those every
   * group of their topic has passed and that nothing pending or dead-lettered still refers to.
   */
  compact(before: number, keep: number, idempotencyBefore: number): number {
    const run = this.db.transaction(() => {
      const max = (this.s.maxSeq.get() as { m: number | null }).m ?? 0;
      const removed = this.s.compact.run({ before, upTo: max - keep }).changes;
      this.s.idemExpire.run(idempotencyBefore);
      return removed;
    });
    return retrying(() => run.immediate());
  }

  counts(): { messages: number; pending: number; dead: number } {
    return this.s.counts.get() as { messages: number; pending: number; dead: number };
  }
}

/** True for SQLite's "another connection holds the write lock". */
export function isBusy(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_BUSY_SNAPSHOT' || code === 'SQLITE_LOCKED';
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/**
 * Runs a rare write, waiting in short steps (0.1 ms, doubling to 10 ms) while another process
 * holds the write lock; gives up after 10 s with the last error.
 */
function retrying<T>(write: () => T): T {
  const until = Date.now() + 10_000;
  for (let wait = 0.1; ; wait = Math.min(10, wait * 2)) {
    try {
      return write();
    } catch (error) {
      if (!isBusy(error) || Date.now() > until) throw error;
      Atomics.wait(sleeper, 0, 0, wait);
    }
  }
}

export type SettleOp =
  | { kind: 'ack'; grp: string; topic: string; seq: number; owner: string }
  | { kind: 'retry'; grp: string; topic: string; seq: number; owner: string; delay: number; failure: Failure }
  | { kind: 'dead'; grp: string; topic: string; seq: number; owner: string; failure: Failure };

export interface DeadWhere {
  topic?: string | undefined;
  group?: string | undefined;
  code?: string | undefined;
  ids?: number[] | undefined;
}

function deadWhere(w: DeadWhere): { sql: string; params: unknown[] } {
  const clauses: string[] = [];
  const params: unknown[] = [];
  if (w.topic !== undefined) {
    clauses.push('topic = ?');
    params.push(w.topic);
  }
  if (w.group !== undefined) {
    clauses.push('grp = ?');
    params.push(w.group);
  }
  if (w.code !== undefined) {
    clauses.push('code = ?');
    params.push(w.code);
  }
  if (w.ids !== undefined) {
    clauses.push(`id IN (${w.ids.map(() => '?').join(',') || 'NULL'})`);
    params.push(...w.ids);
  }
  return { sql: clauses.length === 0 ? '' : `WHERE ${clauses.join(' AND ')}`, params };
}

function prepare(db: Db) {
  return {
    insertMessage: db.prepare(
      'INSERT INTO messages (id, topic, key, body, published_at, available_at) VALUES (?, ?, ?, ?, ?, ?)',
    ),
    restoreMessage: db.prepare(
      'INSERT INTO messages (seq, id, topic, key, body, published_at, available_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
    ),
    idemGet: db.prepare('SELECT message_id FROM idempotency WHERE key = ? AND at > ?'),
    idemPut: db.prepare('INSERT OR REPLACE INTO idempotency (key, message_id, at) VALUES (?, ?, ?)'),
    idemExpire: db.prepare('DELETE FROM idempotency WHERE at < ?'),
    ensureGroup: db.prepare(
      `INSERT OR IGNORE INTO groups (grp, topic, cursor, created_at)
       VALUES (@grp, @topic, CASE WHEN @beginning = 1 THEN 0 ELSE (SELECT coalesce(max(seq), 0) FROM messages) END, @now)`,
    ),
    cursor: db.prepare('SELECT cursor FROM groups WHERE grp = ? AND topic = ?'),
    setCursor: db.prepare('UPDATE groups SET cursor = ? WHERE grp = ? AND topic = ?'),
    newMessages: db.prepare(
      'SELECT seq, key, available_at, body FROM messages WHERE topic = ? AND seq > ? ORDER BY seq LIMIT ?',
    ),
    keyBusy: db.prepare('SELECT 1 FROM pending WHERE grp = ? AND topic = ? AND key = ? LIMIT 1'),
    insertPending: db.prepare(
      'INSERT INTO pending (grp, topic, seq, key, state, visible_at, attempts) VALUES (?, ?, ?, ?, ?, ?, 0)',
    ),
    insertLeased: db.prepare(
      `INSERT INTO pending (grp, topic, seq, key, state, visible_at, attempts, lease_owner, lease_until)
       VALUES (?, ?, ?, ?, ${LEASED}, ?, 1, ?, ?)`,
    ),
    insertPendingOrIgnore: db.prepare(
      'INSERT OR IGNORE INTO pending (grp, topic, seq, key, state, visible_at, attempts) VALUES (?, ?, ?, ?, ?, ?, 0)',
    ),
    lease: db.prepare(
      `UPDATE pending SET state = ${LEASED}, lease_owner = @owner, lease_until = @until, attempts = attempts + 1
       WHERE (grp, topic, seq) IN (
         SELECT grp, topic, seq FROM pending
         WHERE grp = @grp AND topic = @topic
           AND ((state = ${READY} AND visible_at <= @now) OR (state = ${LEASED} AND lease_until <= @now))
         ORDER BY seq LIMIT @limit)
       RETURNING seq, attempts`,
    ),
    body: db.prepare('SELECT body FROM messages WHERE seq = ?'),
    // Pending lists stay short (only what consumers have room for is taken from the log), so a
    // scan of the group's rows by primary key is cheaper than keeping more indexes up to date.
    nextDue: db.prepare(
      `SELECT min(CASE state WHEN ${READY} THEN visible_at ELSE lease_until END) AS at
       FROM pending WHERE grp = @grp AND topic = @topic AND state IN (${READY}, ${LEASED})`,
    ),
    deleteLeased: db.prepare(
      `DELETE FROM pending WHERE grp = ? AND topic = ? AND seq = ? AND lease_owner = ? AND state = ${LEASED} RETURNING key`,
    ),
    deletePending: db.prepare('DELETE FROM pending WHERE grp = ? AND topic = ? AND seq = ?'),
    pendingRow: db.prepare(
      `SELECT key, attempts, first_failure_at FROM pending
       WHERE grp = ? AND topic = ? AND seq = ? AND lease_owner = ? AND state = ${LEASED}`,
    ),
    retry: db.prepare(
      `UPDATE pending SET state = ${READY}, visible_at = ?, lease_owner = NULL, lease_until = NULL,
         first_failure_at = coalesce(first_failure_at, ?), last_failure_at = ?, last_code = ?, last_message = ?
       WHERE grp = ? AND topic = ? AND seq = ? AND lease_owner = ? AND state = ${LEASED}`,
    ),
    promote: db.prepare(
      `UPDATE pending SET state = ${READY}
       WHERE grp = @grp AND topic = @topic AND seq = (
         SELECT min(seq) FROM pending WHERE grp = @grp AND topic = @topic AND key = @key AND state = ${WAITING})`,
    ),
    extend: db.prepare(
      `UPDATE pending SET lease_until = ? WHERE grp = ? AND topic = ? AND seq = ? AND lease_owner = ? AND state = ${LEASED}`,
    ),
    insertDead: db.prepare(
      `INSERT INTO dead_letters (grp, topic, seq, key, body, code, message, retryable, attempts, first_failure_at, last_failure_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    deleteDead: db.prepare('DELETE FROM dead_letters WHERE id = ?'),
    maxSeq: db.prepare('SELECT max(seq) AS m FROM messages'),
    // A log entry may go once every group of its topic has passed it (cursor) and holds nothing
    // pending below it. Dead letters keep their own copy of the body.
    compact: db.prepare(
      `WITH low AS (
         SELECT g.topic, min(min(g.cursor, coalesce(
           (SELECT min(p.seq) - 1 FROM pending p WHERE p.grp = g.grp AND p.topic = g.topic), g.cursor))) AS water
         FROM groups g GROUP BY g.topic)
       DELETE FROM messages WHERE seq IN (
         SELECT m.seq FROM messages m LEFT JOIN low ON low.topic = m.topic
         WHERE (m.published_at < @before OR m.seq <= @upTo) AND m.seq <= coalesce(low.water, m.seq)
         LIMIT 100000)`,
    ),
    counts: db.prepare(
      `SELECT (SELECT count(*) FROM messages) AS messages, (SELECT count(*) FROM pending) AS pending,
              (SELECT count(*) FROM dead_letters) AS dead`,
    ),
  };
}
