/**
 * The shop end to end on the embedded broker served by the hub (see test/shop-scenario.ts).
 */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { shopScenario } from './shop-scenario.ts';

shopScenario({
  name: 'hub + embedded broker',
  pushLog: true,
  held: (dataDir) => {
    const db = new Database(join(dataDir, 'broker.db'), { readonly: true });
    try {
      return db
        .prepare("SELECT count(*) FROM pending WHERE grp = 'payments' AND state = 1")
        .pluck()
        .get() as number;
    } finally {
      db.close();
    }
  },
});
