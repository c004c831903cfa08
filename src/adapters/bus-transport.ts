/**
 * @module adapters/bus-transport
 * A Parley transport over any publish/subscribe bus (NATS core, Redis pub/sub, MQTT, an AMQP
 * exchange): the bus moves messages by subject; this module adds everything else a transport
 * owes the runtime, once for every adapter.
 *
 * Subjects, under a prefix (default `parley`):
 * - `<prefix>.node.<id>`: requests, replies and cancels for one node (its inbox);
 * - `<prefix>.presence`: who is here (hello with the node's info, also the heartbeat), who left
 *   (bye), and who-is-there (everyone answers with hello);
 * - `<prefix>.broadcast`: notifications.
 *
 * Messages are frames `[u8 kind][u32 id][u8 from length][from][payload]`, or batches of them:
 * the frames one turn of the event loop sends to one subject after its first leave together
 * (`bus-frames.ts`). Anything that does not parse (anyone can publish on a shared bus) is logged
 * and dropped; a request over `maxPayload` is refused before it leaves (RESOURCE_EXHAUSTED), and
 * so is one that arrives over it. A bus whose server says how large a message it takes
 * (`Bus.maxMessage`: MQTT's Maximum Packet Size, NATS's `max_payload`, Redis's
 * `proto-max-bulk-len`) lowers `maxPayload` and the batches to fit it, with a log line: a larger
 * message would be refused by the server (MQTT and Redis end the connection), so a call over it
 * fails at once instead of at its deadline, and small frames are never batched into a message the
 * server refuses. The limit is read again whenever `maxPayload` is (every request and reply): a
 * server that comes back from a restart with another limit (MQTT's CONNACK, NATS's INFO) is
 * followed, down or back up to `maxPayload` as configured.
 *
 * Discovery is by heartbeat: a node says hello every `heartbeatMs` (default 2 s); a peer not heard
 * for `heartbeatTimeoutMs` (default 10 s) is gone, and calls in flight to it fail with
 * UNAVAILABLE. A node that stops says bye, so its peers know at once.
 */
import { createHash, randomInt } from 'node:crypto';
import { ParleyError } from '../errors.ts';
import { IdTable } from '../transport/id-table.ts';
import { nodeInfoOf } from '../transport/node-info.ts';
import { frameTooLarge, RequestAbort, worthTelling } from '../transport/pending.ts';
import type {
  NodeInfo,
  RequestOptions,
  RequestSignal,
  Transport,
  TransportHandler,
} from '../transport/transport.ts';
import type { Bus, BusTransportOptions } from './bus.ts';
import { type BusMessage, decodeMessage, FrameWriter, Kind } from './bus-frames.ts';
import { type Reader, ReadQueue } from './read-queue.ts';

export type { Bus, BusTransportOptions } from './bus.ts';

const { REQUEST, REPLY, FAILURE, CANCEL, HELLO, BYE, WHO, BROADCAST } = Kind;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const EMPTY = new Uint8Array(0);
/** Largest batch of frames in one bus message (see `bus-frames.ts`). */
const BATCH_BYTES = 64 * 1024;
/**
 * Frames after which a batch leaves without waiting for the end of the turn: 64 calls in flight
 * move as two batches, so each side works on one while the other is on its way or being worked
 * on. Four batches of 16 cost more in per-message work (in the bus server most) than the overlap
 * gave back (see `read-queue.ts`).
 */
const BATCH_FRAMES = 32;
/** The most a message adds to the frames it carries: the batch header and the sender id (≤ 255 bytes). */
const MESSAGE_ROOM = 262;
/** Marks a frame writer subject as a bus reply address (no subject starts with NUL). */
const REPLY_ROUTE = '\u0000reply:';

interface Peer {
  info: NodeInfo;
  lastHeard: number;
}

interface Pending {
  target: string;
  resolve: (reply: Uint8Array) => void;
  reject: (error: unknown) => void;
  signal: RequestSignal | undefined;
  onAbort: (() => void) | undefined;
}

