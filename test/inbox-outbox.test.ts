/**
 * Effectively-once on at-least-once: the inbox gives one effect under redelivery; the outbox
 * publishes an event if and only if the service's transaction committed, even across a crash.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import Database from 'better-sqlite3';
import {
  createEmbeddedBroker,
  createEnvelope,
  createFakeClock,
  createInbox,
  createOutbox,
  defineContract,
  implement,
  type Middleware,
  metrics,
  ParleyError,
  subscribe,
  tracing,
  z,
} from '../src/index.ts';
import { tempDir, testNode } from './helpers.ts';

const dir = tempDir('outbox');

const shop = defineContract({
  name: 'shop',
  version: '1.0.0',
  actions: {
    place: {
      input: z.object({ id: z.string(), fail: z.boolean().optional() }),
      output: z.object({ ok: z.boolean() }),
    },
  },
  events: { 'order.placed': { schema: z.object({ id: z.string() }), version: 1 } },
});

function ordersDb(path: string) {
  const db = new Database(path);
  db.exec('CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY)');
  return db;
}

/** The shop service: stores the order and publishes order.placed in one transaction. */
function shopService(db: Database.Database) {
  const insert = db.prepare('INSERT INTO orders (id) VALUES (?)');
  return implement(shop, {
    actions: {
      place: ({ id, fail }, ctx) => {
        db.transaction(() => {
          insert.run(id);
          void ctx.publish(shop, 'order.placed', { id });
          if (fail) throw new ParleyError('ABORTED', 'rolled back after publishing');
        })();
        return { ok: true };
      },
    },
  });
}

/**
 * A `billing` node on an embedded broker (fake clock) whose one subscription to `order.placed`
 * runs `handler`; `stop` ends it.
 */
async function billingNode(handler: Parameters<typeof subscribe<typeof shop, 'order.placed'>>[2]) {
  const clock = createFakeClock();
  const broker = createEmbeddedBroker({ path: ':memory:', clock });
  const consumer = implement(defineContract({ name: 'billing', version: '1', actions: {} }), {
    actions: {},
    on: [subscribe(shop, 'order.placed', handler)],
  });
  const node = testNode({ clock, broker, services: [consumer] });
  await node.start();
  return {
    clock,
    broker,
    async stop() {
      const stopping = node.stop();
      await clock.tick(20_000);
      await stopping;
    },
  };
}

describe('inbox', () => {
  for (const withInbox of [true, false]) {
    it(`${withInbox ? 'one effect' : 'without it, two effects'} when a message is redelivered after its effect committed`, async () => {
      const db = new Database(':memory:');
      db.exec('CREATE TABLE effects (order_id TEXT)');
      const inbox = createInbox(db);
      const effect = db.prepare('INSERT INTO effects (order_id) VALUES (?)');
      let attempts = 0;
      const { clock, broker, stop } = await billingNode((order, ctx) => {
        attempts++;
        if (withInbox) inbox.once(ctx, () => effect.run(order.id));
        else effect.run(order.id);
        // The process "dies" after its transaction committed, before the ack.
        if (attempts === 1) throw new ParleyError('UNAVAILABLE', 'crashed before the ack');
      });
      await broker.publish(createEnvelope({ source: '/test', type: 'order.placed', data: { id: 'o1' } }));
      for (let i = 0; i < 200 && attempts < 2; i++) await clock.tick(10);
      await clock.tick(50);
      assert.equal(attempts, 2, 'redelivered once');
      const effects = (db.prepare('SELECT count(*) AS n FROM effects').get() as { n: number }).n;
      assert.equal(effects, withInbox ? 1 : 2);
      assert.equal(broker.stats().pending, 0, 'acked in the end');
      await stop();
    });
  }
});

