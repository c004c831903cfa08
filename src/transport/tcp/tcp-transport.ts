/**
 * @module transport/tcp
 * The native transport: `parley://host:port` names the hub, which keeps the registry and relays
 * notifications; calls go straight from node to node over one TCP connection per peer, many
 * requests in flight on it, frames batched per turn of the event loop. A peer whose connection
 * drops fails its pending calls with UNAVAILABLE at once; the hub reports it gone to everyone.
 * Every connection starts with a Hello frame carrying the protocol version (and the shared token,
 * when there is one); a connection that sends anything else first, a frame over the maximum, an
 * unknown frame type or another version is closed with a logged reason. When the hub connection
 * drops, the node forgets its peers and reconnects with backoff until it is stopped.
 * Backpressure: frames wait in the writer while the socket is full; a caller with `maxInFlight`
 * requests pending to one peer gets RESOURCE_EXHAUSTED; a node stops reading a connection (and
 * what its last read brought) while it is handling `maxConcurrent` requests from it.
 */
import { once } from 'node:events';
import type { Server, Socket } from 'node:net';
import { ParleyError } from '../../errors.ts';
import { backoffDelay } from '../../resilience/backoff.ts';
import { IdTable } from '../id-table.ts';
import { nodeInfoOf } from '../node-info.ts';
import { frameTooLarge, RequestAbort, worthTelling } from '../pending.ts';
import {
  DEFAULT_MAX_PAYLOAD,
  type NodeInfo,
  type RequestOptions,
  type Transport,
  type TransportHandler,
} from '../transport.ts';
import {
  type Frame,
  FrameReader,
  FrameType,
  FrameWriter,
  jsonObjectOf,
  PROTOCOL_VERSION,
  parseHubUrl,
  READ_GROUP,
} from './frames.ts';
import type { TcpTransportOptions } from './options.ts';
import { connect, listen } from './sockets.ts';

export type { TcpTransportOptions } from './options.ts';

export interface TcpTransport extends Transport {
  /** The broker URL the hub offered on welcome, if it has one (known after `start`). */
  readonly hubBroker: string | undefined;
  /** Drops every connection at once, with no goodbye: what a crash looks like to the others. */
  destroy(): void;
}

interface Pending {
  conn: Conn;
  resolve(frame: Uint8Array): void;
  reject(error: unknown): void;
  signal: RequestOptions['signal'];
  onAbort: (() => void) | undefined;
}

interface Conn {
  socket: Socket;
  writer: FrameWriter;
  /** Requests sent on it and not yet answered. */
  inFlight: number;
}

export function createTcpTransport(options: TcpTransportOptions): TcpTransport {
  return new TcpTransportImpl(options);
}

const defaultLog = (message: string) => process.stderr.write(`parley tcp: ${message}\n`);

class TcpTransportImpl implements TcpTransport {
  readonly maxPayload: number;
  private readonly hub: { host: string; port: number };
  private readonly log: (message: string) => void;
  private readonly maxInFlight: number;
  private readonly maxConcurrent: number;
  private readonly hello: Buffer;
  private handler: TransportHandler | undefined;
  private self: NodeInfo | undefined;
  private server: Server | undefined;
  private address = '';
  private hubConn: Conn | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectAttempt = 0;
  private readonly peers = new Map<string, string>();
  private readonly conns = new Map<string, Conn>();
  private readonly accepted = new Set<Socket>();
  private readonly pending = new IdTable<Pending>();
  private seq = 0;
  private heartbeat: NodeJS.Timeout | undefined;
  private stopped = false;
  /** What the hub said on welcome (its broker, when it has one). */
  hubBroker: string | undefined;

  constructor(private readonly options: TcpTransportOptions) {
    this.maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.hub = parseHubUrl(options.hub);
    this.log = options.log ?? defaultLog;
    this.maxInFlight = options.maxInFlight ?? 10_000;
    this.maxConcurrent = options.maxConcurrent ?? 1024;
    this.hello = Buffer.from(JSON.stringify({ version: PROTOCOL_VERSION, token: options.token }));
  }

