/**
 * Server-Sent Events through the gateway's push module, on a real server fed by a real node:
 * who gets what, resume with Last-Event-ID, the reset when history is gone, limits, oversized
 * events, and the goodbye on close.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { catalog, orders } from '../examples/shop/contracts.ts';
import { createFakeClock } from '../src/index.ts';
import { deferred, waitFor } from './helpers.ts';
import { openSse } from './push-clients.ts';
import { auth, ORDER_STATUS, orderStatus, startPush } from './push-fixture.ts';

const url = (base: string, query: string) => `${base}/events?${query}`;
const orderIds = (events: { event: string; data: string }[]) =>
  events
    .filter((e) => e.event === ORDER_STATUS)
    .map((e) => (JSON.parse(e.data) as { orderId: string }).orderId);

describe('push over SSE', { timeout: 20_000 }, () => {
  it('a client gets only the types it asked for and only its own audience; the principal wins over ?customer=', async (t) => {
    const f = await startPush(t, { allowAnonymousAudience: true });
    const alice = await openSse(url(f.base, `types=${ORDER_STATUS}&customer=bob`), auth('alice'));
    const bob = await openSse(url(f.base, `types=${ORDER_STATUS},catalog.price-changed`), auth('bob'));
    t.after(() => {
      alice.close();
      bob.close();
    });
    assert.equal(alice.status, 200);
    assert.match(String(alice.headers['content-type']), /^text\/event-stream/);
    // As on every answer of the gateway (its onSend hook does not run for a hijacked one).
    assert.ok(String(alice.headers['x-request-id']).length > 0);
    assert.equal(alice.headers['x-content-type-options'], 'nosniff');
    await f.status('alice', 'a1');
    await f.status('bob', 'b1');
    await f.sender.notify(catalog, 'catalog.price-changed', { sku: 'mouse' });
    await f.status('alice', 'a2');
    await f.status('bob', 'b2');
    // Per-connection order: once each saw its last event, anything earlier would have arrived.
    await alice.waitForEvents(2);
    await bob.waitForEvents(3);
    assert.deepEqual(orderIds(alice.events), ['a1', 'a2'], 'no price change (not asked), nothing of bob');
    assert.deepEqual(
      bob.events.map((e) => e.event),
      [ORDER_STATUS, 'catalog.price-changed', ORDER_STATUS],
    );
    assert.deepEqual(orderIds(bob.events), ['b1', 'b2']);
    const seqs = alice.events.map((e) => Number(e.id?.split('-').pop()));
    assert.ok((seqs[0] as number) < (seqs[1] as number), 'ids increase');
    assert.deepEqual(JSON.parse(alice.events[0]?.data ?? ''), orderStatus('alice', 'a1'));
  });

  it('refuses with problem+json: no principal (401), unknown type (400), a type not allowed (403)', async (t) => {
    const f = await startPush(t);
    const anonymous = await openSse(url(f.base, `types=${ORDER_STATUS}&customer=alice`));
    assert.equal(anonymous.status, 401, 'the demo switch is off by default');
    assert.match(String(anonymous.headers['content-type']), /^application\/problem\+json/);
    // The gateway's problem shape: type, code, path and the request id (body and header).
    const problem = JSON.parse(anonymous.body);
    assert.equal(problem.code, 'UNAUTHENTICATED');
    assert.equal(problem.type, 'urn:parley:problem:unauthenticated');
    assert.equal(problem.instance, '/events');
    assert.equal(problem.status, 401);
    assert.ok(String(problem.requestId).length > 0);
    assert.equal(problem.requestId, anonymous.headers['x-request-id']);
    assert.equal(anonymous.headers['www-authenticate'], 'Bearer');
    const unknown = await openSse(url(f.base, 'types=orders.secret'), auth('alice'));
    assert.equal(unknown.status, 400);
    const none = await openSse(url(f.base, ''), auth('alice'));
    assert.equal(none.status, 400);
    const forbidden = await openSse(url(f.base, 'types=order.placed'), auth('alice'));
    assert.equal(forbidden.status, 403);
    assert.equal(JSON.parse(forbidden.body).code, 'PERMISSION_DENIED');
    const staff = await openSse(url(f.base, 'types=order.placed'), auth('staff'));
    t.after(() => staff.close());
    assert.equal(staff.status, 200);
    await f.sender.notify(orders, 'order.placed', {
      orderId: 'o1',
      customer: 'alice',
      card: '4242',
      total: 1,
      lines: [{ sku: 'mouse', quantity: 1 }],
    });
    await staff.waitForEvents(1);
  });

  it('demo switch on: ?customer= picks the audience of an anonymous client, and only that one', async (t) => {
    const f = await startPush(t, { allowAnonymousAudience: true });
    const carol = await openSse(url(f.base, `types=${ORDER_STATUS}&customer=carol`));
    const nobody = await openSse(url(f.base, `types=${ORDER_STATUS},catalog.price-changed`));
    t.after(() => {
      carol.close();
      nobody.close();
    });
    await f.status('dave', 'd1');
    await f.status('carol', 'c1');
    await f.sender.notify(catalog, 'catalog.price-changed', { sku: 'mouse' });
    await carol.waitForEvents(1);
    await nobody.waitForEvents(1);
    assert.deepEqual(orderIds(carol.events), ['c1']);
    assert.deepEqual(
      nobody.events.map((e) => e.event),
      ['catalog.price-changed'],
      'no customer: audience-less events only',
    );
  });

  it('Last-Event-ID resumes with exactly the missed events of this client, in order, then live ones', async (t) => {
    const f = await startPush(t);
    const first = await openSse(url(f.base, `types=${ORDER_STATUS}`), auth('alice'));
    await f.status('alice', 'a1');
    await first.waitForEvents(1);
    const last = first.lastEventId;
    first.close();
    await sleep(20);
    await f.status('alice', 'a2');
    await f.status('bob', 'b1');
    await f.status('alice', 'a3');
    await sleep(20);
    const again = await openSse(url(f.base, `types=${ORDER_STATUS}`), {
      ...auth('alice'),
      'last-event-id': last,
    });
    t.after(() => again.close());
    await again.waitForEvents(2);
    await f.status('alice', 'a4');
    await again.waitForEvents(3);
    assert.deepEqual(orderIds(again.events), ['a2', 'a3', 'a4']);
    assert.deepEqual(
      again.events.map((e) => e.event),
      [ORDER_STATUS, ORDER_STATUS, ORDER_STATUS],
      'no reset',
    );
  });

  it('an id older than the ring, or from another instance, gets a reset (refetch) and nothing replayed', async (t) => {
    const f = await startPush(t, { historySize: 3 });
    const first = await openSse(url(f.base, `types=${ORDER_STATUS}`), auth('alice'));
    await f.status('alice', 'a1');
    await first.waitForEvents(1);
    const last = first.lastEventId;
    first.close();
    for (const n of [2, 3, 4, 5]) await f.status('alice', `a${n}`);
    await sleep(20);
    const old = await openSse(url(f.base, `types=${ORDER_STATUS}`), {
      ...auth('alice'),
      'last-event-id': last,
    });
    const foreign = await openSse(url(f.base, `types=${ORDER_STATUS}`), {
      ...auth('alice'),
      'last-event-id': 'elsewhere-2',
    });
    t.after(() => {
      old.close();
      foreign.close();
    });
    for (const client of [old, foreign]) {
      const [reset] = await client.waitForEvents(1);
      assert.equal(reset?.event, 'reset');
      assert.equal(reset?.id, f.push.stats().lastEventId, 'the reset moves the client to now');
    }
    await f.status('alice', 'a6');
    await old.waitForEvents(2);
    assert.deepEqual(
      old.events.map((e) => e.event),
      ['reset', ORDER_STATUS],
    );
    assert.deepEqual(orderIds(old.events), ['a6']);
  });

  it('heartbeats come every heartbeatMs (fake clock) and carry the latest id, so a quiet client resumes without a reset', async (t) => {
    const clock = createFakeClock();
    const f = await startPush(t, { historySize: 2, heartbeatMs: 15_000, clock });
    const quiet = await openSse(url(f.base, `types=${ORDER_STATUS}`), auth('alice'));
    t.after(() => quiet.close());
    for (const n of [1, 2, 3, 4]) await f.status('bob', `b${n}`);
    await sleep(50);
    assert.deepEqual(quiet.comments, [], 'no heartbeat before its time');
    assert.equal(quiet.events.length, 0);
    clock.advance(14_999);
    await sleep(20);
    assert.deepEqual(quiet.comments, []);
    clock.advance(1);
    await waitFor(() => quiet.comments.length === 1, 2000, 'a heartbeat');
    clock.advance(15_000);
    await waitFor(() => quiet.comments.length === 2, 2000, 'a second heartbeat');
    assert.deepEqual(quiet.comments, ['heartbeat', 'heartbeat']);
    assert.equal(
      quiet.lastEventId,
      f.push.stats().lastEventId,
      "bob's events moved alice's cursor, not her events",
    );
    quiet.close();
    const again = await openSse(url(f.base, `types=${ORDER_STATUS}`), {
      ...auth('alice'),
      'last-event-id': quiet.lastEventId,
    });
    t.after(() => again.close());
    await f.status('alice', 'a1');
    await again.waitForEvents(1);
    assert.deepEqual(
      again.events.map((e) => e.event),
      [ORDER_STATUS],
      'no reset although the ring (2) no longer has what came after her connect',
    );
  });

  it('maxConnections: one more is refused with 503; maxPerPrincipal: with 429; a freed slot is reused', async (t) => {
    const f = await startPush(t, { maxConnections: 2, maxPerPrincipal: 1 });
    const a = await openSse(url(f.base, `types=${ORDER_STATUS}`), auth('alice'));
    const secondAlice = await openSse(url(f.base, `types=${ORDER_STATUS}`), auth('alice'));
    assert.equal(secondAlice.status, 429);
    const b = await openSse(url(f.base, `types=${ORDER_STATUS}`), auth('bob'));
    const staff = await openSse(url(f.base, 'types=catalog.price-changed'), auth('staff'));
    assert.equal(staff.status, 503);
    assert.equal(JSON.parse(staff.body).code, 'UNAVAILABLE');
    a.close();
    await waitFor(() => f.push.stats().connections === 1, 2000, 'the closed connection to be freed');
    const again = await openSse(url(f.base, 'types=catalog.price-changed'), auth('staff'));
    t.after(() => {
      b.close();
      again.close();
    });
    assert.equal(again.status, 200);
  });

  it('requests authenticated at the same moment are held to the limits: one gets its slot, the rest 429', async (t) => {
    // Like requests all waiting on one JWKS fetch: they resume together, in one turn.
    const keys = deferred<void>();
    let waiting = 0;
    const f = await startPush(t, { maxPerPrincipal: 1, maxConnections: 2 }, undefined, async () => {
      waiting++;
      await keys.promise;
    });
    const opening = Array.from({ length: 6 }, () =>
      openSse(url(f.base, `types=${ORDER_STATUS}`), auth('alice')),
    );
    await waitFor(() => waiting === 6, 5000, 'six requests waiting to be authenticated');
    keys.resolve();
    const clients = await Promise.all(opening);
    t.after(() => {
      for (const c of clients) c.close();
    });
    assert.deepEqual(clients.map((c) => c.status).sort(), [200, 429, 429, 429, 429, 429]);
    assert.equal(f.push.stats().connections, 1);
  });

  it('a client that leaves while it is being authenticated keeps no slot, and close() still ends', async (t) => {
    const keys = deferred<void>();
    let waiting = 0;
    const f = await startPush(t, { maxPerPrincipal: 2 }, undefined, async () => {
      waiting++;
      await keys.promise;
    });
    const gone = Array.from({ length: 3 }, () => {
      const req = request(url(f.base, `types=${ORDER_STATUS}`), { headers: auth('alice') });
      req.on('error', () => undefined);
      req.end();
      return req;
    });
    await waitFor(() => waiting === 3, 5000, 'three requests waiting to be authenticated');
    for (const req of gone) req.destroy();
    // The server has seen them go before they are admitted.
    const open = () => new Promise<number>((resolve) => f.app.server.getConnections((_e, n) => resolve(n)));
    for (let i = 0; i < 500 && (await open()) > 0; i++) await sleep(10);
    assert.equal(await open(), 0, 'the server saw the clients go');
    keys.resolve();
    await sleep(50);
    assert.equal(f.push.stats().connections, 0, 'no slot kept by a client that left');
    const again = await openSse(url(f.base, `types=${ORDER_STATUS}`), auth('alice'));
    again.close();
    assert.equal(again.status, 200);
    // Before, close() waited for ever on the connections of the clients that had left.
    const closed = await Promise.race([f.push.close().then(() => 'closed'), sleep(3000).then(() => 'hung')]);
    assert.equal(closed, 'closed');
  });

  it('an event larger than maxEventBytes is dropped whole, with a log line; the next one arrives', async (t) => {
    const f = await startPush(t, { maxEventBytes: 300 });
    const alice = await openSse(url(f.base, `types=${ORDER_STATUS}`), auth('alice'));
    t.after(() => alice.close());
    await f.status('alice', 'big', 'CONFIRMED', 'x'.repeat(400));
    await f.status('alice', 'small');
    await alice.waitForEvents(1);
    await sleep(20);
    assert.deepEqual(orderIds(alice.events), ['small']);
    assert.ok(
      f.logs.some((l) => l.includes('larger than maxEventBytes') && l.includes(ORDER_STATUS)),
      f.logs.join('\n'),
    );
  });

  it('close() sends bye to every connection, ends it, and refuses new ones with 503', async (t) => {
    const f = await startPush(t);
    const alice = await openSse(url(f.base, `types=${ORDER_STATUS}`), auth('alice'));
    const bob = await openSse(url(f.base, `types=${ORDER_STATUS}`), auth('bob'));
    await f.push.close();
    for (const client of [alice, bob]) {
      await client.waitForEnd();
      assert.equal(client.events.at(-1)?.event, 'bye');
    }
    assert.equal(f.push.stats().connections, 0);
    const late = await openSse(url(f.base, `types=${ORDER_STATUS}`), auth('alice'));
    assert.equal(late.status, 503);
  });
});