/**
 * A node id as the token of its inbox subject: valid on every bus, and one-to-one. Letters,
 * digits and `-` stay; any other character (`_` included) becomes `_<code point in hex>_`; a
 * result over 200 characters is cut and ends with a hash of the id. Until 2026-12-03 every such
 * character became `_`, so `c.1` and `c_1` (or any two Cyrillic ids of one length) shared an
 * inbox: each served the other's requests, and on NATS and Redis took the other's replies.
 */
export function safeId(id: string): string {
  if (/^[A-Za-z0-9-]*$/.test(id)) return id;
  const token = id.replace(/[^A-Za-z0-9-]/gu, (c) => `_${(c.codePointAt(0) as number).toString(16)}_`);
  if (token.length <= 200) return token;
  return `${token.slice(0, 150)}_${createHash('sha256').update(id).digest('hex').slice(0, 32)}`;
}

export class BusTransport implements Transport {
  /** The largest frame received (`options.maxPayload`): what arrives is bounded by the server. */
  private readonly accepted: number;
  /** The largest frame sent: `accepted`, lowered to what the server takes. */
  private limit: number;
  /** The server's limit `limit` was last fitted to (`Bus.maxMessage`). */
  private serverMax: number | undefined;
  private readonly prefix: string;
  /** Subjects that start with it are nodes' inboxes. */
  private readonly inboxPrefix: string;
  private readonly heartbeatMs: number;
  private readonly heartbeatTimeoutMs: number;
  private readonly log: (message: string) => void;
  private self: NodeInfo | undefined;
  private selfBytes = new Uint8Array(0);
  private handler: TransportHandler | undefined;
  private readonly peers = new Map<string, Peer>();
  private readonly pending = new IdTable<Pending>();
  /** Requests being served, by caller and request id (a cancel names both). */
  private readonly running = new Map<string, IdTable<RequestAbort>>();
  /** Inbox subjects by node id, made once per peer. */
  private readonly inboxes = new Map<string, string>();
  /**
   * From a random start: a caller restarted under the same id (a pod's name) must not reuse the
   * ids of calls its previous run left running, whose replies would answer its new ones.
   */
  private nextId = randomInt(1, 0x7fffffff);
  /** Reads what the bus hands over, a socket read's messages one after another (`read-queue.ts`). */
  private readonly reads: ReadQueue;
  private unsubscribe: (() => void)[] = [];
  private heartbeat: NodeJS.Timeout | undefined;
  private stopped = false;
  private bus: Bus | undefined;
  private readonly out: FrameWriter;

  /** `connect` is called once, by `start` (drivers load and connect there, not before). */
  constructor(
    private readonly connect: () => Promise<Bus>,
    options: BusTransportOptions = {},
  ) {
    this.prefix = options.prefix ?? 'parley';
    this.inboxPrefix = `${this.prefix}.node.`;
    this.accepted = options.maxPayload ?? 1024 * 1024 - 1024;
    this.limit = this.accepted;
    this.heartbeatMs = options.heartbeatMs ?? 2000;
    this.heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? 10_000;
    this.log = options.log ?? ((m) => process.stderr.write(`parley bus: ${m}\n`));
    this.reads = new ReadQueue(this.log);
    this.out = new FrameWriter(
      (subject, message) => this.publish(subject, message),
      Math.min(BATCH_BYTES, this.limit),
      BATCH_FRAMES,
    );
  }

  /** The largest frame this transport sends (requests, replies, notifications). */
  get maxPayload(): number {
    const server = this.bus?.maxMessage;
    if (server !== undefined && server !== this.serverMax) this.fitServer(server);
    return this.limit;
  }

  private inbox(nodeId: string): string {
    let subject = this.inboxes.get(nodeId);
    if (subject === undefined) {
      subject = `${this.inboxPrefix}${safeId(nodeId)}`;
      if (this.inboxes.size >= 10_000) this.inboxes.clear(); // ids from garbage on the bus stay bounded
      this.inboxes.set(nodeId, subject);
    }
    return subject;
  }

