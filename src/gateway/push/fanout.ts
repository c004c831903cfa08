/**
 * @module gateway/push/fanout
 * The gateway's open push connections: events in from the node, out to every connection that
 * asked for the type and may see the audience, in arrival order. Also the history for resume,
 * the connection limits, one heartbeat timer for all connections, and the goodbye on shutdown.
 */
import type { Clock, TimerHandle } from '../../runtime/clock.ts';
import { Connection, type Wire } from './connection.ts';
import type { Feed } from './feed.ts';
import { EventHistory, type PushedEvent, type Resume } from './history.ts';
import type { PushLogger, ResolvedPushOptions, Viewer } from './options.ts';

export interface Refusal {
  readonly code: 'UNAVAILABLE' | 'RESOURCE_EXHAUSTED';
  readonly message: string;
}

export interface PushStats {
  readonly connections: number;
  readonly sse: number;
  readonly ws: number;
  /** Unsent bytes held for all open connections now. */
  readonly buffered: number;
  /** Most unsent bytes any connection has held, since start (closed ones included). */
  readonly peakBuffered: number;
  readonly lastEventId: string;
}

/**
 * How long a resume waits for this instance to reach a client's `Last-Event-ID` when the client
 * saw further (on an instance that read the log sooner), ms; then the resume goes on, with a
 * reset if the id is still ahead.
 */
const REACH_MS = 5_000;

/** Live events waiting for a connection that is catching up from the log. */
interface Held {
  readonly events: PushedEvent[];
  bytes: number;
}

export class Fanout {
  readonly history: EventHistory;
  private readonly connections = new Set<Connection>();
  private readonly perKey = new Map<string, number>();
  private heartbeatTimer: TimerHandle | undefined;
  private closing: Promise<void> | undefined;
  private peakOfClosed = 0;
  /** Events from the broker's log (`feed.ts`), when the push follows one; else notifications. */
  private feed: Feed | undefined;
  /** Connections being given what they missed from the log: live events wait here meanwhile. */
  private readonly catchingUp = new Map<Connection, Held>();

  constructor(
    private readonly options: ResolvedPushOptions,
    private readonly clock: Clock,
    private readonly logger: () => PushLogger,
  ) {
    // The instance part of ids: distinct per start, so ids from before a restart are not resumed.
    const instance = `${clock.now().toString(36)}${Math.floor(Math.random() * 36 ** 4).toString(36)}`;
    this.history = new EventHistory(instance, options.historySize);
  }

  /** Why a new connection for viewer `key` would be refused now; undefined when it is welcome. */
  refusal(key: string): Refusal | undefined {
    if (this.closing !== undefined) return { code: 'UNAVAILABLE', message: 'the gateway is shutting down' };
    if (this.connections.size >= this.options.maxConnections) {
      return { code: 'UNAVAILABLE', message: 'too many push connections on this gateway' };
    }
    if ((this.perKey.get(key) ?? 0) >= this.options.maxPerPrincipal) {
      return { code: 'RESOURCE_EXHAUSTED', message: 'too many push connections for this principal' };
    }
    return undefined;
  }

  /** From now on events come from `feed`, and their ids are its positions. */
  useFeed(feed: Feed): void {
    this.feed = feed;
  }

  get following(): boolean {
    return this.feed !== undefined;
  }

  /** The id of the latest event (where a client that saw everything stands). */
  latestId(): string {
    return this.feed?.id() ?? this.history.latestId();
  }

  /** The payload as JSON, or undefined (logged) when it is larger than `maxEventBytes`. */
  serialise(type: string, payload: unknown): string | undefined {
    const data = JSON.stringify(payload);
    const bytes = Buffer.byteLength(data);
    if (bytes <= this.options.maxEventBytes) return data;
    this.logger().warn(
      { type, bytes, max: this.options.maxEventBytes },
      'push: event dropped, larger than maxEventBytes',
    );
    return undefined;
  }

  /** A notification from the node: kept and delivered, or dropped whole when too large. */
  publish(type: string, audience: string | undefined, payload: unknown): void {
    const data = this.serialise(type, payload);
    if (data === undefined) return;
    this.deliver(this.history.add(type, audience, data));
  }

  /** An event with its id already given (from the feed). */
  deliver(event: PushedEvent): void {
    for (const c of this.connections) {
      if (!c.wants(event)) continue;
      const held = this.catchingUp.get(c);
      if (held === undefined) {
        c.deliver(event);
        continue;
      }
      held.events.push(event);
      held.bytes += event.data.length;
      if (held.bytes > this.options.maxBufferedBytes) {
        // Its catching up takes too long for the events coming in: as a slow client, cut off.
        this.catchingUp.delete(c);
        this.logger().warn(
          { protocol: c.wire.protocol, viewer: c.key, why: `${held.bytes} bytes of live events held` },
          'push: slow client cut off; it will reconnect and resume',
        );
        c.destroy();
      }
    }
  }

