/**
 * Server push that follows the broker's log (`push.follow(broker.history)`): event ids are log
 * positions, so a client resumes with Last-Event-ID on another gateway instance, or on a gateway
 * started after the events, with exactly what it missed; past the log's retention, past
 * `maxResumeEvents`, or with an id that is not a position of this log, it gets a reset. Gateways are
 * real Fastify servers (port 0) over one embedded broker on a fake clock; events are published to
 * the broker as a service's `ctx.publish` would.
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { catalog, notifications } from '../examples/shop/contracts.ts';
import { Feed } from '../src/gateway/push/feed.ts';
import { type PushSource, pushSource } from '../src/gateway/push/index.ts';
import {
  type BrokerHistory,
  createEmbeddedBroker,
  createEnvelope,
  createFakeClock,
  type Envelope,
  type HistoryEntry,
} from '../src/index.ts';
import { waitFor } from './helpers.ts';
import { openWs } from './push-clients.ts';
import { ORDER_STATUS } from './push-fixture.ts';
import { orderIds, PRICE, pushLogSetup, resumeOnAnotherInstance } from './push-log-fixture.ts';

function setup(t: TestContext) {
  const clock = createFakeClock();
  const broker = createEmbeddedBroker({ path: ':memory:', clock, retention: { maxAge: 60_000 } });
  return pushLogSetup(t, broker, clock);
}

/** A feed on `history` that pushes nothing live: for calling `missed` and `reach` directly. */
const testFeed = (history: BrokerHistory, sources: PushSource[]) =>
  new Feed({
    history,
    sources,
    clock: createFakeClock(),
    logger: () => ({ warn: () => undefined, info: () => undefined }),
    maxResumeEvents: 100,
    accept: (source, payload) => ({ type: source.event, audience: undefined, data: JSON.stringify(payload) }),
    publish: () => undefined,
  });