  async start(self: NodeInfo, handler: TransportHandler): Promise<void> {
    this.self = self;
    this.selfBytes = encoder.encode(self.id);
    if (this.selfBytes.byteLength > 255) throw new ParleyError('INVALID_ARGUMENT', 'node id over 255 bytes');
    this.out.setSender(this.selfBytes);
    this.handler = handler;
    const bus = await this.connect();
    this.bus = bus;
    if (bus.maxMessage !== undefined) this.fitServer(bus.maxMessage);
    if (bus.replies !== undefined) {
      this.unsubscribe.push(await bus.replies.listen((m) => this.reads.arrive(this.onInbox, m, undefined)));
    }
    this.unsubscribe.push(
      await bus.subscribe(this.inbox(self.id), (m, replyTo) => this.reads.arrive(this.onInbox, m, replyTo)),
    );
    this.unsubscribe.push(
      await bus.subscribe(`${this.prefix}.presence`, (m) => this.reads.arrive(this.onPresence, m, undefined)),
    );
    this.unsubscribe.push(await bus.subscribe(`${this.prefix}.broadcast`, (m) => this.onBroadcast(m)));
    this.hello();
    this.send(`${this.prefix}.presence`, WHO, 0, new Uint8Array(0));
    this.heartbeat = setInterval(() => this.tick(), this.heartbeatMs);
    this.heartbeat.unref();
  }

  /**
   * Fits the frames sent to what the server takes (`maxMessage`, which it said at start or at its
   * last reconnect): never above `accepted`, the configured `maxPayload`.
   */
  private fitServer(maxMessage: number): void {
    this.serverMax = maxMessage;
    const fit = Math.min(this.accepted, Math.max(0, maxMessage - MESSAGE_ROOM));
    if (fit === this.limit) return;
    this.log(
      `the server takes messages up to ${maxMessage} bytes: maxPayload ${fit < this.limit ? 'lowered' : 'raised'} from ${this.limit} to ${fit}`,
    );
    this.limit = fit;
    this.out.setMaxBatchBytes(Math.min(BATCH_BYTES, fit));
  }

  async announce(self: NodeInfo): Promise<void> {
    this.self = self;
    this.hello();
  }

  request(nodeId: string, frame: Uint8Array, options: RequestOptions = {}): Promise<Uint8Array> {
    if (this.stopped) return Promise.reject(new ParleyError('UNAVAILABLE', 'the transport is stopped'));
    if (frame.byteLength > this.maxPayload)
      return Promise.reject(frameTooLarge(frame.byteLength, this.maxPayload));
    if (!this.peers.has(nodeId))
      return Promise.reject(new ParleyError('UNAVAILABLE', `node ${nodeId} is not known`));
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = this.nextId;
    this.nextId = this.nextId === 0xffffffff ? 1 : this.nextId + 1;
    return new Promise<Uint8Array>((resolve, reject) => {
      const p: Pending = { target: nodeId, resolve, reject, signal, onAbort: undefined };
      if (signal !== undefined) {
        p.onAbort = () => {
          if (!this.pending.delete(id)) return;
          if (worthTelling(signal.reason)) this.send(this.inbox(nodeId), CANCEL, id, EMPTY);
          reject(signal.reason);
        };
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.pending.set(id, p);
      this.send(this.inbox(nodeId), REQUEST, id, frame);
    });
  }

  /** Takes request `id` off the pending list when `from` is its callee; undefined otherwise. */
  private settle(id: number, from: string): Pending | undefined {
    const p = this.pending.get(id);
    if (p === undefined || p.target !== from) return undefined; // late, cancelled, or not the callee
    this.pending.delete(id);
    if (p.onAbort !== undefined) p.signal?.removeEventListener('abort', p.onAbort);
    return p;
  }

  broadcast(frame: Uint8Array): void {
    if (this.stopped || frame.byteLength > this.maxPayload) return;
    this.send(`${this.prefix}.broadcast`, BROADCAST, 0, frame);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.self !== undefined) this.send(`${this.prefix}.presence`, BYE, 0, new Uint8Array(0));
    this.out.flush(); // the bye, and replies already made, go before the connection closes
    this.shutdown('the transport stopped');
    await this.bus?.close();
  }

