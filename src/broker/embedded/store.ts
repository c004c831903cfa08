/**
 * @module broker/embedded/store
 * The embedded broker's SQLite tables and statements. The log (`messages`) is written once per
 * message; each consumer group keeps a cursor into it per topic and a pending list (leased, or
 * waiting to retry), like a stream's pending-entries list. Entries the cursor passed while an
 * earlier message of their key was pending wait in the log, not in the pending list: the group
 * keeps only the first of them per key (`waiting_keys`), so what a poll reads does not grow
 * with a hot key's backlog. Every method is one transaction; several processes may share the file.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import type Database from 'better-sqlite3';
import { assertEnvelope, type Envelope } from '../../envelope/envelope.ts';
import { ParleyError } from '../../errors.ts';
import { prepare, READY, SCHEMA, type Statements, WAITING } from './statements.ts';

type Db = Database.Database;

// Loaded when the first store opens: a node that never uses the embedded broker does not pay for
// the native module at start.
const load = createRequire(import.meta.url);

/** How long a lease another process gave may have ended before a poll here finds it, at most. */
const LEASE_CHECK_MS = 1_000;
/** Log entries one poll reads past the cursor at most (see `take`), and its later batches. */
const SCAN_ROWS = 1_024;
const SCAN_BATCH = 256;
let sqlite: typeof Database | undefined;

export type Durability = 'process' | 'power';

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

export class Store {
  readonly db: Db;
  private readonly s: Statements;
  /** Per group (`grp NUL topic`): when `take` next looks for leases that ended. */
  private readonly leaseCheck = new Map<string, number>();

