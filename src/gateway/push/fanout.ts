/**
 * @module gateway/push/fanout
 * The gateway's open push connections: events in from the node, out to every connection that
 * asked for the type and may see the audience, in arrival order. Also the history for resume,
 * the connection limits, one heartbeat timer for all connections, and the goodbye on shutdown.
 */
import type { Clock, TimerHandle } from '../../runtime/clock.ts';
import { Connection, type Wire } from './connection.ts';
import { EventHistory } from './history.ts';
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

export class Fanout {
  readonly history: EventHistory;
  private readonly connections = new Set<Connection>();
  private readonly perKey = new Map<string, number>();
  private heartbeatTimer: TimerHandle | undefined;
  private closing: Promise<void> | undefined;
  private peakOfClosed = 0;

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

  /** An event from the node: kept and delivered, or dropped whole when too large. */
  publish(type: string, audience: string | undefined, payload: unknown): void {
    const data = JSON.stringify(payload);
    const bytes = Buffer.byteLength(data);
    if (bytes > this.options.maxEventBytes) {
      this.logger().warn(
        { type, bytes, max: this.options.maxEventBytes },
        'push: event dropped, larger than maxEventBytes',
      );
      return;
    }
    const event = this.history.add(type, audience, data);
    for (const c of this.connections) if (c.wants(event)) c.deliver(event);
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
    if (lastEventId !== undefined) {
      const resume = this.history.since(lastEventId, (e) => connection.wants(e));
      if (resume.kind === 'reset') {
        connection.control('reset', { reason: resume.reason }, this.history.latestId());
      } else {
        for (const event of resume.events) connection.deliver(event);
      }
    }
    connection.mark(this.history.latestId());
    this.armHeartbeat();
    return connection;
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
      lastEventId: this.history.latestId(),
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
      const id = this.history.latestId();
      for (const c of this.connections) c.heartbeat(id);
      if (this.connections.size > 0) this.armHeartbeat();
    }, this.options.heartbeatMs);
    // A pending heartbeat must not keep a process alive on its own.
    this.heartbeatTimer.unref();
  }
}
