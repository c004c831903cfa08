/**
 * @module gateway/push/connection
 * One client connection, whatever its protocol: what it asked for, who it is, and the guard that
 * cuts it off when it stops reading. Writes never wait for a slow client (that would hold every
 * other connection back) and are never queued without a bound: bytes the client has not taken are
 * watched after each write, and a connection that stays behind is closed. The client reconnects
 * with its last id and resumes from the history, or is told to refetch.
 */
import type { Clock, TimerHandle } from '../../runtime/clock.ts';
import type { PushedEvent } from './history.ts';
import type { PushLogger, Viewer } from './options.ts';

/** The protocol side of a connection: SSE or WebSocket framing over one socket. */
export interface Wire {
  readonly protocol: 'sse' | 'ws';
  /** Bytes written that the peer has not taken yet (ours and the socket's buffers). */
  buffered(): number;
  event(event: PushedEvent): void;
  /** A control event the client must act on: `reset` (refetch state) or `bye` (server leaving). */
  control(type: 'reset' | 'bye', data: Record<string, unknown>, id?: string): void;
  /** Tells the client it is up to date as of `id` (SSE: an id-only block; WS: a `ready` message). */
  mark(id: string): void;
  /** Keeps proxies from timing the connection out; `id` is the latest event id. */
  heartbeat(id: string): void;
  /** Ends politely (after `bye`). */
  end(): void;
  /** Cuts the connection off at once. */
  destroy(): void;
  onClose(listener: () => void): void;
}

export interface ConnectionLimits {
  readonly slowBytes: number;
  readonly slowClientMs: number;
  readonly maxBufferedBytes: number;
}

export class Connection {
  private slowTimer: TimerHandle | undefined;
  private open = true;
  /** False once ended or cut off: nothing more is written while the socket closes. */
  private writable = true;
  private readonly onClosed: (() => void)[] = [];
  /** Most bytes seen waiting for this client: the tests' proof that memory stays bounded. */
  peakBuffered = 0;

  constructor(
    readonly wire: Wire,
    readonly viewer: Viewer,
    /** Viewer key for `maxPerPrincipal`. */
    readonly key: string,
    readonly types: ReadonlySet<string>,
    private readonly deps: { clock: Clock; limits: ConnectionLimits; logger: PushLogger },
  ) {
    wire.onClose(() => this.closed());
  }

  get isOpen(): boolean {
    return this.open;
  }

  /** Whether this connection asked for the event's type and may see its audience. */
  wants(event: PushedEvent): boolean {
    return (
      this.types.has(event.type) && (event.audience === undefined || event.audience === this.viewer.subject)
    );
  }

  deliver(event: PushedEvent): void {
    if (!this.writable) return;
    this.wire.event(event);
    this.watch();
  }

  control(type: 'reset' | 'bye', data: Record<string, unknown>, id?: string): void {
    if (!this.writable) return;
    this.wire.control(type, data, id);
    this.watch();
  }

  mark(id: string): void {
    if (!this.writable) return;
    this.wire.mark(id);
    this.watch();
  }

  heartbeat(id: string): void {
    if (!this.writable) return;
    this.wire.heartbeat(id);
    this.watch();
  }

  /** Bytes written that the client has not taken yet. */
  buffered(): number {
    return this.open ? this.wire.buffered() : 0;
  }

  end(): void {
    if (!this.open) return;
    this.writable = false;
    this.wire.end();
  }

  destroy(): void {
    if (!this.open) return;
    this.writable = false;
    this.wire.destroy();
  }

  whenClosed(listener: () => void): void {
    if (this.open) this.onClosed.push(listener);
    else listener();
  }

  private closed(): void {
    if (!this.open) return;
    this.open = false;
    this.writable = false;
    this.slowTimer?.cancel();
    this.slowTimer = undefined;
    for (const listener of this.onClosed.splice(0)) listener();
  }

  /** After each write: cut off a client far behind now, or behind for longer than allowed. */
  private watch(): void {
    const { slowBytes, slowClientMs, maxBufferedBytes } = this.deps.limits;
    const buffered = this.wire.buffered();
    if (buffered > this.peakBuffered) this.peakBuffered = buffered;
    if (buffered > maxBufferedBytes) {
      this.cut(`${buffered} bytes not taken`);
    } else if (buffered > slowBytes) {
      if (this.slowTimer === undefined) {
        this.slowTimer = this.deps.clock.setTimeout(() => {
          this.slowTimer = undefined;
          if (this.open && this.wire.buffered() > slowBytes) this.cut(`behind for ${slowClientMs} ms`);
        }, slowClientMs);
        this.slowTimer.unref();
      }
    } else {
      this.slowTimer?.cancel();
      this.slowTimer = undefined;
    }
  }

  private cut(why: string): void {
    this.deps.logger.warn(
      { protocol: this.wire.protocol, viewer: this.key, why },
      'push: slow client cut off; it will reconnect and resume',
    );
    this.destroy();
  }
}
