/**
 * @module gateway/options
 * What a gateway is built from, and the shapes its hooks see. The hooks are plain functions over
 * plain data (no Fastify types), so the authenticator, the rate limiter and tests plug in without
 * knowing the HTTP framework.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Logger } from 'pino';
import type { ActionDef, AnyContract } from '../contract/contract.ts';
import type { ParleyError } from '../errors.ts';
import type { MetricsMiddleware } from '../observe/metrics.ts';
import type { ParleyNode } from '../runtime/node.ts';
import type { Principal } from '../runtime/principal.ts';

/** The request as hooks see it: read-only facts, nothing to send a reply with. */
export interface GatewayRequest {
  /** This request's id, also sent back as `X-Request-Id`. */
  readonly id: string;
  readonly method: string;
  /** The path as received (already checked: no dot segments or encoded separators). */
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  /** The peer address of the connection (no proxy headers are trusted). */
  readonly ip: string;
}

/** A public route: which action it reaches and how. */
export interface GatewayRoute {
  readonly service: string;
  readonly action: string;
  /** `GET`, `POST`, … */
  readonly method: string;
  /** The route pattern under the base path, e.g. `/api/orders/:id`. */
  readonly path: string;
  readonly def: ActionDef;
}

export interface RateLimitDecision {
  /** Added to the response, refused or not (e.g. `RateLimit-Remaining`). */
  headers: Record<string, string>;
  /** Set to refuse: answered 429 with `headers`. */
  refused?: ParleyError;
}

export interface GatewayOptions {
  /** A started node that can reach the services. The gateway does not start or stop it. */
  node: ParleyNode;
  /** Contracts whose `public` actions become routes; all their actions are on `/rpc` (internal). */
  contracts: readonly AnyContract[];
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (a free port). */
  port?: number;
  /** Prefix of public routes. Default `/api`. */
  basePath?: string;
  /** Largest JSON body, bytes. Default 1 MiB. */
  bodyLimit?: number;
  /** Largest uploaded file of a multipart route, bytes. Default 10 MiB. */
  uploadLimit?: number;
  /** Most request headers (count). Default 100; more is answered 431. */
  maxHeaders?: number;
  /** Largest request head (request line + headers), bytes. Default 16 KiB; more is answered 431. */
  maxHeaderBytes?: number;
  /** Longest request target (path + query), characters. Default 2048; longer is answered 414. */
  maxUrlLength?: number;
  /**
   * Longest a client may take to send a whole request, head and body, ms (the head alone: at most
   * 60 s). Past it the request is answered 408 and its connection closed. Default 300 000, Node's
   * own default, which Fastify turns off; 0: no limit (behind a proxy that bounds it). Upload
   * routes need it longer than the largest upload takes on the slowest link served.
   */
  requestTimeout?: number;
  /** Deadline of a call whose action declares no `timeout`, ms. Default 10 000. */
  callTimeout?: number;
  /** How long `close()` waits for in-flight requests before cutting connections, ms. Default 10 000. */
  closeTimeout?: number;
  /**
   * Browser origins allowed to call, compared exactly (`https://shop.example`). None by default.
   * `headers`: request headers a page may send besides `authorization`, `content-type`,
   * `idempotency-key`, `x-request-id` and `x-api-key` (an API key header of another name).
   */
  cors?: { origins: readonly string[]; headers?: readonly string[] };
  /** Enables `POST /rpc/<service>.<action>` for callers holding one of these bearer tokens. */
  internal?: { tokens: readonly string[] };
  /** Who the request acts for; undefined for anonymous. Throw UNAUTHENTICATED to refuse. */
  authenticate?: (request: GatewayRequest) => Promise<Principal | undefined>;
  /** May this principal (undefined: anonymous) call this route? Throw UNAUTHENTICATED / PERMISSION_DENIED. */
  authorize?: (principal: Principal | undefined, route: GatewayRoute) => void;
  /** Rate limiting, after authentication, so limits may be per principal. */
  rateLimit?: (
    request: GatewayRequest,
    route: GatewayRoute,
    principal: Principal | undefined,
  ) => Promise<RateLimitDecision>;
  /** OpenAPI security schemes; default (when `authenticate` is set): HTTP bearer. */
  securitySchemes?: Record<string, Record<string, unknown>>;
  /** Default: a child of the node's logger. */
  logger?: Logger;
  /**
   * Prometheus metrics (the node's `metrics()` middleware): HTTP requests by route and status on
   * its registry, and `GET /metrics` for scrapers.
   */
  metrics?: MetricsMiddleware;
  /**
   * Who may read `GET /metrics`. Default `internal`: holders of `internal.tokens` (no endpoint
   * when there are none). `public`: anyone, for a gateway only reachable from inside. `none`: no
   * endpoint (serve the registry elsewhere, e.g. with `serveMetrics`).
   */
  metricsEndpoint?: 'internal' | 'public' | 'none';
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Largest body a route takes: the gateway checks Content-Length against it before reading. */
    parleyBodyLimit?: number;
  }
}
