/**
 * Slow clients: a connection that stops reading is cut off, by size at once or by time (fake
 * clock), and the bytes the gateway holds for it stay under the bound however much is pushed,
 * while a client that reads keeps getting every event.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createFakeClock } from '../src/index.ts';
import { waitFor } from './helpers.ts';
import { openSse, openWs } from './push-clients.ts';
import { auth, ORDER_STATUS, type PushFixture, startPush } from './push-fixture.ts';

const EVENT_TEXT = 'x'.repeat(32 * 1024);
/** An event's JSON is the text plus a little. */
const EVENT_BYTES = EVENT_TEXT.length + 200;

/** An SSE request on a raw socket that is never read: the kernel buffers fill, then Node's. */
async function stuckSse(t: TestContext, f: PushFixture): Promise<Socket> {
  const before = f.push.stats().connections;
  const socket = connect(Number(new URL(f.base).port), '127.0.0.1');
  t.after(() => void socket.destroy());
  socket.pause();
  socket.on('error', () => undefined);
  socket.write(
    `GET /events?types=${ORDER_STATUS} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer alice\r\n\r\n`,
  );
  await waitFor(() => f.push.stats().connections === before + 1, 2000, 'the stuck connection to open');
  return socket;
}

/**
 * Pushes big events to alice until `done`, at most `max` of them; returns how many. Each event
 * gets a turn of the event loop, so what stays buffered is what the client did not take, not a
 * burst the socket has not been given yet.
 */
async function flood(f: PushFixture, done: () => boolean, max = 1000): Promise<number> {
  let sent = 0;
  while (!done() && sent < max) {
    await f.status('alice', `o${sent}`, 'CONFIRMED', EVENT_TEXT);
    sent++;
    await new Promise((resolve) => setImmediate(resolve));
  }
  return sent;
}

describe('slow push clients', { timeout: 60_000 }, () => {
  it('SSE: a client that stops reading is cut off once maxBufferedBytes wait for it; a reader gets everything', async (t) => {
    const maxBufferedBytes = 256 * 1024;
    const f = await startPush(t, { maxBufferedBytes, slowClientMs: 600_000, clock: createFakeClock() });
    const reader = await openSse(`${f.base}/events?types=${ORDER_STATUS}`, auth('alice'));
    t.after(() => reader.close());
    const stuck = await stuckSse(t, f);
    const sent = await flood(f, () => f.push.stats().connections === 1);
    assert.ok(sent > 8, `the kernel's buffers took some first (${sent} events)`);
    assert.equal(f.push.stats().connections, 1, `the stuck one was cut off (after ${sent} events)`);
    assert.ok(
      f.push.stats().peakBuffered <= maxBufferedBytes + EVENT_BYTES,
      `held at most the bound plus one event: ${f.push.stats().peakBuffered}`,
    );
    assert.equal(f.logs.filter((l) => l.includes('slow client cut off')).length, 1, f.logs.join('\n'));
    await reader.waitForEvents(sent, `all ${sent} events at the reader`);
    stuck.resume();
    await waitFor(() => stuck.destroyed || stuck.readableEnded, 5000, 'the stuck socket to be closed');
  });

  it('SSE: a client behind (above slowBytes) for slowClientMs is cut off, not a moment before (fake clock)', async (t) => {
    const clock = createFakeClock();
    const f = await startPush(t, {
      slowBytes: 16 * 1024,
      slowClientMs: 5000,
      maxBufferedBytes: 64 * 1024 * 1024,
      clock,
    });
    await stuckSse(t, f);
    await flood(f, () => f.push.stats().buffered > 16 * 1024);
    assert.ok(f.push.stats().buffered > 16 * 1024, 'the client fell behind');
    clock.advance(4999);
    await sleep(20);
    assert.equal(f.push.stats().connections, 1, 'still within slowClientMs');
    clock.advance(1);
    await waitFor(() => f.push.stats().connections === 0, 2000, 'the slow client to be cut off');
  });

  it('WebSocket: a client that stops reading is cut off at maxBufferedBytes; memory stays bounded', async (t) => {
    const maxBufferedBytes = 256 * 1024;
    const f = await startPush(t, { maxBufferedBytes, slowClientMs: 600_000, clock: createFakeClock() });
    const reader = await openWs(`${f.base.replace('http', 'ws')}/ws?types=${ORDER_STATUS}`, auth('alice'));
    const stuck = await openWs(`${f.base.replace('http', 'ws')}/ws?types=${ORDER_STATUS}`, auth('alice'));
    t.after(() => {
      reader.socket.terminate();
      stuck.socket.terminate();
    });
    stuck.socket.pause();
    const sent = await flood(f, () => f.push.stats().connections === 1);
    assert.ok(sent > 8, `the kernel's buffers took some first (${sent} events)`);
    assert.ok(sent > 8, `the kernel's buffers took some first (${sent} events)`);
    assert.equal(f.push.stats().connections, 1, `the stuck one was cut off (after ${sent} events)`);
    assert.ok(
      f.push.stats().peakBuffered <= maxBufferedBytes + EVENT_BYTES,
      `${f.push.stats().peakBuffered}`,
    );
    await reader.waitForMessages(sent + 1, `all ${sent} events at the reader`);
    stuck.socket.resume();
    await stuck.waitForClose();
  });
});