  async start(self: NodeInfo, handler: TransportHandler): Promise<void> {
    this.self = self;
    this.handler = handler;
    const host = this.options.host?.trim() || '127.0.0.1';
    this.server = listen(this.options.tls, (socket) => this.accept(socket));
    this.server.on('tlsClientError', (error: Error, socket: Socket) => {
      this.log(
        `connection from ${socket.remoteAddress}:${socket.remotePort}: TLS handshake failed (${error.message})`,
      );
    });
    this.server.listen(this.options.port ?? 0, host);
    await once(this.server, 'listening');
    const port = (this.server.address() as { port: number }).port;
    this.address = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    try {
      await this.connectHub();
    } catch (error) {
      this.stopped = true;
      this.server.close();
      throw error;
    }
    this.heartbeat = setInterval(
      () => this.hubConn?.writer.send(FrameType.Ping, 0, EMPTY),
      this.options.heartbeatInterval ?? 2000,
    );
    this.heartbeat.unref();
  }

  /** Connects to the hub, says hello and resolves once the hub's snapshot of peers is complete. */
  private connectHub(): Promise<void> {
    const {
      socket,
      ready,
      welcomed: gotWelcome,
    } = connect(this.hub, this.options.tls, {
      log: this.log,
      ms: this.options.reconnect?.welcome,
    });
    socket.setNoDelay(true);
    const conn: Conn = { socket, writer: new FrameWriter(socket), inFlight: 0 };
    this.hubConn = conn;
    return new Promise<void>((resolve, reject) => {
      let welcomed = false;
      const reader = new FrameReader(
        this.maxPayload,
        (frame) =>
          this.fromHub(frame, () => {
            gotWelcome();
            welcomed = true;
            this.reconnectAttempt = 0;
            resolve();
          }),
        (reason) => {
          this.log(`hub sent ${reason}: closing the connection`);
          socket.destroy();
        },
      );
      socket.on('data', (chunk: Buffer) => reader.push(chunk));
      socket.on('error', (error) => {
        if (!welcomed) this.log(`hub ${this.options.hub}: ${error.message}`);
        socket.destroy();
      });
      socket.on(ready, () => this.sayHello());
      socket.on('close', () => {
        if (!welcomed) {
          reject(
            new ParleyError('UNAVAILABLE', `hub ${this.options.hub} is not reachable or refused this node`),
          );
        }
        if (this.stopped || this.hubConn !== conn) return;
        // Without the hub this node knows no one: every peer is gone for it, until it is back.
        for (const id of [...this.peers.keys()]) {
          this.peers.delete(id);
          this.handler?.onNodeDown(id);
        }
        if (welcomed) this.scheduleReconnect();
      });
    });
  }

