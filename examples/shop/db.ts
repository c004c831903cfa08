/** Each shop service opens its own SQLite database in the data directory. */
import { join } from 'node:path';
import Database from 'better-sqlite3';

export function openDatabase(dataDir: string, name: string, schema: string): Database.Database {
  const db = new Database(join(dataDir, `${name}.db`));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  db.exec(schema);
  return db;
}