describe('inbox keys', () => {
  it('the same id from two sources is two messages (CloudEvents: source + id is unique), each once', async () => {
    const db = new Database(':memory:');
    db.exec('CREATE TABLE effects (source TEXT, order_id TEXT)');
    const inbox = createInbox(db);
    const effect = db.prepare('INSERT INTO effects (source, order_id) VALUES (?, ?)');
    let seen = 0;
    const { clock, broker, stop } = await billingNode((order, ctx) => {
      seen++;
      inbox.once(ctx, () => effect.run(ctx.source, order.id));
    });
    // Two producers that number their events themselves, and a redelivery of the first one's.
    const placed = (source: string, order: string) =>
      createEnvelope({ id: '1', source, type: 'order.placed', data: { id: order } });
    await broker.publish(placed('/erp', 'a'));
    await broker.publish(placed('/crm', 'b'));
    await broker.publish(placed('/erp', 'a'));
    for (let i = 0; i < 200 && seen < 3; i++) await clock.tick(10);
    assert.equal(seen, 3);
    const rows = db.prepare('SELECT source, order_id FROM effects ORDER BY source').all();
    assert.deepEqual(rows, [
      { source: '/crm', order_id: 'b' },
      { source: '/erp', order_id: 'a' },
    ]);
    await stop();
  });

  it('keeps an inbox made before sources were kept: its ids stay handled until pruned', () => {
    const db = new Database(':memory:');
    // The table as earlier versions made it: keyed on consumer and id.
    db.exec(`CREATE TABLE parley_inbox (
      consumer TEXT NOT NULL, message_id TEXT NOT NULL, handled_at INTEGER NOT NULL,
      PRIMARY KEY (consumer, message_id)) WITHOUT ROWID`);
    db.prepare('INSERT INTO parley_inbox VALUES (?, ?, ?)').run('billing', 'old-1', 1_000);
    const inbox = createInbox(db);
    let runs = 0;
    const work = () => void runs++;
    const erp = (service: string, id: string) => ({ service, source: '/erp', id });
    assert.equal(inbox.once(erp('billing', 'old-1'), work), false, 'handled before');
    assert.equal(inbox.once(erp('shipping', 'old-1'), work), true, 'another consumer');
    assert.equal(inbox.once(erp('billing', 'new-1'), work), true);
    assert.equal(inbox.once(erp('billing', 'new-1'), work), false);
    assert.equal(runs, 2);
    // Opening it again finds the new table and the legacy records as they were.
    const again = createInbox(db);
    assert.equal(again.once({ service: 'billing', source: '/crm', id: 'old-1' }, work), false);
    // Pruning past the old record removes it and the legacy table with it.
    assert.equal(again.prune(1_000, 5_000), 1);
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all();
    assert.deepEqual(tables, [{ name: 'parley_inbox' }]);
    assert.equal(again.once(erp('billing', 'old-1'), work), true, 'forgotten');
    assert.equal(runs, 3);
  });

  it('an inbox open in another process goes on when the legacy table is dropped under it', () => {
    const file = dir.file('legacy-shared.db');
    const first = new Database(file);
    first.exec(`CREATE TABLE parley_inbox (
      consumer TEXT NOT NULL, message_id TEXT NOT NULL, handled_at INTEGER NOT NULL,
      PRIMARY KEY (consumer, message_id)) WITHOUT ROWID`);
    first.prepare('INSERT INTO parley_inbox VALUES (?, ?, ?)').run('billing', 'old-1', 1_000);
    // Two processes on one database, both opened while the legacy table was there.
    const second = new Database(file);
    const a = createInbox(first);
    const b = createInbox(second);
    let runs = 0;
    const work = () => void runs++;
    const msg = (id: string) => ({ service: 'billing', source: '/erp', id });
    assert.equal(b.once(msg('old-1'), work), false, 'handled before');
    assert.equal(a.prune(1_000, 5_000), 1, 'the one that prunes drops the legacy table');
    // The other one neither fails its messages nor its pruning for the table it had seen.
    assert.equal(b.once(msg('new-1'), work), true);
    assert.equal(b.once(msg('new-1'), work), false);
    assert.equal(b.once(msg('old-1'), work), true, 'forgotten, as on the side that pruned');
    assert.equal(b.prune(1_000, 5_000), 0);
    assert.equal(a.once(msg('new-1'), work), false, 'both see one table');
    assert.equal(runs, 2);
    first.close();
    second.close();
  });

  it('a local call has no source; its id is recorded under none', () => {
    const db = new Database(':memory:');
    const inbox = createInbox(db);
    let runs = 0;
    assert.equal(
      inbox.once({ service: 's', id: 'x' }, () => void runs++),
      true,
    );
    assert.equal(
      inbox.once({ service: 's', id: 'x' }, () => void runs++),
      false,
    );
    assert.equal(
      inbox.once({ service: 's', source: '/n', id: 'x' }, () => void runs++),
      true,
    );
    assert.equal(runs, 2);
  });
});

