/**
 * @module transport/tcp
 * The native transport: `parley://host:port` names the hub, which keeps the registry and relays
 * notifications; calls go straight from node to node over one TCP connection per peer, many
 * requests in flight on it, frames batched per tick. A peer whose connection drops fails its
 * pending calls with UNAVAILABLE at once; the hub reports it gone to everyone.
 */
import { once } from 'node:events';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { ParleyError } from '../../errors.ts';
import { awaitReply, frameTooLarge } from '../pending.ts';
import {
  DEFAULT_MAX_PAYLOAD,
  type NodeInfo,
  type RequestOptions,
  type Transport,
  type TransportHandler,
} from '../transport.ts';
import { type Frame, FrameReader, FrameType, FrameWriter, PROTOCOL_VERSION } from './frames.ts';

export interface TcpTransportOptions {
  /** The hub, `parley://host:port`. */
  hub: string;
  /** Address this node listens on for calls. Default 127.0.0.1, any free port. */
  host?: string;
  port?: number;
  maxPayload?: number;
  /** Heartbeat to the hub, ms. Default 2 000 (the hub drops a node silent for 10 s). */
  heartbeatInterval?: number;
}

export interface TcpTransport extends Transport {
  /** Drops every connection at once, with no goodbye: what a crash looks like to the others. */
  destroy(): void;
}

interface Pending {
  conn: Conn;
  resolve(frame: Uint8Array): void;
  reject(error: unknown): void;
}

interface Conn {
  socket: Socket;
  writer: FrameWriter;
}

export function createTcpTransport(options: TcpTransportOptions): TcpTransport {
  return new TcpTransportImpl(options);
}

function parseHub(url: string): { host: string; port: number } {
  const m = /^parley:\/\/([^:/]+|\[[^\]]+\]):(\d+)\/?$/.exec(url);
  if (m === null) throw new ParleyError('INVALID_ARGUMENT', `hub URL must be parley://host:port, got ${url}`);
  return { host: (m[1] as string).replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}

