/**
 * @module hub
 * The single-machine server: the registry of nodes, reachable over TCP, and the home of the
 * embedded broker. Nodes say hello with their info and the address where they take calls; the
 * hub tells every node about the others as they come, change and go, and relays notifications.
 * Calls never pass through the hub: nodes connect to each other directly. A node whose connection
 * drops, or that stays silent past the heartbeat bound, is gone for everyone.
 *
 * With a data directory the hub owns `DIR/broker.db`, an embedded broker, and serves it over the
 * same port (`hub/broker-server`): nodes learn on welcome that the hub is their broker, and use it
 * with `PARLEY_BROKER=parley://host:port`. The file stays usable directly (`embedded:PATH`) by
 * processes on this machine.
 */
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import { resolve } from 'node:path';
import type { Broker } from '../broker/broker.ts';
import { createEmbeddedBroker, type EmbeddedBroker } from '../broker/embedded/embedded-broker.ts';
import { nodeInfoOf } from '../transport/node-info.ts';
import {
  type Frame,
  FrameReader,
  FrameType,
  FrameWriter,
  PROTOCOL_VERSION,
  READ_GROUP,
} from '../transport/tcp/frames.ts';
import { listen, type ParleyTlsOptions } from '../transport/tcp/sockets.ts';
import { DEFAULT_MAX_PAYLOAD, type NodeInfo } from '../transport/transport.ts';
import { BrokerSession } from './broker-server.ts';

export interface HubOptions {
  host?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  maxPayload?: number;
  /**
   * A node silent for this long is dropped, and a connection that said no hello (a tool) and sent
   * no frame for this long is closed, ms. Default 10 000.
   */
  heartbeatTimeout?: number;
  /** Nodes and tools must present this token, and nodes present it to each other. */
  token?: string;
  /**
   * Where the hub keeps the embedded broker (`broker.db`), which it serves over its port. Without
   * a data directory (or `broker`) the hub offers no broker.
   */
  dataDir?: string;
  /** A broker to serve instead of `DIR/broker.db` (tests pass one on a fake clock). */
  broker?: Broker;
  /** Where the hub reports what it does (connections refused, nodes dropped). */
  log?: (message: string) => void;
  /** Serve TLS: `cert` and `key` required; `requireClientCert` for mutual TLS. */
  tls?: ParleyTlsOptions;
}

export interface HubMember {
  info: NodeInfo;
  address: string;
  /** Epoch ms of the last heartbeat. */
  lastSeen: number;
  /** Epoch ms the node joined. */
  since: number;
}

/** What the hub answers to a `Members` query. */
export interface HubSnapshot {
  nodes: HubMember[];
  /** The broker URL nodes of this hub share (the hub itself), when it has a broker. */
  broker?: string;
}

export interface Hub {
  /** `parley://host:port`, what nodes are given as `PARLEY_TRANSPORT`. */
  readonly url: string;
  readonly port: number;
  /** The hub's own URL when it serves a broker: `PARLEY_BROKER` for its nodes. */
  readonly brokerUrl: string | undefined;
  /** `embedded:DIR/broker.db`: the same broker as a file, for processes on this machine. */
  readonly brokerFile: string | undefined;
  /** Node ids currently registered. */
  nodes(): string[];
  snapshot(): HubSnapshot;
  close(): Promise<void>;
}

interface Member extends HubMember {
  writer: FrameWriter;
  socket: Socket;
  /** Broadcasts to it are dropped: it has not taken what the hub sent it (see `relay`). */
  lagging?: boolean;
}

/**
 * Broker calls of one connection the hub runs at once (as many as a node's `maxConcurrent`); past
 * them, or past the backlog bound of answers its peer has not taken, the hub reads nothing more
 * from that connection until it catches up.
 */
const MOST_CALLS = 1024;

interface Hello {
  version?: unknown;
  token?: unknown;
  /** `broker`: a broker client, not a node. */
  role?: unknown;
  info?: unknown;
  address?: unknown;
}