  /** Gone without a word, as in a crash: peers find out by the missing heartbeat. */
  destroy(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.out.clear();
    this.shutdown('the transport was destroyed');
    this.bus?.destroy();
  }

  private shutdown(why: string): void {
    clearInterval(this.heartbeat);
    this.reads.clear(); // unread, as if they had come after the stop
    for (const u of this.unsubscribe.splice(0)) u();
    for (const [id, p] of this.pending.list())
      this.settle(id, p.target)?.reject(new ParleyError('UNAVAILABLE', why));
    for (const [from, calls] of this.running) {
      this.running.delete(from);
      for (const signal of calls.values()) signal.abort(new ParleyError('CANCELLED', why));
    }
  }

  private send(subject: string, kind: number, id: number, payload: Uint8Array): void {
    if (this.bus !== undefined) this.out.send(subject, kind, id, payload);
  }

  /**
   * What the frame writer flushes, routed by its subject key: a reply address (`REPLY_ROUTE`
   * first), a request to an inbox (marked with this node's reply address where the bus has one),
   * or anything else, published as it is.
   */
  private publish(subject: string, message: Uint8Array): void {
    const bus = this.bus;
    try {
      if (bus === undefined) return;
      if (bus.replies === undefined) bus.publish(subject, message);
      else if (subject.startsWith(REPLY_ROUTE)) bus.replies.reply(subject.slice(REPLY_ROUTE.length), message);
      else if (subject.startsWith(this.inboxPrefix)) bus.replies.request(subject, message);
      else bus.publish(subject, message);
    } catch (error) {
      // A bus that lost its connection: the caller's pending entry fails at its deadline or when
      // the peer is declared gone; a reply lost here is the caller's timeout.
      this.log(`publish on ${subject} failed: ${ParleyError.from(error).message}`);
    }
  }

  private hello(): void {
    if (this.self === undefined || this.stopped) return;
    this.send(`${this.prefix}.presence`, HELLO, 0, encoder.encode(JSON.stringify(this.self)));
  }

  private tick(): void {
    this.hello();
    const now = Date.now();
    for (const [id, peer] of this.peers) {
      if (now - peer.lastHeard > this.heartbeatTimeoutMs) this.drop(id, `node ${id} stopped answering`);
    }
  }

  private drop(nodeId: string, why: string): void {
    if (!this.peers.delete(nodeId)) return;
    this.inboxes.delete(nodeId);
    for (const [id, p] of this.pending.list()) {
      if (p.target === nodeId) this.settle(id, nodeId)?.reject(new ParleyError('UNAVAILABLE', why));
    }
    const calls = this.running.get(nodeId);
    this.running.delete(nodeId);
    for (const signal of calls?.values() ?? [])
      signal.abort(new ParleyError('CANCELLED', 'the caller is gone'));
    this.handler?.onNodeDown(nodeId);
  }

  /** The frames of a message; logged and dropped (undefined) when it does not parse. */
  private parse(message: Uint8Array, where: string): BusMessage[] | undefined {
    if (message.byteLength > this.accepted + MESSAGE_ROOM) {
      this.log(`dropped a message of ${message.byteLength} bytes on ${where}: over the maximum`);
      return undefined;
    }
    const m = decodeMessage(message);
    if (typeof m === 'string') {
      this.log(`dropped ${m} on ${where}`);
      return undefined;
    }
    return m;
  }

  private readonly onPresence: Reader = (message) => {
    for (const m of this.parse(message, 'presence') ?? []) this.presence(m);
  };

