/**
 * @module hub
 * The single-machine server: the registry of nodes, reachable over TCP. Nodes say hello with their
 * info and the address where they take calls; the hub tells every node about the others as they
 * come, change and go, and relays notifications. Calls never pass through the hub: nodes connect
 * to each other directly. A node whose connection drops, or that stays silent past the heartbeat
 * bound, is gone for everyone.
 */
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import {
  type Frame,
  FrameReader,
  FrameType,
  FrameWriter,
  PROTOCOL_VERSION,
} from '../transport/tcp/frames.ts';
import { DEFAULT_MAX_PAYLOAD, type NodeInfo } from '../transport/transport.ts';

export interface HubOptions {
  host?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  maxPayload?: number;
  /** A node silent for this long is dropped, ms. Default 10 000. */
  heartbeatTimeout?: number;
  /** Where the hub reports what it does (connections refused, nodes dropped). */
  log?: (message: string) => void;
}

export interface Hub {
  /** `parley://host:port`, what nodes are given as `PARLEY_TRANSPORT`. */
  readonly url: string;
  readonly port: number;
  /** Node ids currently registered. */
  nodes(): string[];
  close(): Promise<void>;
}

interface Member {
  info: NodeInfo;
  address: string;
  writer: FrameWriter;
  socket: Socket;
  lastSeen: number;
}

export async function createHub(options: HubOptions = {}): Promise<Hub> {
  const host = options.host ?? '127.0.0.1';
  const maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
  const heartbeatTimeout = options.heartbeatTimeout ?? 10_000;
  const log = options.log ?? (() => undefined);
  const members = new Map<string, Member>();
  const sockets = new Set<Socket>();

  const others = (id: string) => [...members.values()].filter((m) => m.info.id !== id);
  const down = (id: string, socket: Socket) => {
    const m = members.get(id);
    if (m === undefined || m.socket !== socket) return;
    members.delete(id);
    const payload = Buffer.from(JSON.stringify({ id }));
    for (const o of members.values()) o.writer.send(FrameType.NodeDown, 0, payload);
  };

  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    const writer = new FrameWriter(socket);
    let id: string | undefined;
    const reader = new FrameReader(
      maxPayload,
      (frame: Frame) => {
        if (frame.type === FrameType.Hello) {
          let hello: { version: number; info: NodeInfo; address: string };
          try {
            hello = JSON.parse(frame.payload.toString('utf8')) as typeof hello;
          } catch {
            log('hello is not JSON: closing');
            socket.destroy();
            return;
          }
          if (hello.version !== PROTOCOL_VERSION || typeof hello.info?.id !== 'string') {
            log(`protocol version ${hello.version} or hello unsupported: closing`);
            socket.destroy();
            return;
          }
          const first = id === undefined;
          id = hello.info.id;
          const existing = members.get(id);
          if (existing !== undefined && existing.socket !== socket) existing.socket.destroy();
          members.set(id, { info: hello.info, address: hello.address, writer, socket, lastSeen: Date.now() });
          const up = Buffer.from(JSON.stringify({ info: hello.info, address: hello.address }));
          for (const o of others(id)) {
            o.writer.send(FrameType.NodeUp, 0, up);
            if (first)
              writer.send(
                FrameType.NodeUp,
                0,
                Buffer.from(JSON.stringify({ info: o.info, address: o.address })),
              );
          }
          // Tells the node its snapshot is complete.
          if (first) writer.send(FrameType.Ping, 1, Buffer.alloc(0));
        } else if (frame.type === FrameType.Ping) {
          const m = id === undefined ? undefined : members.get(id);
          if (m !== undefined) m.lastSeen = Date.now();
        } else if (frame.type === FrameType.Broadcast && id !== undefined) {
          for (const o of others(id)) o.writer.send(FrameType.Broadcast, 0, frame.payload);
        } else {
          log(`frame type ${frame.type} is not for the hub: closing`);
          socket.destroy();
        }
      },
      (reason) => {
        log(`${reason}: closing the connection`);
        socket.destroy();
      },
    );
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      sockets.delete(socket);
      if (id !== undefined) down(id, socket);
    });
  });
  server.listen(options.port ?? 0, host);
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;

  const sweeper = setInterval(
    () => {
      const now = Date.now();
      for (const m of members.values()) {
        if (now - m.lastSeen > heartbeatTimeout) {
          log(`node ${m.info.id} silent for ${now - m.lastSeen} ms: dropped`);
          m.socket.destroy();
        }
      }
    },
    Math.max(100, heartbeatTimeout / 4),
  );
  sweeper.unref();

  return {
    url: `parley://${host}:${port}`,
    port,
    nodes: () => [...members.keys()],
    async close() {
      clearInterval(sweeper);
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