  /**
   * Opens a connection (the caller checked `refusal` in this same tick): first what it missed
   * since `lastEventId`, or a reset, then the id it is now up to date with, then live events.
   */
  attach(
    wire: Wire,
    request: { viewer: Viewer; key: string; types: ReadonlySet<string>; lastEventId: string | undefined },
  ): Connection {
    const { viewer, key, types, lastEventId } = request;
    const connection = new Connection(wire, viewer, key, types, {
      clock: this.clock,
      limits: this.options,
      logger: this.logger(),
    });
    this.connections.add(connection);
    this.perKey.set(key, (this.perKey.get(key) ?? 0) + 1);
    connection.whenClosed(() => this.detach(connection));
    if (lastEventId !== undefined && this.feed !== undefined) {
      this.resumeFromLog(this.feed, connection, lastEventId);
      this.armHeartbeat();
      return connection;
    }
    if (lastEventId !== undefined) {
      const resume = this.history.since(lastEventId, (e) => connection.wants(e));
      if (resume.kind === 'reset') {
        connection.control('reset', { reason: resume.reason }, this.latestId());
      } else {
        for (const event of resume.events) connection.deliver(event);
      }
    }
    connection.mark(this.latestId());
    this.armHeartbeat();
    return connection;
  }

  /**
   * Gives a connection what it missed, read from the broker's log up to where the feed stands
   * now; live events meanwhile wait for it, then follow in order.
   */
  private resumeFromLog(feed: Feed, connection: Connection, lastEventId: string): void {
    const held: Held = { events: [], bytes: 0 };
    this.catchingUp.set(connection, held);
    void feed.reach(lastEventId, REACH_MS).then(() => {
      // Closed, or cut off for holding too much, meanwhile.
      if (this.catchingUp.get(connection) !== held) return;
      // Everything held so far is up to the snapshot: read from the log, or seen already.
      held.events.length = 0;
      held.bytes = 0;
      const upTo = feed.snapshot();
      return feed
        .missed(lastEventId, upTo, (e) => connection.wants(e))
        .catch((error: unknown): Resume => {
          this.logger().warn({ err: error }, 'push: resume failed');
          return { kind: 'reset', reason: 'the log could not be read' };
        })
        .then((resume) => {
          if (resume.kind === 'reset') {
            connection.control('reset', { reason: resume.reason }, upTo.join('.'));
          } else {
            for (const event of resume.events) connection.deliver(event);
          }
          connection.mark(upTo.join('.'));
          this.catchingUp.delete(connection);
          for (const event of held.events) connection.deliver(event);
        });
    });
  }

  stats(): PushStats {
    let sse = 0;
    let peakBuffered = this.peakOfClosed;
    let buffered = 0;
    for (const c of this.connections) {
      if (c.wire.protocol === 'sse') sse++;
      buffered += c.buffered();
      peakBuffered = Math.max(peakBuffered, c.peakBuffered);
    }
    return {
      connections: this.connections.size,
      sse,
      ws: this.connections.size - sse,
      buffered,
      peakBuffered,
      lastEventId: this.latestId(),
    };
  }

  /** Says `bye` to every connection and ends it; cuts off those still open after the grace time. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.heartbeatTimer?.cancel();
      this.heartbeatTimer = undefined;
      const open = [...this.connections];
      if (open.length === 0) return resolve();
      let left = open.length;
      const grace = this.clock.setTimeout(() => {
        for (const c of open) c.destroy();
      }, this.options.closeGraceMs);
      for (const c of open) {
        c.whenClosed(() => {
          if (--left === 0) {
            grace.cancel();
            resolve();
          }
        });
        c.control('bye', { reason: 'server shutting down' });
        c.end();
      }
    });
    return this.closing;
  }

  private detach(connection: Connection): void {
    this.connections.delete(connection);
    this.catchingUp.delete(connection);
    this.peakOfClosed = Math.max(this.peakOfClosed, connection.peakBuffered);
    const n = (this.perKey.get(connection.key) ?? 1) - 1;
    if (n === 0) this.perKey.delete(connection.key);
    else this.perKey.set(connection.key, n);
  }

  /** One timer for every connection, armed while there are connections. */
  private armHeartbeat(): void {
    if (this.heartbeatTimer !== undefined || this.closing !== undefined) return;
    this.heartbeatTimer = this.clock.setTimeout(() => {
      this.heartbeatTimer = undefined;
      const id = this.latestId();
      // One still catching up is not at the latest id yet: its heartbeat waits.
      for (const c of this.connections) if (!this.catchingUp.has(c)) c.heartbeat(id);
      if (this.connections.size > 0) this.armHeartbeat();
    }, this.options.heartbeatMs);
    // A pending heartbeat must not keep a process alive on its own.
    this.heartbeatTimer.unref();
  }
}