  constructor(path: string, durability: Durability) {
    this.db = open(path);
    try {
      this.db.pragma('journal_mode = WAL');
      // NORMAL: a commit survives a crash of the process (it is in the WAL), not a power loss.
      // FULL: the WAL is fsynced at each commit; a commit survives a power loss too.
      this.db.pragma(`synchronous = ${durability === 'power' ? 'FULL' : 'NORMAL'}`);
      // No busy timeout: SQLite's own waits in steps of 1 ms and more, long against a commit of a
      // fraction of one. The broker's tick retries at once instead; other writes use `retrying`.
      this.db.pragma('busy_timeout = 0');
      // Writes only what a file lacks (a file of an older version: a new index), perhaps while
      // another process commits.
      retrying(() => this.db.exec(SCHEMA));
      this.s = prepare(this.db);
    } catch (error) {
      this.db.close();
      throw cannotOpen(path, error);
    }
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
   * leases, delayed messages whose time came), the earliest due first: ready rows through
   * `pending_ready`, without reading the rows that are not due, and leases that ended at most once a
   * second (`leaseCheck`); then new log entries past the group's cursor, which
   * go straight into the pending list as leased (one write each). A new entry with a delay goes in
   * as ready at its time. One whose key has an earlier message still pending stays in the log: only
   * the first such entry of the key is recorded (`promote` finds the later ones by key), so what a
   * poll reads and writes does not grow with the key's backlog; past a batch of entries that wait,
   * the poll reads on (up to `SCAN_ROWS`). One transaction.
   */
  take(q: { grp: string; topic: string; owner: string; now: number; lease: number; room: number }): Leased[] {
    const { grp, topic, now, owner } = q;
    const until = now + q.lease;
    const group = `${grp}\u0000${topic}`;
    const check = this.leaseCheck.get(group);
    let checked: number | undefined;
    const taken = this.db
      .transaction(() => {
        const out: Leased[] = [];
        if (q.room <= 0) return out;
        const params = { owner, until, grp, topic, now, limit: q.room };
        const due = this.s.lease.all(params) as { seq: number; attempts: number }[];
        if (due.length < q.room && (check === undefined || now >= check)) {
          // Leases that ended: read from the group's rows, so at most once a second, and when one
          // this store gave ends (`leaseCheck`). Another process's lease is found within a second
          // of its end; until 2026-12-03 every poll read every pending row of the group for them.
          for (const r of this.s.leaseEnded.all({ ...params, limit: q.room - due.length }))
            due.push(r as { seq: number; attempts: number });
          const end = (this.s.nextLeaseEnd.get({ grp, topic }) as { at: number | null } | undefined)?.at;
          checked = Math.min(end ?? Number.POSITIVE_INFINITY, now + LEASE_CHECK_MS);
        }
        due.sort((a, b) => a.seq - b.seq);
        for (const l of due)
          out.push({
            seq: l.seq,
            attempts: l.attempts,
            body: (this.s.body.get(l.seq) as { body: string } | undefined)?.body,
          });
        let room = q.room - out.length;
        if (room <= 0) return out;
        const from = (this.s.cursor.get(grp, topic) as { cursor: number } | undefined)?.cursor ?? 0;
        let cursor = from;
        const busy = new Set<string>();
        const waits = new Set<string>();
        // A first batch of `room` entries, as many as can be leased. Entries that wait (behind their
        // key, or for their time) take no room: past a batch of them the poll reads on, up to
        // SCAN_ROWS entries, without their bodies (the body of one it leases is read alone),
        // stopping where the room runs out. Until 2026-12-03 it read one batch a poll interval:
        // other keys behind 100,000 entries of a hot key waited some 1,600 polls.
        for (let read = 0, limit = room; room > 0 && read < SCAN_ROWS; limit = Math.max(room, SCAN_BATCH)) {
          const fresh = (read === 0 ? this.s.newMessages : this.s.newHeads).all(
            topic,
            cursor,
            Math.min(limit, SCAN_ROWS - read),
          ) as { seq: number; key: string | null; available_at: number; body?: string }[];
          for (const m of fresh) {
            if (room === 0) break;
            cursor = m.seq;
            const keyTaken =
              m.key !== null && (busy.has(m.key) || this.s.keyBusy.get(grp, topic, m.key) !== undefined);
            if (m.key !== null) busy.add(m.key);
            if (keyTaken && m.key !== null) {
              // Waits in the log. The key's first waiting entry is kept (a later one leaves the
              // earlier record as it is); the entries after it are found by key when it is its turn.
              if (!waits.has(m.key)) this.s.addKeyWait.run(grp, topic, m.key, m.seq);
              waits.add(m.key);
            } else if (m.available_at > now) {
              this.s.insertPending.run(grp, topic, m.seq, m.key, READY, m.available_at);
            } else {
              this.s.insertLeased.run(grp, topic, m.seq, m.key, now, owner, until);
              const body = m.body ?? (this.s.body.get(m.seq) as { body: string } | undefined)?.body;
              out.push({ seq: m.seq, attempts: 1, body });
              room--;
            }
          }
          read += fresh.length;
          if (fresh.length < limit) break; // the end of the log
        }
        if (cursor !== from) this.s.setCursor.run(cursor, grp, topic);
        return out;
      })
      .immediate();
    // After the commit: what was leased here ends at `until`, and is looked for then.
    const next = checked ?? check;
    if (next !== undefined) this.leaseCheck.set(group, taken.length > 0 ? Math.min(next, until) : next);
    return taken;
  }

