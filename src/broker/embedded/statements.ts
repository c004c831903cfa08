/**
 * @module broker/embedded/statements
 * The embedded broker's schema and prepared statements. Pending rows have three states: ready
 * (due at `visible_at`), leased (to `lease_owner` until `lease_until`), waiting (a replayed dead
 * letter behind an earlier message with the same key). Log entries a group's cursor passed while an
 * earlier message of their key was pending wait in the log itself: `waiting_keys` holds, per group
 * and key, the first of them, and the index on (topic, key, seq) finds the ones after it.
 * `pending_ready` indexes ready rows by their time, so a poll reads the ready rows that are due and
 * the next ready time, not the rows that are not due yet. Leased rows are not in it: a delivery's
 * row is leased from its insert to its delete, and indexing it cost the hot path 10–20% of its
 * CPU; leases that ended are looked for by the store at most once a second (`Store.take`).
 */
import type Database from 'better-sqlite3';

type Db = Database.Database;

export const READY = 0;
export const LEASED = 1;
export const WAITING = 2;

/** The rows `pending_ready` holds; a statement that reads it must say so in these words. */
const READY_ROWS = `state = ${READY}`;

export const SCHEMA = `
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
CREATE INDEX IF NOT EXISTS messages_key ON messages (topic, key, seq) WHERE key IS NOT NULL;
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
-- Ready rows by time (then seq, the key's last column). Until 2026-12-03 a poll found the due rows
-- and the next due time by reading all of the group's rows (a file written before gets the index
-- when it is opened). pending_due, which held leased rows too, was made by a build of that day.
DROP INDEX IF EXISTS pending_due;
CREATE INDEX IF NOT EXISTS pending_ready ON pending (grp, topic, visible_at) WHERE ${READY_ROWS};
-- Per group and key: the first log entry (next_seq) that waits behind a pending message of the key.
-- It and the key's later entries up to the group's cursor wait; none of them is in the pending list.
CREATE TABLE IF NOT EXISTS waiting_keys (
  grp TEXT NOT NULL,
  topic TEXT NOT NULL,
  key TEXT NOT NULL,
  next_seq INTEGER NOT NULL,
  PRIMARY KEY (grp, topic, key)
) WITHOUT ROWID;
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
-- Per topic, the highest sequence retention has removed: a history reader behind it lost messages.
CREATE TABLE IF NOT EXISTS trimmed (
  topic TEXT PRIMARY KEY,
  upto INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
  key TEXT PRIMARY KEY,
  message_id TEXT NOT NULL,
  at INTEGER NOT NULL
) WITHOUT ROWID;
`;

/** Every prepared statement, by name. */
export type Statements = Record<
  | 'insertMessage'
  | 'restoreMessage'
  | 'trim'
  | 'trimmedUpTo'
  | 'topicLatest'
  | 'historyAfter'
  | 'idemGet'
  | 'idemPut'
  | 'idemExpire'
  | 'ensureGroup'
  | 'cursor'
  | 'setCursor'
  | 'newMessages'
  | 'newHeads'
  | 'keyBusy'
  | 'insertPending'
  | 'insertLeased'
  | 'insertPendingOrIgnore'
  | 'lease'
  | 'leaseEnded'
  | 'nextLeaseEnd'
  | 'body'
  | 'nextDue'
  | 'deleteLeased'
  | 'deletePending'
  | 'pendingRow'
  | 'retry'
  | 'defer'
  | 'firstWaiting'
  | 'promote'
  | 'keyWait'
  | 'addKeyWait'
  | 'moveKeyWait'
  | 'dropKeyWait'
  | 'keyEntries'
  | 'extend'
  | 'insertDead'
  | 'deleteDead'
  | 'maxSeq'
  | 'compact'
  | 'counts',
  Database.Statement
>;