describe('push following the broker log', { timeout: 20_000 }, () => {
  it('events arrive live with log positions as ids; another gateway instance resumes a client with exactly what it missed, then live ones', async (t) => {
    const { one: a, first, last, again } = await resumeOnAnotherInstance(setup(t));
    assert.match(first?.id ?? '', /^\d+\.\d+$/, 'one position per source');
    // Two sources merged by event time (within one millisecond either may come first).
    assert.deepEqual(
      again.events.map((e) => e.event).sort(),
      [PRICE, ORDER_STATUS, ORDER_STATUS, ORDER_STATUS].sort(),
      'no reset; bob’s event not among them',
    );
    assert.deepEqual(orderIds(again.events), ['a2', 'a3', 'a4']);
    // Ids are the same on both instances: a's live stream gives a3 the id b gave it on resume.
    const watcher = await a.connect('alice', last);
    await watcher.waitForEvents(4);
    assert.deepEqual(
      watcher.events.map((e) => e.id),
      again.events.map((e) => e.id),
    );
  });

  it('a gateway started after the events (a restart) resumes the client from the log', async (t) => {
    const { gateway, status } = setup(t);
    const before = await gateway();
    const alice = await before.connect('alice');
    await status('alice', 'a1');
    await alice.waitForEvents(1);
    const last = alice.lastEventId;
    alice.close();
    await before.stop();
    await status('alice', 'a2');
    await status('alice', 'a3');
    const after = await gateway();
    const again = await after.connect('alice', last);
    await again.waitForEvents(2);
    assert.deepEqual(orderIds(again.events), ['a2', 'a3']);
    assert.ok(
      again.events.every((e) => e.event === ORDER_STATUS),
      'no reset',
    );
  });

  it('a reset, and nothing replayed, past the retention, past maxResumeEvents, or with an id that is not this log’s', async (t) => {
    const { clock, broker, gateway, status } = setup(t);
    const g = await gateway({ maxResumeEvents: 3 });
    const alice = await g.connect('alice');
    await status('alice', 'a1');
    await alice.waitForEvents(1);
    const old = alice.lastEventId;
    for (const n of [2, 3, 4, 5]) await status('alice', `a${n}`);
    await alice.waitForEvents(5);
    const recent = alice.events[1]?.id ?? '';
    const tooFar = await g.connect('alice', old); // 4 missed, 3 allowed
    const madeUp = await g.connect('alice', 'elsewhere-2');
    const ahead = await g.connect('alice', '999999.999999');
    const withinReach = await g.connect('alice', recent); // 3 missed
    await withinReach.waitForEvents(3);
    assert.deepEqual(orderIds(withinReach.events), ['a3', 'a4', 'a5']);
    for (const [client, reason] of [
      [tooFar, 'too many events missed'],
      [madeUp, 'unknown event id'],
      [ahead, 'unknown event id'],
    ] as const) {
      const [reset] = await client.waitForEvents(1);
      assert.equal(reset?.event, 'reset');
      assert.equal((JSON.parse(reset?.data ?? '{}') as { reason?: string }).reason, reason);
      assert.equal(reset?.id, g.push.stats().lastEventId, 'the reset moves the client to now');
    }
    // Retention: the log's entries age out; a client that saw only a1 has lost the rest.
    await clock.tick(61_000);
    await status('alice', 'a6');
    await waitFor(() => alice.events.length === 6, 5000, 'a6 live');
    assert.ok(broker.compact() >= 5);
    const late = await g.connect('alice', old);
    const [reset] = await late.waitForEvents(1);
    assert.equal(reset?.event, 'reset');
    assert.equal(
      (JSON.parse(reset?.data ?? '{}') as { reason?: string }).reason,
      'events after this id are no longer kept',
    );
    // The one that saw a5 lost nothing: a6 is still kept.
    const fine = await g.connect('alice', alice.events[4]?.id ?? '');
    await fine.waitForEvents(1);
    assert.deepEqual(orderIds(fine.events), ['a6']);
  });

  it('a resume reads up to where the feed stood when the client came back, no further (later events reach it live)', async (t) => {
    const { broker, status } = setup(t);
    const sources = [
      pushSource(notifications, ORDER_STATUS, { audience: (e) => e.customer }),
      pushSource(catalog, PRICE),
    ];
    const feed = testFeed(broker.history, sources);
    const positions: string[] = [];
    for (const n of [1, 2, 3, 4]) {
      await status('alice', `a${n}`);
      positions.push(await broker.history.latest(ORDER_STATUS));
    }
    const priceStart = await broker.history.latest(PRICE);
    const resume = await feed.missed(
      `${positions[0]}.${priceStart}`,
      [positions[2] ?? '', priceStart],
      () => true,
    );
    assert.equal(resume.kind, 'events');
    assert.deepEqual(
      resume.kind === 'events'
        ? resume.events.map((e) => (JSON.parse(e.data) as { orderId: string }).orderId)
        : [],
      ['a2', 'a3'],
      'a4 came after the snapshot: it is the live stream’s',
    );
    assert.deepEqual(resume.kind === 'events' ? resume.events.map((e) => e.id) : [], [
      `${positions[1]}.${priceStart}`,
      `${positions[2]}.${priceStart}`,
    ]);
  });

  it('a WebSocket resumes from the log too (?lastEventId=), on another instance', async (t) => {
    const { gateway, status } = setup(t);
    const a = await gateway();
    const b = await gateway();
    const alice = await a.connect('alice');
    await status('alice', 'a1');
    await alice.waitForEvents(1);
    const last = alice.lastEventId;
    await status('alice', 'a2');
    await status('bob', 'b1');
    const ws = await openWs(
      `ws://127.0.0.1:${b.port}/ws?types=${ORDER_STATUS}&customer=alice&lastEventId=${encodeURIComponent(last)}`,
    );
    t.after(() => ws.socket.close());
    await waitFor(() => ws.messages.some((m) => m.type === 'ready'), 5000, 'caught up');
    await status('alice', 'a3');
    await waitFor(() => ws.messages.filter((m) => m.type === ORDER_STATUS).length === 2, 5000, 'a3 live');
    assert.deepEqual(
      ws.messages.filter((m) => m.type === ORDER_STATUS).map((m) => (m.data as { orderId: string }).orderId),
      ['a2', 'a3'],
    );
    assert.ok(!ws.messages.some((m) => m.type === 'reset'), 'no reset');
  });

  it('live events wait while a client catches up, then follow in order; past maxBufferedBytes waiting, it is cut off', async (t) => {
    const { broker, gateway, status } = setup(t);
    // Resume reads (no wait) are held at a gate; the gateways' own followers (with a wait) are not.
    let open: () => void = () => undefined;
    let gate = new Promise<void>((resolve) => (open = resolve));
    const gated: BrokerHistory = {
      latest: (topic) => broker.history.latest(topic),
      read: async (topic, after, options) => {
        if ((options?.waitMs ?? 0) === 0) await gate;
        return broker.history.read(topic, after, options);
      },
    };
    const roomy = await gateway({}, gated);
    const tight = await gateway({ maxBufferedBytes: 600 }, gated);
    const alice = await roomy.connect('alice');
    await status('alice', 'a1');
    await alice.waitForEvents(1);
    const last = alice.lastEventId;
    await status('alice', 'a2');
    const again = await roomy.connect('alice', last);
    const cut = await tight.connect('alice', last);
    for (let n = 3; n <= 12; n++) await status('alice', `a${n}`);
    await waitFor(() => alice.events.length === 12, 5000, 'the live stream');
    await cut.waitForEnd();
    assert.deepEqual(cut.events, [], 'cut off before anything was sent');
    assert.deepEqual(again.events, [], 'nothing yet: its resume is held');
    open();
    gate = Promise.resolve();
    await again.waitForEvents(11);
    assert.deepEqual(
      orderIds(again.events),
      ['a2', 'a3', 'a4', 'a5', 'a6', 'a7', 'a8', 'a9', 'a10', 'a11', 'a12'],
      'what it missed, then the live events that waited, once each',
    );
  });

  /** A log whose order-status follower (a read that may wait) reads only when let through. */
  const slowFollower = (history: BrokerHistory) => {
    let lets = 0;
    const waiting: (() => void)[] = [];
    const slow: BrokerHistory = {
      latest: (topic) => history.latest(topic),
      read: async (topic, after, options) => {
        if ((options?.waitMs ?? 0) > 0 && topic === ORDER_STATUS) {
          if (lets === 0) await new Promise<void>((r) => waiting.push(r));
          else lets--;
        }
        return history.read(topic, after, options);
      },
    };
    const letThrough = (reads: number) => {
      lets = reads;
      for (const w of waiting.splice(0)) w();
    };
    return { slow, letThrough };
  };

  it('a client that saw further than this instance (it read the log later) is resumed once this instance gets there: no reset, nothing twice', async (t) => {
    const { broker, gateway, status } = setup(t);
    // Instance b's follower reads the log only when let through (as if far slower than a's).
    const { slow, letThrough } = slowFollower(broker.history);
    const a = await gateway();
    const b = await gateway({}, slow);
    const alice = await a.connect('alice');
    await status('alice', 'a1');
    await status('alice', 'a2');
    await alice.waitForEvents(2);
    const last = alice.lastEventId;
    alice.close();
    const again = await b.connect('alice', last);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(again.events.length, 0, 'b waits: it has not read as far as the client saw');
    // b reads on: a1 and a2 reach it, then a3 comes.
    letThrough(10);
    await status('alice', 'a3');
    await again.waitForEvents(1);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(
      again.events.map((e) => e.event),
      [ORDER_STATUS],
      'no reset',
    );
    assert.deepEqual(orderIds(again.events), ['a3'], 'a1 and a2 not again');
  });

  it('a client still ahead of this instance when the wait ends gets a reset', async (t) => {
    const { broker, clock, gateway, status } = setup(t);
    const { slow } = slowFollower(broker.history);
    const a = await gateway();
    const b = await gateway({}, slow);
    const alice = await a.connect('alice');
    await status('alice', 'a1');
    await alice.waitForEvents(1);
    const again = await b.connect('alice', alice.lastEventId);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(again.events.length, 0, 'held while b may still get there');
    clock.advance(4_999);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(again.events.length, 0, 'held for up to 5 s');
    clock.advance(1);
    const [reset] = await again.waitForEvents(1);
    assert.equal(reset?.event, 'reset');
    assert.deepEqual(JSON.parse(reset?.data ?? '{}'), { reason: 'unknown event id' });
  });

  it('a partitioned position neither behind nor ahead of this instance is resumed once the instance has read past it on every partition', async () => {
    // A log of two partitions kept in memory, shaped as Kafka's history (positions `p0_p1`), so
    // that the two instances' views can be set up exactly; the follower reads only when let in.
    const parts: { time: number; env: Envelope }[][] = [[], []];
    let letIn: (() => void) | undefined;
    const price = (partition: number, time: number, sku: string) =>
      parts[partition]?.push({
        time,
        env: createEnvelope({ source: '/catalog', type: PRICE, data: { sku, price: 1 } }),
      });
    const history: BrokerHistory = {
      latest: async () => parts.map((p) => p.length).join('_'),
      read: async (_topic, after, options = {}) => {
        if ((options.waitMs ?? 0) > 0) await new Promise<void>((r) => (letIn = r));
        const at = after.split('_').map(Number);
        const stop = (options.until ?? '9_9').split('_').map(Number);
        const entries: HistoryEntry[] = [];
        for (;;) {
          let pick: number | undefined;
          for (const p of [0, 1]) {
            const o = at[p] as number;
            const record = parts[p]?.[o];
            if (record === undefined || o >= (stop[p] as number)) continue;
            if (pick === undefined || record.time < (parts[pick]?.[at[pick] as number]?.time ?? 0)) pick = p;
          }
          if (pick === undefined || entries.length === (options.limit ?? 100)) break;
          const env = parts[pick]?.[at[pick] as number]?.env as Envelope;
          at[pick] = (at[pick] as number) + 1;
          entries.push({ position: at.join('_'), envelope: env });
        }
        return { entries, next: entries.at(-1)?.position ?? after, gap: false };
      },
    };
    const feed = testFeed(history, [pushSource(catalog, PRICE)]);
    await feed.start();
    // The instance reads x0..x2 (partition 1) before r0 and r1 (partition 0, stamped later) exist.
    for (const [i, sku] of ['x0', 'x1', 'x2'].entries()) price(1, i + 1, sku);
    await waitFor(() => letIn !== undefined, 1000, 'the follower to wait');
    letIn?.();
    await waitFor(() => feed.snapshot()[0] === '0_3', 1000, 'the instance to read partition 1');
    price(0, 10, 'r0');
    price(0, 11, 'r1');
    // A client that saw r0 and r1 only (elsewhere): neither behind nor ahead of this instance.
    const id = '2_0';
    assert.deepEqual(await feed.missed(id, feed.snapshot(), () => true), {
      kind: 'reset',
      reason: 'unknown event id',
    });
    let reached = false;
    const reaching = feed.reach(id, 5_000).then(() => (reached = true));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(reached, false, 'waits: the instance has not read partition 0');
    await waitFor(() => letIn !== undefined, 1000, 'the follower to wait again');
    letIn?.();
    await reaching;
    assert.deepEqual(feed.snapshot(), ['2_3']);
    const resume = await feed.missed(id, feed.snapshot(), () => true);
    assert.equal(resume.kind, 'events');
    assert.deepEqual(
      resume.kind === 'events' ? resume.events.map((e) => (JSON.parse(e.data) as { sku: string }).sku) : [],
      ['x0', 'x1', 'x2'],
      'exactly what it had not seen',
    );
    feed.close();
  });
});