class TcpTransportImpl implements TcpTransport {
  readonly maxPayload: number;
  private readonly hub: { host: string; port: number };
  private handler: TransportHandler | undefined;
  private self: NodeInfo | undefined;
  private server: Server | undefined;
  private address = '';
  private hubConn: Conn | undefined;
  private readonly peers = new Map<string, string>();
  private readonly conns = new Map<string, Conn>();
  private readonly accepted = new Set<Socket>();
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private heartbeat: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly options: TcpTransportOptions) {
    this.maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.hub = parseHub(options.hub);
  }

  async start(self: NodeInfo, handler: TransportHandler): Promise<void> {
    this.self = self;
    this.handler = handler;
    const host = this.options.host ?? '127.0.0.1';
    this.server = createServer((socket) => this.accept(socket));
    this.server.listen(this.options.port ?? 0, host);
    await once(this.server, 'listening');
    this.address = `${host}:${(this.server.address() as { port: number }).port}`;

    const socket = createConnection(this.hub);
    socket.setNoDelay(true);
    const conn: Conn = { socket, writer: new FrameWriter(socket) };
    this.hubConn = conn;
    let snapshot: () => void = () => undefined;
    const ready = new Promise<void>((resolve) => {
      snapshot = resolve;
    });
    const reader = new FrameReader(
      this.maxPayload,
      (frame) => {
        if (frame.type === FrameType.NodeUp) {
          const { info, address } = JSON.parse(frame.payload.toString('utf8')) as {
            info: NodeInfo;
            address: string;
          };
          this.peers.set(info.id, address);
          this.handler?.onNodeUp(info);
        } else if (frame.type === FrameType.NodeDown) {
          const { id } = JSON.parse(frame.payload.toString('utf8')) as { id: string };
          this.peers.delete(id);
          this.dropConn(id, `node ${id} left`);
          this.handler?.onNodeDown(id);
        } else if (frame.type === FrameType.Broadcast) {
          this.handler?.onBroadcast(frame.payload, '');
        } else if (frame.type === FrameType.Ping && frame.id === 1) {
          snapshot();
        }
      },
      () => socket.destroy(),
    );
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      // Without the hub this node knows no one: every peer is gone for it.
      if (this.stopped) return;
      for (const id of [...this.peers.keys()]) {
        this.peers.delete(id);
        this.handler?.onNodeDown(id);
      }
    });
    await once(socket, 'connect').catch((error: unknown) => {
      throw new ParleyError('UNAVAILABLE', `hub ${this.options.hub} is not reachable`, { cause: error });
    });
    this.hello(self);
    await ready;
    this.heartbeat = setInterval(
      () => conn.writer.send(FrameType.Ping, 0, Buffer.alloc(0)),
      this.options.heartbeatInterval ?? 2000,
    );
    this.heartbeat.unref();
  }

  private hello(info: NodeInfo): void {
    const payload = Buffer.from(JSON.stringify({ version: PROTOCOL_VERSION, info, address: this.address }));
    this.hubConn?.writer.send(FrameType.Hello, 0, payload);
  }

  async announce(self: NodeInfo): Promise<void> {
    this.self = self;
    this.hello(self);
  }

  /** A peer connected to call this node. */
  private accept(socket: Socket): void {
    this.accepted.add(socket);
    socket.setNoDelay(true);
    const writer = new FrameWriter(socket);
    const reader = new FrameReader(
      this.maxPayload,
      (frame: Frame) => {
        if (frame.type === FrameType.Request) {
          const handler = this.handler;
          if (handler === undefined) return;
          handler.onRequest(frame.payload, '').then(
            (reply) => writer.send(FrameType.Reply, frame.id, reply),
            (error: unknown) => {
              const wire = Buffer.from(JSON.stringify(ParleyError.from(error).toWire()));
              writer.send(FrameType.Failure, frame.id, wire);
            },
          );
        } else if (frame.type !== FrameType.Cancel) {
          socket.destroy(); // not a frame a caller sends
        }
      },
      () => socket.destroy(),
    );
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.accepted.delete(socket));
  }

  private connTo(nodeId: string, address: string): Conn {
    const existing = this.conns.get(nodeId);
    if (existing !== undefined) return existing;
    const at = address.lastIndexOf(':');
    const socket = createConnection({ host: address.slice(0, at), port: Number(address.slice(at + 1)) });
    socket.setNoDelay(true);
    const conn: Conn = { socket, writer: new FrameWriter(socket) };
    this.conns.set(nodeId, conn);
    const reader = new FrameReader(
      this.maxPayload,
      (frame) => {
        const p = this.pending.get(frame.id);
        if (p === undefined) return; // late, or cancelled
        this.pending.delete(frame.id);
        if (frame.type === FrameType.Reply) p.resolve(frame.payload);
        else if (frame.type === FrameType.Failure) {
          p.reject(ParleyError.fromWire(JSON.parse(frame.payload.toString('utf8'))));
        } else p.reject(new ParleyError('INTERNAL', `unexpected frame type ${frame.type} from ${nodeId}`));
      },
      () => socket.destroy(),
    );
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
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
    for (const [id, p] of this.pending) {
      if (p.conn !== conn) continue;
      this.pending.delete(id);
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
    // Ids wrap at 2^32 and skip 0.
    this.seq = this.seq >= 0xffffffff ? 1 : this.seq + 1;
    const id = this.seq;
    return awaitReply(
      options.signal,
      () => {
        if (this.pending.delete(id)) conn.writer.send(FrameType.Cancel, id, Buffer.alloc(0));
      },
      (reply) => {
        this.pending.set(id, { conn, ...reply });
        conn.writer.send(FrameType.Request, id, frame);
      },
    );
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
    for (const id of [...this.conns.keys()]) this.dropConn(id, 'this node stopped');
    this.hubConn?.socket.end();
    for (const s of this.accepted) s.end();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  destroy(): void {
    this.stopped = true;
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat);
    this.hubConn?.socket.destroy();
    for (const s of this.accepted) s.destroy();
    for (const c of this.conns.values()) c.socket.destroy();
    this.server?.close();
  }
}
