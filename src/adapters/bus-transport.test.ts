import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { NodeInfo, TransportHandler } from '../transport/transport.ts';
import type { Bus } from './bus.ts';
import { decodeMessage, encodeFrame, FrameWriter, Kind } from './bus-frames.ts';
import { BusTransport, safeId } from './bus-transport.ts';

const text = new TextEncoder();
const untext = new TextDecoder();
const turnEnd = () => new Promise<void>((resolve) => setImmediate(resolve));

function info(id: string): NodeInfo {
  return { id, status: 'up', codec: 'json', services: [] };
}

/** A message from `from`: one frame. */
const frame = (kind: number, id: number, from: string, payload: string) =>
  encodeFrame(kind, id, text.encode(from), text.encode(payload));

/** The frames after which a batch leaves at once (`BATCH_FRAMES` in bus-transport.ts). */
const BATCH = 32;

/** A message from `from` holding one request per payload, as a busy caller sends them. */
function batch(from: string, payloads: string[]): Uint8Array {
  let out: Uint8Array | undefined;
  const writer = new FrameWriter(
    (_subject, message) => {
      out = message;
    },
    1 << 20,
    1 << 20,
  );
  writer.setSender(text.encode(from));
  // A turn of two frames first: the writer is busy, so the next turn's first frame waits too.
  writer.send('s', Kind.WHO, 0, new Uint8Array(0));
  writer.send('s', Kind.WHO, 0, new Uint8Array(0));
  writer.flush();
  for (const [i, p] of payloads.entries()) writer.send('s', Kind.REQUEST, i + 1, text.encode(p));
  writer.flush();
  assert.ok(out !== undefined);
  return out;
}

/**
 * A bus in memory whose messages the test hands over itself, several in one go as a client does
 * with one socket read. `log` gets what the transport published, in order, beside what the test's
 * handler logs.
 */
function memoryBus(log: string[]) {
  const subscribers = new Map<string, (message: Uint8Array, replyTo?: string) => void>();
  const bus: Bus = {
    publish(_subject, message) {
      const frames = decodeMessage(message);
      assert.ok(Array.isArray(frames), String(frames));
      const replies = frames.filter((f) => f.kind === Kind.REPLY).length;
      log.push(replies > 0 ? `sent ${replies} replies` : `sent kind ${frames[0]?.kind}`);
    },
    async subscribe(subject, onMessage) {
      subscribers.set(subject, onMessage);
      return () => subscribers.delete(subject);
    },
    close: async () => {},
    destroy: () => {},
  };
  /** Hands `messages` to their subscribers back to back, as one read's worth. */
  const deliver = (...messages: [subject: string, message: Uint8Array][]) => {
    for (const [subject, message] of messages) {
      const on = subscribers.get(subject);
      assert.ok(on !== undefined, `nobody subscribes to ${subject}`);
      on(message);
    }
  };
  return { bus, deliver };
}

function handler(log: string[], overrides: Partial<TransportHandler> = {}): TransportHandler {
  return {
    async onRequest(payload) {
      const what = untext.decode(payload);
      log.push(`serve ${what}`);
      return text.encode(what.toUpperCase());
    },
    onBroadcast: () => {},
    onNodeUp: () => {},
    onNodeDown: () => {},
    ...overrides,
  };
}

async function started(id: string, log: string[], overrides: Partial<TransportHandler> = {}) {
  const { bus, deliver } = memoryBus(log);
  const transport = new BusTransport(async () => bus, {
    prefix: 't',
    heartbeatMs: 60_000,
    log: (line) => log.push(`log ${line}`),
  });
  await transport.start(info(id), handler(log, overrides));
  await turnEnd(); // the hello and who-is-there of the start leave; the writer counts the turn busy
  log.length = 0;
  return { transport, deliver };
}