describe('outbox', () => {
  it('an invalid payload published inside a transaction throws there and rolls the transaction back', async () => {
    const db = ordersDb(':memory:');
    const outbox = createOutbox(db);
    const insert = db.prepare('INSERT INTO orders (id) VALUES (?)');
    const bad = implement(shop, {
      actions: {
        place: ({ id }, ctx) => {
          db.transaction(() => {
            insert.run(id);
            // Not awaited, as inside a synchronous transaction it cannot be: the error still lands here.
            void ctx.publish(shop, 'order.placed', { id: 42 } as unknown as { id: string });
          })();
          return { ok: true };
        },
      },
    });
    const node = testNode({ services: [bad], outbox });
    await node.start();
    await assert.rejects(node.client(shop).place({ id: 'o1' }), (e: unknown) => e instanceof ParleyError);
    assert.equal((db.prepare('SELECT count(*) AS n FROM orders').get() as { n: number }).n, 0, 'rolled back');
    assert.equal(outbox.waiting(), 0);
    await node.stop();
  });

  it('a publish the outbox refuses still throws inside the transaction through tracing and metrics middleware', async () => {
    const db = ordersDb(':memory:');
    const outbox = createOutbox(db);
    const observed = metrics({ defaultMetrics: false });
    const spans = new InMemorySpanExporter();
    const tracer = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] }).getTracer(
      't',
    );
    const insert = db.prepare('INSERT INTO orders (id) VALUES (?)');
    let thrown: unknown;
    const bad = implement(shop, {
      actions: {
        place: ({ id }, ctx) => {
          try {
            db.transaction(() => {
              insert.run(id);
              void ctx.publish(shop, 'order.placed', { id }, { delay: -5 }); // the outbox's check refuses it
            })();
          } catch (error) {
            thrown = error;
          }
          return { ok: true };
        },
      },
    });
    const node = testNode({ services: [bad], outbox, middleware: [tracing({ tracer }), observed] });
    await node.start();
    await node.client(shop).place({ id: 'o1' });
    assert.ok(thrown instanceof ParleyError && thrown.code === 'INVALID_ARGUMENT', String(thrown));
    assert.equal((db.prepare('SELECT count(*) AS n FROM orders').get() as { n: number }).n, 0, 'rolled back');
    assert.equal(outbox.waiting(), 0);
    const text = await observed.registry.metrics();
    assert.match(
      text,
      /parley_events_published_total\{service="shop",event="order.placed",durable="true",code="INVALID_ARGUMENT"\} 1/,
    );
    await node.stop();
  });

  it('an event a publish middleware hands on as a new call still goes to the outbox whose transaction is open', async () => {
    const db = ordersDb(':memory:');
    const outbox = createOutbox(db);
    // A new call made of the public fields only: nothing the node kept on its own call comes along.
    const copies: Middleware = {
      name: 'copies',
      publish: (next) => (call) =>
        next({
          parent: call.parent,
          service: call.service,
          event: call.event,
          envelope: call.envelope,
          durable: call.durable,
          options: call.options,
        }),
    };
    const node = testNode({ services: [shopService(db)], outbox, middleware: [copies] });
    await node.start();
    await node.client(shop).place({ id: 'o1' });
    assert.equal(outbox.waiting(), 1);
    await node.stop();
  });

  it('a node with two outboxes writes each event to the one whose transaction is open', async () => {
    const a = ordersDb(':memory:');
    const b = ordersDb(':memory:');
    const outboxA = createOutbox(a);
    const outboxB = createOutbox(b);
    const node = testNode({ services: [shopService(b)], outbox: [outboxA, outboxB] });
    await node.start();
    await node.client(shop).place({ id: 'o1' });
    assert.deepEqual([outboxA.waiting(), outboxB.waiting()], [0, 1]);
    await node.stop();
  });

  it('an event committed with the order is published after a crash that came before the relay ran', async () => {
    const servicePath = dir.file('shop-1.db');
    const brokerPath = dir.file('broker-1.db');
    // First life: the node has the outbox but no broker reachable; it "crashes" (never stopped).
    const db1 = ordersDb(servicePath);
    const outbox1 = createOutbox(db1);
    const first = testNode({ services: [shopService(db1)], outbox: outbox1 });
    await first.start();
    await first.client(shop).place({ id: 'o1' });
    await assert.rejects(
      first.client(shop).place({ id: 'o2', fail: true }),
      (e: unknown) => e instanceof ParleyError,
    );
    assert.equal(outbox1.waiting(), 1, 'only the committed order has its event');
    db1.close();

    // Second life: same database, a broker now; the relay publishes what the first life left.
    const broker = createEmbeddedBroker({ path: brokerPath });
    const received: string[] = [];
    const db2 = ordersDb(servicePath);
    const consumerContract = defineContract({ name: 'mail', version: '1', actions: {} });
    const mail = implement(consumerContract, {
      actions: {},
      on: [subscribe(shop, 'order.placed', (o) => void received.push(o.id), { startFrom: 'beginning' })],
    });
    const second = testNode({ services: [shopService(db2), mail], outbox: createOutbox(db2), broker });
    await second.start();
    for (let i = 0; i < 200 && received.length < 1; i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(received, ['o1']);
    await second.stop();
    db2.close();
  });

  it('a row published twice (crash between publish and delete) is stored once', async () => {
    const broker = createEmbeddedBroker({ path: ':memory:' });
    const db = new Database(':memory:');
    const outbox = createOutbox(db);
    const env = createEnvelope({ source: '/test', type: 'order.placed', data: { id: 'o9' } });
    outbox.write(env);
    outbox.write(env); // the same row again, as a relay that died before deleting would leave it
    const got: string[] = [];
    const consumer = await broker.subscribe(
      { topic: 'order.placed', group: 'g', startFrom: 'beginning' },
      async (d) => {
        got.push(d.envelope.id);
      },
    );
    assert.equal(await outbox.flush(broker), 2);
    for (let i = 0; i < 100 && got.length < 1; i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(got, [env.id]);
    await consumer.close();
    await broker.close();
  });
  it('a row the broker can never take is set aside with the reason; the rows behind it are published in order', async () => {
    const broker = createEmbeddedBroker({ path: ':memory:' });
    const db = new Database(':memory:');
    const outbox = createOutbox(db);
    const good = (n: number) =>
      createEnvelope({ source: '/test', type: 'order.placed', data: { id: `o${n}` } });
    const raw = db.prepare('INSERT INTO parley_outbox (envelope, msg_key, delay) VALUES (?, ?, ?)');
    // What another program, or an older version that did not check, may have left in the table.
    const first = good(1);
    outbox.write(first);
    raw.run('not json', null, null);
    raw.run(JSON.stringify({ specversion: '1.0', id: 'x', type: 'order.placed' }), null, null);
    raw.run(JSON.stringify(good(9)), null, -5);
    const last = good(2);
    outbox.write(last);
    const got: string[] = [];
    const consumer = await broker.subscribe(
      { topic: 'order.placed', group: 'g', startFrom: 'beginning' },
      async (d) => void got.push(d.envelope.id),
    );
    try {
      assert.equal(await outbox.flush(broker), 2);
      assert.equal(outbox.waiting(), 0, 'nothing left behind the bad rows');
      const rejected = outbox.rejected();
      assert.deepEqual(
        rejected.map((r) => [r.id, r.code, r.message]),
        [
          [2, 'INVALID_ARGUMENT', 'the outbox row is not JSON'],
          [3, 'INVALID_ARGUMENT', 'envelope attribute "source" is missing or not a string'],
          [4, 'INVALID_ARGUMENT', 'delay must be a number of ms from 0 to 2147483647'],
        ],
      );
      assert.equal(rejected[0]?.envelope, 'not json', 'kept as it was stored');
      assert.equal(rejected[2]?.delay, -5);
      for (let i = 0; i < 100 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(got, [first.id, last.id]);
    } finally {
      await consumer.close();
      await broker.close();
    }
  });

  it('rows of a transaction still open are not published: rolled back, never; committed, at the next flush', async () => {
    const db = new Database(':memory:');
    const outbox = createOutbox(db);
    const published: string[] = [];
    const broker = {
      publish: async (e: { id: string }) => {
        published.push(e.id);
        return { id: e.id, duplicate: false };
      },
    } as unknown as Parameters<typeof outbox.flush>[0];
    const event = (n: number) =>
      createEnvelope({ source: '/t', type: 'order.placed', data: { id: `o${n}` } });
    // A transaction begun by hand, open across an await (as a relay tick may come while it is).
    const rolledBack = event(1);
    db.exec('BEGIN');
    outbox.write(rolledBack);
    // Until 2026-12-03 this published the row, and the event existed though its transaction did not.
    assert.equal(await outbox.flush(broker), 0);
    db.exec('ROLLBACK');
    assert.equal(await outbox.flush(broker), 0);
    const committed = event(2);
    db.exec('BEGIN');
    outbox.write(committed);
    assert.equal(await outbox.flush(broker), 0);
    db.exec('COMMIT');
    assert.equal(await outbox.flush(broker), 1);
    assert.deepEqual(published, [committed.id]);
    assert.equal(outbox.waiting(), 0);
  });

  it('write checks what it is given as a publish would: a bad envelope or delay throws there', () => {
    const outbox = createOutbox(new Database(':memory:'));
    const env = createEnvelope({ source: '/test', type: 'order.placed', data: { id: 'o1' } });
    const refused = (f: () => void) =>
      assert.throws(f, (e: unknown) => e instanceof ParleyError && e.code === 'INVALID_ARGUMENT');
    refused(() => outbox.write({ ...env, source: undefined } as never));
    refused(() => outbox.write(env, { delay: -1 }));
    refused(() => outbox.write(env, { key: 7 } as never));
    // Data with no JSON form (it was JSON.stringify's TypeError until 2026-12-03).
    refused(() => outbox.write({ ...env, data: { n: 10n } }));
    assert.equal(outbox.waiting(), 0);
  });

  it('a broker that refuses every row (a wrong credential) is its own state: the rows wait, none is set aside', async () => {
    const outbox = createOutbox(new Database(':memory:'));
    outbox.write(createEnvelope({ source: '/t', type: 'order.placed', data: { id: 'o1' } }));
    const broker = {
      publish: async () => {
        throw new ParleyError('PERMISSION_DENIED', 'this user may not publish');
      },
    } as unknown as Parameters<typeof outbox.flush>[0];
    await assert.rejects(
      outbox.flush(broker),
      (e: unknown) => (e as ParleyError).code === 'PERMISSION_DENIED',
    );
    assert.equal(outbox.waiting(), 1);
    assert.deepEqual(outbox.rejected(), []);
  });

  it('a broker that refuses for now: the rows wait in order, logged once when it starts and once when it ends', async () => {
    const clock = createFakeClock();
    const outbox = createOutbox(new Database(':memory:'));
    const envs = [1, 2, 3].map((n) =>
      createEnvelope({ source: '/t', type: 'order.placed', data: { id: `o${n}` } }),
    );
    for (const e of envs) outbox.write(e);
    const published: string[] = [];
    let down = true;
    const broker = {
      publish: async (e: { id: string }) => {
        if (down) throw new ParleyError('UNAVAILABLE', 'the broker is restarting');
        published.push(e.id);
        return { id: e.id, duplicate: false };
      },
    } as unknown as Parameters<typeof outbox.flush>[0];
    const log: string[] = [];
    const relay = outbox.startRelay(broker, { clock, interval: 50, log: (m) => void log.push(m) });
    const turns = async () => {
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    };
    for (let i = 0; i < 10; i++) {
      await turns();
      await clock.tick(50);
    }
    assert.equal(outbox.waiting(), 3);
    assert.deepEqual(outbox.rejected(), [], 'a transient failure sets nothing aside');
    assert.deepEqual(log, ['rows wait: the broker is restarting']);
    down = false;
    await clock.tick(50);
    await turns();
    assert.deepEqual(
      published,
      envs.map((e) => e.id),
    );
    assert.deepEqual(log, ['rows wait: the broker is restarting', 'publishing again']);
    await relay.stop();
  });
});
