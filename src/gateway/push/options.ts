/**
 * @module gateway/push/options
 * What `createPush` takes: the event sources to push, who may see them, and the limits that keep
 * one gateway's memory bounded whatever its clients do.
 */
import type { FastifyBaseLogger } from 'fastify';
import type { AnyContract, EventName, PayloadOf } from '../../contract/contract.ts';
import type { Clock } from '../../runtime/clock.ts';
import type { Principal } from '../../runtime/principal.ts';

/** Who is asking for events: an authenticated principal, or a demo-mode anonymous customer. */
export interface Viewer {
  readonly principal: Principal | undefined;
  /** Events whose audience is this subject reach the viewer; undefined: only audience-less ones. */
  readonly subject: string | undefined;
}

/** One event type the gateway pushes to browsers. */
export interface PushSource {
  readonly contract: AnyContract;
  readonly event: string;
  /** Who may see one event: a principal's subject (e.g. the customer id); undefined = anyone allowed. */
  readonly audience: (payload: unknown) => string | undefined;
  /** Whether a viewer may ask for this type at all. Default: everyone who may connect. */
  readonly allow: (viewer: Viewer) => boolean;
}

/** A typed source: `audience` and `allow` see the event's payload type from the contract. */
export function pushSource<C extends AnyContract, K extends EventName<C>>(
  contract: C,
  event: K,
  options: {
    audience?: (payload: PayloadOf<C, K>) => string | undefined;
    allow?: (viewer: Viewer) => boolean;
  } = {},
): PushSource {
  const audience = options.audience;
  return Object.freeze({
    contract,
    event,
    audience:
      audience === undefined ? () => undefined : (payload: unknown) => audience(payload as PayloadOf<C, K>),
    allow: options.allow ?? (() => true),
  });
}

export type PushLogger = Pick<FastifyBaseLogger, 'warn' | 'info'>;

export interface PushOptions {
  sources: readonly PushSource[];
  /** Name of the Parley service that holds the subscriptions (unique on its node). */
  serviceName?: string;
  /**
   * Events kept in this gateway's memory for `Last-Event-ID` resume, when it pushes notifications.
   * Default 1000; 0 keeps none (every resume is a reset). Unused once the push follows the broker's
   * log (`Push.follow`): resumes are read from the broker.
   */
  historySize?: number;
  /** Log entries one resume from the broker's log may read before it sends a reset instead. Default 10 000. */
  maxResumeEvents?: number;
  /** SSE comment / WebSocket ping interval, ms. Default 15 000. */
  heartbeatMs?: number;
  /** The reconnect delay SSE clients are told (`retry:`), ms. Default 2000. */
  retryMs?: number;
  /** Open connections per gateway; more are refused with 503. Default 10 000. */
  maxConnections?: number;
  /** Open connections per viewer (principal or demo customer); more are refused with 429. Default 16. */
  maxPerPrincipal?: number;
  /** Largest payload (JSON bytes) pushed; larger events are dropped whole, with a log line. Default 64 KiB. */
  maxEventBytes?: number;
  /**
   * Bytes written to a connection that it has not taken yet. Above `slowBytes` a connection is
   * behind; behind for `slowClientMs` or above `maxBufferedBytes` at once, it is closed (the client
   * reconnects and resumes). Defaults 64 KiB, 30 000 ms, 1 MiB.
   */
  slowBytes?: number;
  slowClientMs?: number;
  maxBufferedBytes?: number;
  /** How long `close()` waits for clients to hang up after `bye` before cutting them off, ms. Default 2000. */
  closeGraceMs?: number;
  /**
   * DEMO SWITCH, off by default: lets a request without a principal pick its audience with
   * `?customer=`. Anyone can then read anyone's events by guessing a name. For the example shop
   * without authentication only; never in production.
   */
  allowAnonymousAudience?: boolean;
  clock?: Clock;
  /** Default: the Fastify instance's logger. */
  logger?: PushLogger;
}

export interface ResolvedPushOptions {
  readonly serviceName: string;
  readonly historySize: number;
  readonly maxResumeEvents: number;
  readonly heartbeatMs: number;
  readonly retryMs: number;
  readonly maxConnections: number;
  readonly maxPerPrincipal: number;
  readonly maxEventBytes: number;
  readonly slowBytes: number;
  readonly slowClientMs: number;
  readonly maxBufferedBytes: number;
  readonly closeGraceMs: number;
  readonly allowAnonymousAudience: boolean;
}

export function resolveOptions(options: PushOptions): ResolvedPushOptions {
  const resolved: ResolvedPushOptions = {
    serviceName: options.serviceName ?? 'gateway-push',
    historySize: options.historySize ?? 1000,
    maxResumeEvents: options.maxResumeEvents ?? 10_000,
    heartbeatMs: options.heartbeatMs ?? 15_000,
    retryMs: options.retryMs ?? 2000,
    maxConnections: options.maxConnections ?? 10_000,
    maxPerPrincipal: options.maxPerPrincipal ?? 16,
    maxEventBytes: options.maxEventBytes ?? 64 * 1024,
    slowBytes: options.slowBytes ?? 64 * 1024,
    slowClientMs: options.slowClientMs ?? 30_000,
    maxBufferedBytes: options.maxBufferedBytes ?? 1024 * 1024,
    closeGraceMs: options.closeGraceMs ?? 2000,
    allowAnonymousAudience: options.allowAnonymousAudience ?? false,
  };
  for (const [name, value] of Object.entries(resolved)) {
    if (typeof value === 'number' && !(Number.isInteger(value) && value >= 0)) {
      throw new TypeError(`push option ${name} must be a non-negative integer, got ${value}`);
    }
  }
  if (resolved.heartbeatMs === 0) throw new TypeError('push option heartbeatMs must be positive');
  return resolved;
}