  /**
   * When the next pending row of the group becomes due: the next ready time, or the next look for
   * leases that ended (`take`), whichever comes first; undefined when neither is known.
   */
  nextDue(grp: string, topic: string): number | undefined {
    const ready = (this.s.nextDue.get({ grp, topic }) as { at: number | null } | undefined)?.at ?? undefined;
    const check = this.leaseCheck.get(`${grp}\u0000${topic}`);
    if (ready === undefined) return check;
    return check === undefined ? ready : Math.min(ready, check);
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
          } else if (op.kind === 'defer') {
            this.s.defer.run(now + op.delay, op.grp, op.topic, op.seq, op.owner);
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

  /**
   * The next message waiting behind `key` becomes ready: the lower of the key's first entry waiting
   * in the log and a replayed dead letter waiting in the pending list.
   */
  private promote(grp: string, topic: string, key: string): void {
    const parked = this.s.firstWaiting.get(grp, topic, key) as number | null;
    const next = this.s.keyWait.get(grp, topic, key) as number | undefined;
    if (next !== undefined && (parked === null || next < parked)) {
      const cursor = (this.s.cursor.get(grp, topic) as { cursor: number } | undefined)?.cursor ?? 0;
      const [head, after] = this.s.keyEntries.all(topic, key, next, cursor) as {
        seq: number;
        available_at: number;
      }[];
      if (after === undefined) this.s.dropKeyWait.run(grp, topic, key);
      else this.s.moveKeyWait.run(after.seq, grp, topic, key);
      if (head !== undefined) {
        this.s.insertPendingOrIgnore.run(grp, topic, head.seq, key, READY, head.available_at);
        return;
      }
    }
    if (parked !== null) this.s.promote.run(grp, topic, parked);
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
      let replayed = 0;
      for (const r of rows) {
        // A letter whose body is no envelope (another program's write) stays listed: replayed, it
        // would only be dead-lettered again (every broker's replay passes over these).
        const id = storedEnvelope(r.body)?.id;
        if (id === undefined) continue;
        replayed++;
        // Retention may have removed the log entry meanwhile: bring it back from the dead letter.
        if (this.s.body.get(r.seq) === undefined) {
          this.s.restoreMessage.run(r.seq, id, r.topic, r.key, r.body, now, now);
        }
        const waiting = r.key !== null && this.s.keyBusy.get(r.grp, r.topic, r.key) !== undefined;
        this.s.insertPendingOrIgnore.run(r.grp, r.topic, r.seq, r.key, waiting ? WAITING : READY, now);
        this.s.deleteDead.run(r.id);
      }
      return replayed;
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
      const removed = this.s.compact.all({ before, upTo: max - keep }) as { topic: string; seq: number }[];
      const upTo = new Map<string, number>();
      for (const r of removed) upTo.set(r.topic, Math.max(r.seq, upTo.get(r.topic) ?? 0));
      for (const [topic, seq] of upTo) this.s.trim.run(topic, seq);
      this.s.idemExpire.run(idempotencyBefore);
      return removed.length;
    });
    return retrying(() => run.immediate());
  }

  /** The newest sequence of `topic`, counting removed ones; 0 before its first message. */
  latest(topic: string): number {
    const kept = (this.s.topicLatest.get(topic) as number | null) ?? 0;
    return Math.max(kept, (this.s.trimmedUpTo.get(topic) as number | undefined) ?? 0);
  }

  /**
   * Up to `limit` messages of `topic` after `after` and up to `until`; `gap` when retention removed
   * some after `after`.
   */
  historyAfter(
    topic: string,
    after: number,
    until: number,
    limit: number,
  ): { rows: { seq: number; body: string }[]; gap: boolean } {
    return this.db
      .transaction(() => ({
        rows: this.s.historyAfter.all(topic, after, until, limit) as { seq: number; body: string }[],
        gap: ((this.s.trimmedUpTo.get(topic) as number | undefined) ?? 0) > after,
      }))
      .deferred();
  }

  counts(): { messages: number; pending: number; dead: number } {
    return this.s.counts.get() as { messages: number; pending: number; dead: number };
  }
}

/**
 * The SQLite file at `path`, or a ParleyError: INVALID_ARGUMENT for a path that cannot name one
 * (its directory does not exist), UNAVAILABLE when SQLite cannot open it. Until 2026-12-03 a path
 * in a missing directory failed with better-sqlite3's TypeError (an unexpected INTERNAL error).
 */
function open(path: string): Db {
  if (typeof path !== 'string')
    throw new ParleyError('INVALID_ARGUMENT', "the embedded broker's path must be a string");
  // Not `:memory:`, a temporary file ('') or a `file:` URI: a file in a directory, which SQLite does not make.
  if (path !== ':memory:' && path !== '' && !path.startsWith('file:') && !existsSync(dirname(path)))
    throw new ParleyError(
      'INVALID_ARGUMENT',
      `cannot open the embedded broker's file ${path}: directory ${dirname(path)} does not exist`,
    );
  sqlite ??= load('better-sqlite3') as typeof Database;
  try {
    return new sqlite(path);
  } catch (error) {
    throw cannotOpen(path, error);
  }
}

function cannotOpen(path: string, error: unknown): ParleyError {
  if (error instanceof ParleyError) return error;
  const why = error instanceof Error ? error.message : String(error);
  return new ParleyError('UNAVAILABLE', `cannot open the embedded broker's file ${path}: ${why}`, {
    cause: error,
  });
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
  | { kind: 'defer'; grp: string; topic: string; seq: number; owner: string; delay: number }
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

/**
 * The envelope a stored body holds, or undefined when it holds none (a row another program or
 * version wrote): history reads, dead-letter listings and replays all pass such rows over.
 */
export function storedEnvelope(body: string): Envelope | undefined {
  try {
    return assertEnvelope(JSON.parse(body));
  } catch {
    return undefined;
  }
}