export function prepare(db: Db): Statements {
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
    // The same without bodies: a poll reading on past entries that wait (`Store.take`).
    newHeads: db.prepare(
      'SELECT seq, key, available_at FROM messages WHERE topic = ? AND seq > ? ORDER BY seq LIMIT ?',
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
    // Ready rows that are due, the earliest first (then by seq): read from pending_ready in order,
    // so a poll visits the rows it leases and not the ones that are not due (until 2026-12-03: by
    // seq, which read every pending row of the group to find the due ones).
    lease: db.prepare(
      `UPDATE pending SET state = ${LEASED}, lease_owner = @owner, lease_until = @until, attempts = attempts + 1
       WHERE (grp, topic, seq) IN (
         SELECT grp, topic, seq FROM pending INDEXED BY pending_ready
         WHERE grp = @grp AND topic = @topic AND ${READY_ROWS} AND visible_at <= @now
         ORDER BY visible_at, seq LIMIT @limit)
       RETURNING seq, attempts`,
    ),
    // Leased rows whose lease ended (a consumer that died, a handler past its lease): these read
    // the group's rows, so the store runs them at most once a second (`Store.take`).
    leaseEnded: db.prepare(
      `UPDATE pending SET lease_owner = @owner, lease_until = @until, attempts = attempts + 1
       WHERE (grp, topic, seq) IN (
         SELECT grp, topic, seq FROM pending
         WHERE grp = @grp AND topic = @topic AND state = ${LEASED} AND lease_until <= @now
         ORDER BY seq LIMIT @limit)
       RETURNING seq, attempts`,
    ),
    nextLeaseEnd: db.prepare(
      `SELECT min(lease_until) AS at FROM pending WHERE grp = @grp AND topic = @topic AND state = ${LEASED}`,
    ),
    body: db.prepare('SELECT body FROM messages WHERE seq = ?'),
    // The first entry of pending_ready for the group: one index step.
    nextDue: db.prepare(
      `SELECT min(visible_at) AS at FROM pending INDEXED BY pending_ready
       WHERE grp = @grp AND topic = @topic AND ${READY_ROWS}`,
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
    // Back to ready without spending the attempt it was leased with (a paused consumer).
    defer: db.prepare(
      `UPDATE pending SET state = ${READY}, visible_at = ?, lease_owner = NULL, lease_until = NULL,
         attempts = max(0, attempts - 1)
       WHERE grp = ? AND topic = ? AND seq = ? AND lease_owner = ? AND state = ${LEASED}`,
    ),
    // By key: the group's other pending rows are not read (the planner would walk them all by seq).
    firstWaiting: db
      .prepare(
        `SELECT min(seq) FROM pending INDEXED BY pending_key
         WHERE grp = ? AND topic = ? AND key = ? AND state = ${WAITING}`,
      )
      .pluck(),
    promote: db.prepare(`UPDATE pending SET state = ${READY} WHERE grp = ? AND topic = ? AND seq = ?`),
    keyWait: db.prepare('SELECT next_seq FROM waiting_keys WHERE grp = ? AND topic = ? AND key = ?').pluck(),
    addKeyWait: db.prepare(
      'INSERT OR IGNORE INTO waiting_keys (grp, topic, key, next_seq) VALUES (?, ?, ?, ?)',
    ),
    moveKeyWait: db.prepare('UPDATE waiting_keys SET next_seq = ? WHERE grp = ? AND topic = ? AND key = ?'),
    dropKeyWait: db.prepare('DELETE FROM waiting_keys WHERE grp = ? AND topic = ? AND key = ?'),
    // The first two entries of a key from `seq` up to a cursor (messages_key: two index steps).
    keyEntries: db.prepare(
      'SELECT seq, available_at FROM messages WHERE topic = ? AND key = ? AND seq >= ? AND seq <= ? ORDER BY seq LIMIT 2',
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
    // pending or waiting below it. Dead letters keep their own copy of the body.
    compact: db.prepare(
      `WITH low AS (
         SELECT g.topic, min(min(g.cursor,
           coalesce((SELECT min(p.seq) - 1 FROM pending p WHERE p.grp = g.grp AND p.topic = g.topic), g.cursor),
           coalesce((SELECT min(w.next_seq) - 1 FROM waiting_keys w WHERE w.grp = g.grp AND w.topic = g.topic),
             g.cursor))) AS water
         FROM groups g GROUP BY g.topic)
       DELETE FROM messages WHERE seq IN (
         SELECT m.seq FROM messages m LEFT JOIN low ON low.topic = m.topic
         WHERE (m.published_at < @before OR m.seq <= @upTo) AND m.seq <= coalesce(low.water, m.seq)
         LIMIT 100000)
       RETURNING topic, seq`,
    ),
    trim: db.prepare(
      `INSERT INTO trimmed (topic, upto) VALUES (?, ?)
       ON CONFLICT (topic) DO UPDATE SET upto = max(upto, excluded.upto)`,
    ),
    trimmedUpTo: db.prepare('SELECT upto FROM trimmed WHERE topic = ?').pluck(),
    topicLatest: db.prepare('SELECT max(seq) FROM messages WHERE topic = ?').pluck(),
    historyAfter: db.prepare(
      'SELECT seq, body FROM messages WHERE topic = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?',
    ),
    counts: db.prepare(
      `SELECT (SELECT count(*) FROM messages) AS messages, (SELECT count(*) FROM pending) AS pending,
              (SELECT count(*) FROM dead_letters) AS dead`,
    ),
  };
}
