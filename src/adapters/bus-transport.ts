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
 * Every message is `[u8 kind][u32 id][u8 from length][from][payload]`. Anything that does not
 * parse (anyone can publish on a shared bus) is logged and dropped; a request over `maxPayload`
 * is refused before it leaves (RESOURCE_EXHAUSTED), and so is one that arrives over it.
 *
 * Discovery is by heartbeat: a node says hello every `heartbeatMs` (default 2 s); a peer not heard
 * for `heartbeatTimeoutMs` (default 10 s) is gone, and calls in flight to it fail with
 * UNAVAILABLE. A node that stops says bye, so its peers know at once.
 */
import { ParleyError } from '../errors.ts';
import {
  awaitReply,
  frameTooLarge,
  type PendingReply,
  RequestAbort,
  worthTelling,
} from '../transport/pending.ts';
import type {
  NodeInfo,
  RequestOptions,
  RequestSignal,
  Transport,
  TransportHandler,
} from '../transport/transport.ts';
import { TurnBatch } from './driver.ts';

/** What an adapter provides: subjects in, subjects out. */
export interface Bus {
  /** Fire and forget; order per subject from one publisher is kept by every bus used here. */
  publish(subject: string, message: Uint8Array): void;
  /** Resolves when the subscription is live; the returned function ends it. */
  subscribe(subject: string, onMessage: (message: Uint8Array) => void): Promise<() => void>;
  /** Drains what was published, then disconnects. */
  close(): Promise<void>;
  /** Disconnects at once, without a word (a crash, for tests). */
  destroy(): void;
}

export interface BusTransportOptions {
  /** Subject prefix: nodes with different prefixes do not see each other. Default `parley`. */
  prefix?: string;
  /** Largest frame (request or reply) this transport sends or accepts. Default 1 MiB − 1 KiB. */
  maxPayload?: number;
  heartbeatMs?: number;
  heartbeatTimeoutMs?: number;
  log?: (message: string) => void;
}

const REQUEST = 1;
const REPLY = 2;
const FAILURE = 3;
const CANCEL = 4;
const HELLO = 5;
const BYE = 6;
const WHO = 7;
const BROADCAST = 8;

interface Message {
  kind: number;
  id: number;
  from: string;
  payload: Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function encode(kind: number, id: number, from: Uint8Array, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(6 + from.byteLength + payload.byteLength);
  const view = new DataView(out.buffer);
  out[0] = kind;
  view.setUint32(1, id);
  out[5] = from.byteLength;
  out.set(from, 6);
  out.set(payload, 6 + from.byteLength);
  return out;
}

function decode(message: Uint8Array): Message | string {
  if (message.byteLength < 6) return `a message of ${message.byteLength} bytes`;
  const kind = message[0] as number;
  if (kind < REQUEST || kind > BROADCAST) return `an unknown message kind ${kind}`;
  const fromLength = message[5] as number;
  if (message.byteLength < 6 + fromLength) return 'a message cut short';
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  return {
    kind,
    id: view.getUint32(1),
    from: decoder.decode(message.subarray(6, 6 + fromLength)),
    payload: message.subarray(6 + fromLength),
  };
}

interface Peer {
  info: NodeInfo;
  lastHeard: number;
}

interface Pending {
  target: string;
  reply: PendingReply;
}

/** Per-node inbox subjects must be valid on every bus: ids keep to a safe alphabet. */
function safeId(id: string): string {
  return id.replace(/[^A-Za-z0-9_-]/g, '_');
}

export class BusTransport implements Transport {
  readonly maxPayload: number;
  private readonly prefix: string;
  private readonly heartbeatMs: number;
  private readonly heartbeatTimeoutMs: number;
  private readonly log: (message: string) => void;
  private self: NodeInfo | undefined;
  private selfBytes = new Uint8Array(0);
  private handler: TransportHandler | undefined;
  private readonly peers = new Map<string, Peer>();
  private readonly pending = new Map<number, Pending>();
  private readonly running = new Map<string, RequestAbort>();
  private nextId = 1;
  private unsubscribe: (() => void)[] = [];
  private heartbeat: NodeJS.Timeout | undefined;
  private stopped = false;
  private bus: Bus | undefined;
  private readonly out = new TurnBatch();