describe('bus transport: reading what one socket read brought', () => {
  it('a full batch of answers to the first message leaves before the next message is read', async () => {
    const log: string[] = [];
    const { transport, deliver } = await started('callee', log);
    const first = Array.from({ length: BATCH }, (_, i) => `a${i}`);
    deliver(
      ['t.node.callee', batch('caller', first)],
      ['t.node.callee', frame(Kind.REQUEST, 99, 'caller', 'b')],
    );
    await turnEnd();
    await turnEnd();
    // Read back to back, both would be served before any answer left.
    assert.deepEqual(log, [
      ...first.map((n) => `serve ${n}`),
      `sent ${BATCH} replies`,
      'serve b',
      'sent 1 replies',
    ]);
    await transport.stop();
  });

  it('reads every message of a turn in that turn, in order: no backlog builds up', async () => {
    const log: string[] = [];
    const { transport, deliver } = await started('callee', log);
    const names = Array.from({ length: 100 }, (_, i) => `m${i}`);
    deliver(
      ...names.map((n, i): [string, Uint8Array] => [
        't.node.callee',
        frame(Kind.REQUEST, i + 1, 'caller', n),
      ]),
    );
    await turnEnd(); // made after the transport's own: it runs once they all have
    assert.deepEqual(
      log.filter((l) => l.startsWith('serve')),
      names.map((n) => `serve ${n}`),
    );
    await transport.stop();
  });

  it('a message of a later read, with nothing waiting, is read at once', async () => {
    const log: string[] = [];
    const { transport, deliver } = await started('callee', log);
    deliver(['t.node.callee', frame(Kind.REQUEST, 1, 'caller', 'a')]);
    await Promise.resolve(); // the read ends at the next microtask
    deliver(['t.node.callee', frame(Kind.REQUEST, 2, 'caller', 'b')]);
    assert.deepEqual(log, ['serve a', 'serve b']);
    await transport.stop();
  });

  it("a peer's bye waits behind the reply it sent first, in the same read", async () => {
    const log: string[] = [];
    const { transport, deliver } = await started('caller', log);
    deliver(['t.presence', frame(Kind.HELLO, 0, 'callee', JSON.stringify(info('callee')))]);
    await turnEnd();
    // Request ids start at a random number (a restarted caller must not reuse its last run's).
    const id = (transport as unknown as { nextId: number }).nextId;
    const answer = transport.request('callee', text.encode('x'));
    await turnEnd();
    deliver(
      ['t.node.caller', frame(Kind.REQUEST, 9, 'callee', 'other')], // read first: the rest wait
      ['t.node.caller', frame(Kind.REPLY, id, 'callee', 'X')],
      ['t.presence', frame(Kind.BYE, 0, 'callee', '')],
    );
    // Read before the reply, the bye would fail the call with UNAVAILABLE.
    assert.equal(untext.decode(await answer), 'X');
    await transport.stop();
  });

  it('a waiting message whose reading throws is logged, and the next is read', async () => {
    const log: string[] = [];
    const { transport, deliver } = await started('callee', log, {
      onNodeUp: () => {
        throw new Error('boom');
      },
    });
    deliver(
      ['t.node.callee', frame(Kind.REQUEST, 1, 'caller', 'a')],
      ['t.presence', frame(Kind.HELLO, 0, 'other', JSON.stringify(info('other')))],
      ['t.node.callee', frame(Kind.REQUEST, 2, 'caller', 'b')],
    );
    await turnEnd();
    await turnEnd();
    assert.deepEqual(
      log.filter((l) => !l.startsWith('sent')),
      ['serve a', 'log a message could not be read: boom', 'serve b'],
    );
    await transport.stop();
  });

  it('what waits when the transport stops is not read: no handler is called after the stop', async () => {
    const log: string[] = [];
    const { transport, deliver } = await started('callee', log, {
      onNodeUp: (peer) => log.push(`up ${peer.id}`),
    });
    deliver(
      ['t.node.callee', frame(Kind.REQUEST, 1, 'caller', 'a')],
      ['t.presence', frame(Kind.HELLO, 0, 'late', JSON.stringify(info('late')))],
    );
    await transport.stop();
    await turnEnd();
    await turnEnd();
    assert.deepEqual(
      log.filter((l) => !l.startsWith('sent')),
      ['serve a'],
    );
  });
});

