/**
 * WebSocket push through the gateway, on a real server fed by a real node: who gets what, resume
 * with `?lastEventId=`, reset, ping heartbeats and dead peers, limits on the upgrade, oversized
 * events, and the close frame on shutdown.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createFakeClock } from '../src/index.ts';
import { waitFor } from './helpers.ts';
import { openWs, type WsMessage } from './push-clients.ts';
import { auth, ORDER_STATUS, orderStatus, startPush } from './push-fixture.ts';

const wsUrl = (base: string, query: string) => `${base.replace('http', 'ws')}/ws?${query}`;
const orderIds = (messages: WsMessage[]) =>
  messages.filter((m) => m.type === ORDER_STATUS).map((m) => (m.data as { orderId: string }).orderId);
const refusedWith = (status: number) => (e: unknown) => (e as { status?: number }).status === status;

/** Alice and Bob, each on a socket for order status, closed when the test ends. */
async function aliceAndBob(base: string, t: { after(fn: () => void): void }) {
  const alice = await openWs(wsUrl(base, `types=${ORDER_STATUS}`), auth('alice'));
  const bob = await openWs(wsUrl(base, `types=${ORDER_STATUS}`), auth('bob'));
  t.after(() => {
    alice.socket.terminate();
    bob.socket.terminate();
  });
  return { alice, bob };
}

describe('push over WebSocket', { timeout: 20_000 }, () => {
  it('a client gets only its types and its own audience; another customer’s events never arrive', async (t) => {
    const f = await startPush(t);
    const { alice, bob } = await aliceAndBob(f.base, t);
    await f.status('alice', 'a1');
    await f.status('bob', 'b1');
    await f.status('alice', 'a2');
    await alice.waitForMessages(3);
    await bob.waitForMessages(2);
    assert.equal(alice.messages[0]?.type, 'ready', 'first: the id it is up to date with');
    assert.deepEqual(orderIds(alice.messages), ['a1', 'a2']);
    assert.deepEqual(orderIds(bob.messages), ['b1']);
    assert.deepEqual(alice.messages[1]?.data, orderStatus('alice', 'a1'));
  });

  it('refuses the upgrade with the HTTP status: 401 without a principal, 403 for a type not allowed', async (t) => {
    const f = await startPush(t);
    await assert.rejects(openWs(wsUrl(f.base, `types=${ORDER_STATUS}&customer=alice`)), refusedWith(401));
    await assert.rejects(openWs(wsUrl(f.base, 'types=order.placed'), auth('alice')), refusedWith(403));
    const plain = await fetch(`${f.base}/ws?types=${ORDER_STATUS}`, { headers: auth('alice') });
    assert.equal(plain.status, 400, 'a plain GET is told to upgrade');
  });

  it('?lastEventId= resumes with exactly the missed events, in order; an id past the ring gets reset', async (t) => {
    const f = await startPush(t, { historySize: 4 });
    const first = await openWs(wsUrl(f.base, `types=${ORDER_STATUS}`), auth('alice'));
    await f.status('alice', 'a1');
    const [, a1] = await first.waitForMessages(2);
    first.socket.close();
    await first.waitForClose();
    await f.status('alice', 'a2');
    await f.status('bob', 'b1');
    await f.status('alice', 'a3');
    await sleep(20);
    const again = await openWs(wsUrl(f.base, `types=${ORDER_STATUS}&lastEventId=${a1?.id}`), auth('alice'));
    t.after(() => again.socket.terminate());
    await again.waitForMessages(3);
    assert.deepEqual(
      again.messages.map((m) => m.type),
      [ORDER_STATUS, ORDER_STATUS, 'ready'],
    );
    assert.deepEqual(orderIds(again.messages), ['a2', 'a3']);
    for (const n of [4, 5, 6, 7]) await f.status('bob', `b${n}`);
    await sleep(20);
    const late = await openWs(wsUrl(f.base, `types=${ORDER_STATUS}&lastEventId=${a1?.id}`), auth('alice'));
    t.after(() => late.socket.terminate());
    const [reset] = await late.waitForMessages(2);
    assert.equal(reset?.type, 'reset');
    assert.equal(reset?.id, f.push.stats().lastEventId);
  });

  it('pings every heartbeatMs (fake clock); a peer that never answers a ping is terminated', async (t) => {
    const clock = createFakeClock();
    const f = await startPush(t, { heartbeatMs: 15_000, clock });
    const live = await openWs(wsUrl(f.base, `types=${ORDER_STATUS}`), auth('alice'));
    const dead = await openWs(wsUrl(f.base, `types=${ORDER_STATUS}`), auth('bob'), { autoPong: false });
    t.after(() => live.socket.terminate());
    clock.advance(15_000);
    await waitFor(() => live.pings === 1 && dead.pings === 1, 2000, 'a ping each');
    await sleep(20); // the live client's pong comes back
    clock.advance(15_000);
    await dead.waitForClose();
    await waitFor(() => live.pings === 2, 2000, 'a second ping');
    assert.equal(live.closeCode, undefined, 'the one that answers stays');
    assert.equal(f.push.stats().ws, 1);
  });

  it('maxConnections: the upgrade beyond it is refused with 503', async (t) => {
    const f = await startPush(t, { maxConnections: 1 });
    const one = await openWs(wsUrl(f.base, `types=${ORDER_STATUS}`), auth('alice'));
    t.after(() => one.socket.terminate());
    await assert.rejects(openWs(wsUrl(f.base, `types=${ORDER_STATUS}`), auth('bob')), refusedWith(503));
  });

  it('an oversized event is dropped, not sent; the next one is', async (t) => {
    const f = await startPush(t, { maxEventBytes: 300 });
    const alice = await openWs(wsUrl(f.base, `types=${ORDER_STATUS}`), auth('alice'));
    t.after(() => alice.socket.terminate());
    await f.status('alice', 'big', 'CONFIRMED', 'x'.repeat(400));
    await f.status('alice', 'small');
    await alice.waitForMessages(2);
    await sleep(20);
    assert.deepEqual(orderIds(alice.messages), ['small']);
    assert.ok(f.logs.some((l) => l.includes('larger than maxEventBytes')));
  });

  it('a client message over 4 KiB closes its socket (1009), not buffered; smaller ones are ignored; the others go on', async (t) => {
    const f = await startPush(t);
    const { alice, bob } = await aliceAndBob(f.base, t);
    bob.socket.send('hello');
    alice.socket.send('x'.repeat(64 * 1024));
    await alice.waitForClose();
    assert.equal(alice.closeCode, 1009);
    await f.status('bob', 'b1');
    await bob.waitForMessages(2);
    assert.deepEqual(orderIds(bob.messages), ['b1']);
    assert.equal(bob.closeCode, undefined);
  });

  it('close() sends bye and a going-away close frame to every socket', async (t) => {
    const f = await startPush(t);
    const alice = await openWs(wsUrl(f.base, `types=${ORDER_STATUS}`), auth('alice'));
    const bob = await openWs(wsUrl(f.base, `types=${ORDER_STATUS}`), auth('bob'));
    await f.push.close();
    for (const client of [alice, bob]) {
      await client.waitForClose();
      assert.equal(client.messages.at(-1)?.type, 'bye');
      assert.equal(client.closeCode, 1001);
    }
    assert.equal(f.push.stats().connections, 0);
    await assert.rejects(openWs(wsUrl(f.base, `types=${ORDER_STATUS}`), auth('alice')), refusedWith(503));
  });
});