  /** `connect` is called once, by `start` (drivers load and connect there, not before). */
  constructor(
    private readonly connect: () => Promise<Bus>,
    options: BusTransportOptions = {},
  ) {
    this.prefix = options.prefix ?? 'parley';
    this.maxPayload = options.maxPayload ?? 1024 * 1024 - 1024;
    this.heartbeatMs = options.heartbeatMs ?? 2000;
    this.heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? 10_000;
    this.log = options.log ?? ((m) => process.stderr.write(`parley bus: ${m}\n`));
  }

  private inbox(nodeId: string): string {
    return `${this.prefix}.node.${safeId(nodeId)}`;
  }

  async start(self: NodeInfo, handler: TransportHandler): Promise<void> {
    this.self = self;
    this.selfBytes = encoder.encode(self.id);
    if (this.selfBytes.byteLength > 255) throw new ParleyError('INVALID_ARGUMENT', 'node id over 255 bytes');
    this.handler = handler;
    const bus = await this.connect();
    this.bus = bus;
    this.unsubscribe.push(await bus.subscribe(this.inbox(self.id), (m) => this.onInbox(m)));
    this.unsubscribe.push(await bus.subscribe(`${this.prefix}.presence`, (m) => this.onPresence(m)));
    this.unsubscribe.push(await bus.subscribe(`${this.prefix}.broadcast`, (m) => this.onBroadcast(m)));
    this.hello();
    this.send(`${this.prefix}.presence`, WHO, 0, new Uint8Array(0));
    this.heartbeat = setInterval(() => this.tick(), this.heartbeatMs);
    this.heartbeat.unref();
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
    const id = this.nextId;
    this.nextId = this.nextId === 0xffffffff ? 1 : this.nextId + 1;
    const signal = options.signal;
    return awaitReply(
      signal,
      () => {
        this.pending.delete(id);
        if (worthTelling(signal?.reason)) this.send(this.inbox(nodeId), CANCEL, id, new Uint8Array(0));
      },
      (reply) => {
        this.pending.set(id, { target: nodeId, reply });
        this.send(this.inbox(nodeId), REQUEST, id, frame);
      },
    );
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
    for (const u of this.unsubscribe.splice(0)) u();
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reply.reject(new ParleyError('UNAVAILABLE', why));
    }
    for (const [key, signal] of this.running) {
      this.running.delete(key);
      signal.abort(new ParleyError('CANCELLED', why));
    }
  }

  private send(subject: string, kind: number, id: number, payload: Uint8Array): void {
    const bus = this.bus;
    if (bus === undefined) return;
    const message = encode(kind, id, this.selfBytes, payload);
    // Notifications, which a publisher sends one after another without waiting for anyone, go
    // with the rest of the turn's: one write to the server for all of them. Requests and replies
    // go at once (a caller waits for each; the client's own coalescing is enough for them).
    if (kind === BROADCAST) this.out.later(() => this.publish(bus, subject, message));
    else this.publish(bus, subject, message);
  }