describe('bus transport: what it keeps of the calls it serves', () => {
  /** The callers it keeps a table of calls for (private; read here to show nothing leaks). */
  const tables = (t: BusTransport) => [...(t as unknown as { running: Map<string, unknown> }).running.keys()];

  it("keeps a peer's table between its calls, drops it with the peer, and keeps nothing for a sender never heard from", async () => {
    const log: string[] = [];
    let finish = () => {};
    const held = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const { transport, deliver } = await started('callee', log, {
      async onRequest(payload) {
        log.push(`serve ${untext.decode(payload)}`);
        await held;
        return text.encode('ok');
      },
    });
    deliver(['t.presence', frame(Kind.HELLO, 0, 'peer', JSON.stringify(info('peer')))]);
    deliver(
      ['t.node.callee', frame(Kind.REQUEST, 1, 'peer', 'a')],
      ['t.node.callee', frame(Kind.REQUEST, 1, 'stranger', 'b')],
    );
    await turnEnd();
    assert.deepEqual(
      log.filter((l) => l.startsWith('serve')),
      ['serve a', 'serve b'],
    );
    assert.deepEqual(tables(transport).sort(), ['peer', 'stranger']);
    finish();
    await turnEnd();
    // Both calls ended: the peer's table waits for its next call, the stranger's is gone.
    assert.deepEqual(tables(transport), ['peer']);
    deliver(['t.presence', frame(Kind.BYE, 0, 'peer', '')]);
    await turnEnd();
    assert.deepEqual(tables(transport), []);
    await transport.stop();
  });
});

describe('bus transport: whose calls and inboxes', () => {
  it('an inbox token is one-to-one: ids that differ only in characters a bus cannot carry get their own', () => {
    const ids = [
      'c.1',
      'c_1',
      'c-1',
      'c 1',
      'заказы',
      'оплата',
      'a.b_c',
      'a_2e_b',
      '🙂',
      'é'.repeat(300),
      `${'é'.repeat(299)}è`,
    ];
    const tokens = ids.map(safeId);
    assert.equal(new Set(tokens).size, ids.length, tokens.join(' '));
    for (const t of tokens) {
      assert.match(t, /^[A-Za-z0-9_-]+$/);
      assert.ok(t.length <= 200, String(t.length));
    }
    // Ids already in the safe alphabet (the default ids) keep their subject.
    assert.equal(safeId('vm-21634-da36e6'), 'vm-21634-da36e6');
  });

  it("a caller restarted under its id, reusing a running call's id, gets its new call's answer, not the old one's", async () => {
    const log: string[] = [];
    const answers: Record<string, () => void> = {};
    const signals: Record<string, { aborted: boolean }> = {};
    const { transport, deliver } = await started('callee', log, {
      async onRequest(payload, _from, signal) {
        const what = untext.decode(payload);
        signals[what] = signal as unknown as { aborted: boolean };
        await new Promise<void>((resolve) => {
          answers[what] = resolve;
        });
        return text.encode(`answer to ${what}`);
      },
    });
    deliver(['t.presence', frame(Kind.HELLO, 0, 'caller', JSON.stringify(info('caller')))]);
    deliver(['t.node.callee', frame(Kind.REQUEST, 7, 'caller', 'old')]);
    await turnEnd();
    // The caller crashed and came back under its id; its first call reuses id 7.
    deliver(['t.node.callee', frame(Kind.REQUEST, 7, 'caller', 'new')]);
    await turnEnd();
    assert.equal(signals.old?.aborted, true, 'the old call is cancelled');
    answers.old?.();
    await turnEnd();
    await turnEnd();
    assert.deepEqual(
      log.filter((l) => l.startsWith('sent')),
      [],
      'the old call answers nothing',
    );
    answers.new?.();
    await turnEnd();
    await turnEnd();
    assert.deepEqual(
      log.filter((l) => l.startsWith('sent')),
      ['sent 1 replies'],
    );
    await transport.stop();
  });
});