export async function createHub(options: HubOptions = {}): Promise<Hub> {
  const host = options.host?.trim() || '127.0.0.1';
  const maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
  const heartbeatTimeout = options.heartbeatTimeout ?? 10_000;
  const log = options.log ?? (() => undefined);
  const members = new Map<string, Member>();
  const sockets = new Set<Socket>();
  /** Every accepted connection, a TLS one still in its handshake included (see `close`). */
  const accepted = new Set<Socket>();
  /**
   * Connections that have said no hello (tools asking `Members`, or peers saying nothing), with
   * when each last handed over a complete frame: the sweeper closes those silent past
   * `heartbeatTimeout`. Until 2026-12-03 the hub kept them for ever, a file descriptor each.
   */
  const unnamed = new Map<Socket, { heard: number; refuse: (why: string) => void }>();
  let owned: EmbeddedBroker | undefined;
  let brokerFile: string | undefined;
  if (options.broker === undefined && options.dataDir !== undefined) {
    const dir = resolve(options.dataDir);
    mkdirSync(dir, { recursive: true });
    brokerFile = `embedded:${dir}/broker.db`;
    owned = createEmbeddedBroker({ path: `${dir}/broker.db` });
  }
  const broker: Broker | undefined = options.broker ?? owned;
  let brokerUrl: string | undefined;
  const brokerSessions = new Set<BrokerSession>();

  const snapshot = (): HubSnapshot => {
    const nodes = [...members.values()].map(({ info, address, lastSeen, since }) => ({
      info,
      address,
      lastSeen,
      since,
    }));
    return brokerUrl === undefined ? { nodes } : { nodes, broker: brokerUrl };
  };
  const json = (value: unknown) => Buffer.from(JSON.stringify(value));
  const others = (id: string) => [...members.values()].filter((m) => m.info.id !== id);
  /**
   * A broadcast to `m`, unless what the hub sent it before still waits (`backlogOver`):
   * broadcasts are at most once, and a member that does not read made the hub queue every one for
   * it (295 MiB in a test) until 2026-12-03. Registry changes are always sent.
   */
  const relay = (m: Member, payload: Buffer) => {
    const lagging = m.writer.backlogOver(maxPayload);
    if (lagging !== (m.lagging === true)) {
      m.lagging = lagging;
      log(
        lagging
          ? `node ${m.info.id} does not read what the hub sends it: its broadcasts are dropped until it does`
          : `node ${m.info.id} reads again: broadcasts to it resume`,
      );
    }
    if (!lagging) m.writer.send(FrameType.Broadcast, 0, payload);
  };
  const down = (id: string, socket: Socket) => {
    const m = members.get(id);
    if (m === undefined || m.socket !== socket) return;
    members.delete(id);
    log(`node ${id} left`);
    const payload = json({ id });
    for (const o of members.values()) o.writer.send(FrameType.NodeDown, 0, payload);
  };

  const server: Server = listen(options.tls, (socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    const writer = new FrameWriter(socket);
    const refuse = (why: string) => {
      log(`connection from ${peer}: ${why}: closing it`);
      // Nothing more of its reads: the frames after a refused one in the same read are dropped.
      reader.stop();
      socket.destroy();
    };
    let id: string | undefined;
    let brokerSession: BrokerSession | undefined;
    /**
     * Answers (to `Members`, to broker calls) are sent whether or not the peer reads them: one
     * that asks and does not read stops being read while more than the backlog bound of them
     * waits, or while it has `MOST_CALLS` broker calls running, until it catches up. Until
     * 2026-12-03 the hub queued them all: 3.6 KB of `Members` frames cost it 370 MiB, 82 KB of
     * history reads 1.4 GiB.
     */
    let calls = 0;
    let paused = false;
    const throttle = () => {
      const behind = calls >= MOST_CALLS || writer.backlogOver(maxPayload);
      if (!paused && behind) {
        paused = true;
        reader.hold();
        socket.pause();
      } else if (paused && !behind && calls <= MOST_CALLS / 2) {
        paused = false;
        socket.resume();
        reader.release();
      }
    };
    const onHello = (frame: Frame) => {
      let hello: Hello;
      try {
        hello = JSON.parse(frame.payload.toString('utf8')) as Hello;
      } catch {
        return refuse('hello is not JSON');
      }
      if (hello === null || typeof hello !== 'object') return refuse('hello is not an object');
      if (hello.version !== PROTOCOL_VERSION) {
        return refuse(`protocol version ${String(hello.version)} is not supported (${PROTOCOL_VERSION} is)`);
      }
      if (options.token !== undefined && hello.token !== options.token) return refuse('wrong token');
      if (hello.role === 'broker') {
        if (broker === undefined) return refuse('this hub serves no broker');
        if (brokerSession !== undefined || id !== undefined) return refuse('a second hello');
        brokerSession = new BrokerSession(broker, writer, maxPayload);
        brokerSessions.add(brokerSession);
        unnamed.delete(socket); // a broker client sends no pings: kept while connected
        // Its largest frame, so that a client refuses what the hub would not read.
        writer.send(
          FrameType.Welcome,
          0,
          json(broker.history === undefined ? { maxPayload } : { history: true, maxPayload }),
        );
        return;
      }
      if (brokerSession !== undefined) return refuse('a broker connection cannot join as a node');
      // Checked here, before it is kept and sent to every other node.
      const info = nodeInfoOf(hello.info);
      if (typeof info === 'string') return refuse(`hello has no valid node info: ${info}`);
      if (typeof hello.address !== 'string') return refuse('hello has no address');
      if (id !== undefined && id !== info.id) return refuse('a connection cannot change its node id');
      const first = id === undefined;
      id = info.id;
      unnamed.delete(socket); // from now on the heartbeat bound holds
      const existing = members.get(id);
      if (existing !== undefined && existing.socket !== socket) existing.socket.destroy();
      const now = Date.now();
      members.set(id, {
        info,
        address: hello.address,
        writer,
        socket,
        lastSeen: now,
        since: existing?.since ?? now,
      });
      if (first) log(`node ${id} joined from ${hello.address}`);
      const up = json({ info, address: hello.address });
      for (const o of others(id)) {
        o.writer.send(FrameType.NodeUp, 0, up);
        if (first) writer.send(FrameType.NodeUp, 0, json({ info: o.info, address: o.address }));
      }
      if (first)
        writer.send(FrameType.Welcome, 0, json(brokerUrl === undefined ? {} : { broker: brokerUrl }));
    };
    const reader = new FrameReader(
      maxPayload,
      (frame: Frame) => {
        const waiting = unnamed.get(socket);
        if (waiting !== undefined) waiting.heard = Date.now();
        if (frame.type === FrameType.Hello) onHello(frame);
        else if (frame.type === FrameType.Ping) {
          const m = id === undefined ? undefined : members.get(id);
          if (m !== undefined && m.socket === socket) m.lastSeen = Date.now();
        } else if (frame.type === FrameType.Broadcast && id !== undefined) {
          for (const o of others(id)) relay(o, frame.payload);
        } else if (frame.type === FrameType.BrokerCall && brokerSession !== undefined) {
          calls += 1;
          void brokerSession.call(frame.id, frame.payload).finally(() => {
            calls -= 1;
            throttle();
          });
          throttle();
        } else if (frame.type === FrameType.Settle && brokerSession !== undefined) {
          brokerSession.settle(frame.id, frame.payload);
        } else if (frame.type === FrameType.Members) {
          // A tool asking: a token, when the hub has one, comes as the payload.
          if (options.token !== undefined && frame.payload.toString('utf8') !== options.token) {
            return refuse('wrong token');
          }
          writer.send(FrameType.Members, frame.id, json(snapshot()));
          throttle();
        } else refuse(`frame type ${frame.type} is not for the hub`);
      },
      refuse,
      // Frames of one read in groups: what the first ones answered is counted before the rest run.
      READ_GROUP,
    );
    unnamed.set(socket, { heard: Date.now(), refuse });
    socket.on('drain', () => {
      if (paused) throttle();
    });
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      reader.stop();
      sockets.delete(socket);
      unnamed.delete(socket);
      if (id !== undefined) down(id, socket);
      if (brokerSession !== undefined) {
        brokerSessions.delete(brokerSession);
        void brokerSession.close();
      }
    });
  });
  server.on('connection', (socket: Socket) => {
    accepted.add(socket);
    socket.once('close', () => accepted.delete(socket));
  });
  // A TLS handshake that fails (wrong certificate, plain TCP on a TLS port) never gets a socket.
  server.on('tlsClientError', (error: Error, socket: Socket) => {
    log(
      `connection from ${socket.remoteAddress}:${socket.remotePort}: TLS handshake failed (${error.message}): closed`,
    );
  });
  server.listen(options.port ?? 0, host);
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  const url = `parley://${urlHost}:${port}`;
  if (broker !== undefined) brokerUrl = url;

  const sweeper = setInterval(
    () => {
      const now = Date.now();
      for (const m of members.values()) {
        if (now - m.lastSeen > heartbeatTimeout) {
          log(`node ${m.info.id} silent for ${now - m.lastSeen} ms: dropped`);
          m.socket.destroy();
        }
      }
      // A connection not read while the hub waits for it to take answers (`throttle`) counts too.
      for (const [socket, c] of unnamed) {
        if (now - c.heard <= heartbeatTimeout) continue;
        unnamed.delete(socket);
        c.refuse(`no hello, silent for ${now - c.heard} ms`);
      }
    },
    Math.max(100, heartbeatTimeout / 4),
  );
  sweeper.unref();

  return {
    url,
    port,
    brokerUrl,
    brokerFile,
    nodes: () => [...members.keys()],
    snapshot,
    async close() {
      clearInterval(sweeper);
      unnamed.clear();
      for (const s of sockets) s.destroy();
      // A TLS connection still in its handshake is no socket of ours yet, and `server.close` waits
      // for it: until 2026-12-03 a client that connected and said nothing held `close()` (and a
      // stopping `parley hub`) for the handshake timeout, 120 s.
      for (const s of accepted) s.destroy();
      await Promise.allSettled([...brokerSessions].map((s) => s.close()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await owned?.close();
    },
  };
}