  private scheduleReconnect(): void {
    if (this.stopped) return;
    this.reconnectAttempt += 1;
    const delay = backoffDelay(
      {
        initial: this.options.reconnect?.initial ?? 100,
        max: this.options.reconnect?.max ?? 5000,
        multiplier: 2,
      },
      this.reconnectAttempt,
    );
    if (this.reconnectAttempt === 1) this.log(`lost the hub ${this.options.hub}: reconnecting`);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.stopped) return;
      this.connectHub().then(
        () => this.log(`reconnected to the hub ${this.options.hub}`),
        () => this.scheduleReconnect(),
      );
    }, delay);
  }

  /**
   * A frame from the hub. One that does not parse, or a node-up without valid node info, is
   * logged and dropped: a hub of another version (or a bug) must not take this node down.
   */
  private fromHub(frame: Frame, welcome: () => void): void {
    if (frame.type === FrameType.Broadcast) {
      this.handler?.onBroadcast(frame.payload, '');
      return;
    }
    if (
      frame.type !== FrameType.NodeUp &&
      frame.type !== FrameType.NodeDown &&
      frame.type !== FrameType.Welcome
    )
      return;
    const body = jsonObjectOf(frame.payload);
    if (body === undefined) {
      this.log(`dropped a frame of type ${frame.type} from the hub: not a JSON object`);
      return;
    }
    if (frame.type === FrameType.NodeUp) {
      const info = nodeInfoOf(body.info);
      const address = body.address;
      if (typeof info === 'string' || typeof address !== 'string') {
        this.log(`dropped a node-up from the hub: ${typeof info === 'string' ? info : 'no address'}`);
        return;
      }
      const known = this.peers.get(info.id);
      // The same id at a new address is a restarted process: calls to the old one cannot finish.
      if (known !== undefined && known !== address) this.dropConn(info.id, `node ${info.id} restarted`);
      this.peers.set(info.id, address);
      this.handler?.onNodeUp(info);
    } else if (frame.type === FrameType.NodeDown) {
      const id = body.id;
      if (typeof id !== 'string') {
        this.log('dropped a node-down from the hub: no id');
        return;
      }
      this.peers.delete(id);
      this.dropConn(id, `node ${id} left`);
      this.handler?.onNodeDown(id);
    } else {
      this.hubBroker = typeof body.broker === 'string' ? body.broker : undefined;
      welcome();
    }
  }

  private sayHello(): void {
    const payload = Buffer.from(
      JSON.stringify({
        version: PROTOCOL_VERSION,
        token: this.options.token,
        info: this.self,
        address: this.address,
      }),
    );
    this.hubConn?.writer.send(FrameType.Hello, 0, payload);
  }

  async announce(self: NodeInfo): Promise<void> {
    this.self = self;
    this.sayHello();
  }

  /** A peer connected to call this node: it must say hello first. */
  private accept(socket: Socket): void {
    this.accepted.add(socket);
    socket.setNoDelay(true);
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    const writer = new FrameWriter(socket);
    const refuse = (why: string) => {
      this.log(`connection from ${peer}: ${why}: closing it`);
      reader.stop(); // the rest of the read is not handled either (it was: requests ran)
      socket.destroy();
    };
    let greeted = false;
    let inFlight = 0;
    // Requests being handled, by id: a Cancel frame, or the caller hanging up, aborts them.
    const running = new IdTable<RequestAbort>();
    let paused = false;
    // Answers the caller has not taken yet: past the bound, its requests wait too (a caller that
    // stopped reading made the node queue 246 MiB of replies).
    const unread = () => writer.backlogOver(this.maxPayload);
    const pause = () => {
      paused = true;
      socket.pause();
      reader.hold(); // what this read brought waits too
    };
    const resume = () => {
      if (!paused || inFlight > this.maxConcurrent >> 1 || unread()) return;
      paused = false;
      socket.resume();
      reader.release();
    };
    const settled = () => {
      inFlight -= 1;
      resume();
    };
    socket.on('drain', resume);
    const reader = new FrameReader(
      this.maxPayload,
      (frame: Frame) => {
        if (!greeted) {
          if (frame.type !== FrameType.Hello) return refuse(`frame type ${frame.type} before hello`);
          let hello: { version?: unknown; token?: unknown };
          try {
            hello = JSON.parse(frame.payload.toString('utf8')) as typeof hello;
          } catch {
            return refuse('hello is not JSON');
          }
          if (hello?.version !== PROTOCOL_VERSION) {
            return refuse(
              `protocol version ${String(hello?.version)} is not supported (${PROTOCOL_VERSION} is)`,
            );
          }
          if (this.options.token !== undefined && hello.token !== this.options.token)
            return refuse('wrong token');
          greeted = true;
          return;
        }
        if (frame.type === FrameType.Request) {
          const handler = this.handler;
          if (handler === undefined) return;
          inFlight += 1;
          if (inFlight >= this.maxConcurrent && !paused) pause();
          const id = frame.id;
          const signal = new RequestAbort();
          running.set(id, signal);
          handler.onRequest(frame.payload, '', signal).then(
            (reply) => {
              running.delete(id);
              settled();
              writer.send(FrameType.Reply, frame.id, reply);
              if (!paused && unread()) pause();
            },
            (error: unknown) => {
              running.delete(id);
              settled();
              const wire = Buffer.from(JSON.stringify(ParleyError.from(error).toWire()));
              writer.send(FrameType.Failure, frame.id, wire);
            },
          );
        } else if (frame.type === FrameType.Cancel) {
          running.get(frame.id)?.abort(new ParleyError('CANCELLED', 'the caller gave up on the call'));
        } else {
          refuse(`frame type ${frame.type} is not one a caller sends`);
        }
      },
      refuse,
      READ_GROUP,
    );
    reader.attach(socket);
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      this.accepted.delete(socket);
      // Nobody is left to answer: the handlers of this connection's calls are told.
      for (const signal of running.values())
        signal.abort(new ParleyError('CANCELLED', 'the caller disconnected'));
      running.clear();
    });
  }

  private connTo(nodeId: string, address: string): Conn {
    const existing = this.conns.get(nodeId);
    if (existing !== undefined) return existing;
    const at = address.lastIndexOf(':');
    const host = address.slice(0, at).replace(/^\[|\]$/g, '');
    const { socket } = connect({ host, port: Number(address.slice(at + 1)) }, this.options.tls);
    socket.setNoDelay(true);
    const conn: Conn = { socket, writer: new FrameWriter(socket), inFlight: 0 };
    conn.writer.send(FrameType.Hello, 0, this.hello);
    this.conns.set(nodeId, conn);
    const reader = new FrameReader(
      this.maxPayload,
      (frame) => {
        const p = this.pending.get(frame.id)?.conn === conn ? this.settle(frame.id) : undefined;
        if (p === undefined) return; // late, cancelled, or a call another peer was asked
        conn.inFlight--;
        if (frame.type === FrameType.Reply) p.resolve(frame.payload);
        else if (frame.type === FrameType.Failure) {
          // Unreadable: UNKNOWN, "malformed error on the wire" (the call still settles).
          p.reject(ParleyError.fromWire(jsonObjectOf(frame.payload)));
        } else p.reject(new ParleyError('INTERNAL', `unexpected frame type ${frame.type} from ${nodeId}`));
      },
      (reason) => {
        this.log(`node ${nodeId} sent ${reason}: closing the connection`);
        socket.destroy();
      },
      READ_GROUP,
    );
    reader.attach(socket);
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.dropConn(nodeId, `connection to ${nodeId} closed`, conn));
    return conn;
  }

  /** Fails every call waiting on the connection to `nodeId`. */
  private dropConn(nodeId: string, why: string, only?: Conn): void {
    const conn = this.conns.get(nodeId);
    if (conn === undefined || (only !== undefined && conn !== only)) return;
    this.conns.delete(nodeId);
    conn.socket.destroy();
    for (const [id, p] of this.pending.list()) {
      if (p.conn !== conn) continue;
      this.settle(id);
      p.reject(new ParleyError('UNAVAILABLE', `${why} before replying`));
    }
  }

  request(nodeId: string, frame: Uint8Array, options: RequestOptions = {}): Promise<Uint8Array> {
    if (this.stopped || this.self === undefined) {
      return Promise.reject(new ParleyError('UNAVAILABLE', 'transport is not started'));
    }
    if (frame.byteLength > this.maxPayload) {
      return Promise.reject(frameTooLarge(frame.byteLength, this.maxPayload));
    }
    const address = this.peers.get(nodeId);
    if (address === undefined)
      return Promise.reject(new ParleyError('UNAVAILABLE', `node ${nodeId} is not known`));
    if (options.signal?.aborted) return Promise.reject(options.signal.reason);
    const conn = this.connTo(nodeId, address);
    if (conn.inFlight >= this.maxInFlight) {
      return Promise.reject(
        new ParleyError('RESOURCE_EXHAUSTED', `${conn.inFlight} requests already in flight to ${nodeId}`),
      );
    }
    conn.inFlight++;
    this.seq = this.seq >= 0xffffffff ? 1 : this.seq + 1; // ids wrap at 2^32 and skip 0
    const id = this.seq;
    const signal = options.signal;
    return new Promise<Uint8Array>((resolve, reject) => {
      const p: Pending = { conn, resolve, reject, signal, onAbort: undefined };
      if (signal !== undefined) {
        p.onAbort = () => {
          if (!this.pending.delete(id)) return;
          conn.inFlight--;
          if (worthTelling(signal.reason)) conn.writer.send(FrameType.Cancel, id, EMPTY);
          reject(signal.reason);
        };
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.pending.set(id, p);
      conn.writer.send(FrameType.Request, id, frame);
    });
  }

  /** Takes request `id` off the pending list; undefined if it is not there (late, or cancelled). */
  private settle(id: number): Pending | undefined {
    const p = this.pending.take(id);
    if (p === undefined) return undefined;
    if (p.onAbort !== undefined) p.signal?.removeEventListener('abort', p.onAbort);
    return p;
  }

  broadcast(frame: Uint8Array): void {
    if (this.stopped || frame.byteLength > this.maxPayload) return;
    this.hubConn?.writer.send(FrameType.Broadcast, 0, frame);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    // Let queued replies leave first (the writers flush on the next tick).
    await new Promise((r) => setImmediate(r));
    this.stopped = true;
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat);
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    for (const id of [...this.conns.keys()]) this.dropConn(id, 'this node stopped');
    this.hubConn?.socket.end();
    // Closed once flushed, not when the peer closes its side: a half-open or hung peer held stop().
    for (const s of this.accepted) s.end(() => s.destroy());
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  destroy(): void {
    this.stopped = true;
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat);
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.hubConn?.socket.destroy();
    for (const s of this.accepted) s.destroy();
    for (const c of this.conns.values()) c.socket.destroy();
    this.server?.close();
  }
}

const EMPTY = Buffer.alloc(0);