  private presence(m: BusMessage): void {
    if (this.self === undefined || m.from === this.self.id) return;
    if (m.kind === WHO) this.hello();
    else if (m.kind === BYE) this.drop(m.from, `node ${m.from} left`);
    else if (m.kind === HELLO) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(decoder.decode(m.payload));
      } catch {
        this.log(`dropped a hello from ${m.from}: not JSON`);
        return;
      }
      const info = nodeInfoOf(parsed);
      if (typeof info === 'string' || info.id !== m.from) {
        const why = typeof info === 'string' ? info : `it names node ${info.id}`;
        this.log(`dropped a hello from ${m.from}: ${why}`);
        return;
      }
      const known = this.peers.get(m.from);
      const changed = known === undefined || JSON.stringify(known.info) !== JSON.stringify(info);
      this.peers.set(m.from, { info, lastHeard: Date.now() });
      if (changed) this.handler?.onNodeUp(info);
    } else this.log(`dropped a message of kind ${m.kind} on presence`);
  }

  private onBroadcast(message: Uint8Array): void {
    const frames = this.parse(message, 'broadcast');
    if (frames === undefined || frames[0]?.from === this.self?.id) return;
    for (const m of frames) {
      if (m.kind === BROADCAST) this.handler?.onBroadcast(m.payload, m.from);
      else this.log(`dropped a message of kind ${m.kind} on broadcast`);
    }
  }

  private readonly onInbox: Reader = (message, replyTo) => {
    for (const m of this.parse(message, 'inbox') ?? []) this.inboxFrame(m, replyTo);
  };

  private inboxFrame(m: BusMessage, replyTo: string | undefined): void {
    if (m.kind === REPLY) this.settle(m.id, m.from)?.resolve(m.payload);
    else if (m.kind === FAILURE) {
      const p = this.settle(m.id, m.from);
      if (p === undefined) return;
      let wire: unknown;
      try {
        wire = JSON.parse(decoder.decode(m.payload));
      } catch {
        wire = { code: 'UNKNOWN', message: 'an unreadable failure' };
      }
      p.reject(ParleyError.fromWire(wire));
    } else if (m.kind === REQUEST) this.serve(m, this.replyRoute(m.from, replyTo));
    else if (m.kind === CANCEL) {
      this.running
        .get(m.from)
        ?.get(m.id)
        ?.abort(new ParleyError('CANCELLED', 'the caller gave up on the call'));
    } else this.log(`dropped a message of kind ${m.kind} in the inbox`);
  }

  /** Where replies to `from` go: the reply address its request carried, else its inbox. */
  private replyRoute(from: string, replyTo: string | undefined): string {
    return replyTo !== undefined && this.bus?.replies !== undefined
      ? REPLY_ROUTE + replyTo
      : this.inbox(from);
  }

  private serve(m: BusMessage, route: string): void {
    const handler = this.handler;
    if (handler === undefined || this.stopped) return;
    const { from, id } = m;
    if (m.payload.byteLength > this.accepted) {
      this.fail(route, id, frameTooLarge(m.payload.byteLength, this.accepted));
      return;
    }
    let calls = this.running.get(from);
    if (calls === undefined) {
      calls = new IdTable();
      this.running.set(from, calls);
    }
    const signal = new RequestAbort();
    // The same caller and id while a call runs: the caller restarted and counts from where its
    // last run did. The old call is cancelled, and its answer goes nowhere (the new call's would).
    calls.get(id)?.abort(new ParleyError('CANCELLED', 'the caller restarted'));
    calls.set(id, signal);
    handler.onRequest(m.payload, from, signal as RequestSignal).then(
      (reply) => {
        if (!this.done(from, id, signal)) return;
        if (reply.byteLength > this.maxPayload)
          this.fail(route, id, frameTooLarge(reply.byteLength, this.maxPayload));
        else this.send(route, REPLY, id, reply);
      },
      (error: unknown) => {
        if (this.done(from, id, signal)) this.fail(route, id, error);
      },
    );
  }

  /** The call `signal` of `from` ended; false when a newer call with its id replaced it. */
  private done(from: string, id: number, signal: RequestAbort): boolean {
    const calls = this.running.get(from);
    if (calls === undefined) return true;
    if (calls.get(id) !== signal) return false;
    calls.delete(id);
    // A peer's table stays until the peer goes (drop): one call after another would otherwise
    // make and drop it each time. A sender that never said hello keeps nothing.
    if (calls.size === 0 && !this.peers.has(from)) this.running.delete(from);
    return true;
  }

  private fail(route: string, id: number, error: unknown): void {
    const wire = encoder.encode(JSON.stringify(ParleyError.from(error).toWire()));
    this.send(route, FAILURE, id, wire);
  }
}