  private publish(bus: Bus, subject: string, message: Uint8Array): void {
    try {
      bus.publish(subject, message);
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
    for (const [id, p] of this.pending) {
      if (p.target !== nodeId) continue;
      this.pending.delete(id);
      p.reply.reject(new ParleyError('UNAVAILABLE', why));
    }
    for (const [key, signal] of this.running) {
      if (!key.startsWith(`${nodeId}\u0000`)) continue;
      this.running.delete(key);
      signal.abort(new ParleyError('CANCELLED', 'the caller is gone'));
    }
    this.handler?.onNodeDown(nodeId);
  }

  private parse(message: Uint8Array, where: string): Message | undefined {
    if (message.byteLength > this.maxPayload + 262) {
      this.log(`dropped a message of ${message.byteLength} bytes on ${where}: over the maximum`);
      return undefined;
    }
    const m = decode(message);
    if (typeof m === 'string') {
      this.log(`dropped ${m} on ${where}`);
      return undefined;
    }
    return m;
  }

  private onPresence(message: Uint8Array): void {
    const m = this.parse(message, 'presence');
    if (m === undefined || this.self === undefined || m.from === this.self.id) return;
    if (m.kind === WHO) this.hello();
    else if (m.kind === BYE) this.drop(m.from, `node ${m.from} left`);
    else if (m.kind === HELLO) {
      let info: NodeInfo;
      try {
        info = JSON.parse(decoder.decode(m.payload)) as NodeInfo;
        if (
          typeof info !== 'object' ||
          info === null ||
          info.id !== m.from ||
          !Array.isArray(info.services)
        ) {
          throw new Error('not node info');
        }
      } catch {
        this.log(`dropped a hello from ${m.from}: not valid node info`);
        return;
      }
      const known = this.peers.get(m.from);
      const changed = known === undefined || JSON.stringify(known.info) !== JSON.stringify(info);
      this.peers.set(m.from, { info, lastHeard: Date.now() });
      if (changed) this.handler?.onNodeUp(info);
    } else this.log(`dropped a message of kind ${m.kind} on presence`);
  }

  private onBroadcast(message: Uint8Array): void {
    const m = this.parse(message, 'broadcast');
    if (m === undefined || m.from === this.self?.id) return;
    if (m.kind === BROADCAST) this.handler?.onBroadcast(m.payload, m.from);
    else this.log(`dropped a message of kind ${m.kind} on broadcast`);
  }

  private onInbox(message: Uint8Array): void {
    const m = this.parse(message, 'inbox');
    if (m === undefined) return;
    if (m.kind === REPLY || m.kind === FAILURE) {
      const p = this.pending.get(m.id);
      if (p === undefined || p.target !== m.from) return; // late, cancelled, or not from the callee
      this.pending.delete(m.id);
      if (m.kind === REPLY) p.reply.resolve(m.payload);
      else {
        let wire: unknown;
        try {
          wire = JSON.parse(decoder.decode(m.payload));
        } catch {
          wire = { code: 'UNKNOWN', message: 'an unreadable failure' };
        }
        p.reply.reject(ParleyError.fromWire(wire));
      }
    } else if (m.kind === REQUEST) this.serve(m);
    else if (m.kind === CANCEL) {
      this.running
        .get(`${m.from}\u0000${m.id}`)
        ?.abort(new ParleyError('CANCELLED', 'the caller gave up on the call'));
    } else this.log(`dropped a message of kind ${m.kind} in the inbox`);
  }

  private serve(m: Message): void {
    const handler = this.handler;
    if (handler === undefined || this.stopped) return;
    const replyTo = this.inbox(m.from);
    const fail = (error: unknown) => {
      const wire = encoder.encode(JSON.stringify(ParleyError.from(error).toWire()));
      this.send(replyTo, FAILURE, m.id, wire);
    };
    if (m.payload.byteLength > this.maxPayload) {
      fail(frameTooLarge(m.payload.byteLength, this.maxPayload));
      return;
    }
    const key = `${m.from}\u0000${m.id}`;
    const signal = new RequestAbort();
    this.running.set(key, signal);
    handler.onRequest(m.payload, m.from, signal as RequestSignal).then(
      (reply) => {
        this.running.delete(key);
        if (reply.byteLength > this.maxPayload) fail(frameTooLarge(reply.byteLength, this.maxPayload));
        else this.send(replyTo, REPLY, m.id, reply);
      },
      (error: unknown) => {
        this.running.delete(key);
        fail(error);
      },
    );
  }
}
