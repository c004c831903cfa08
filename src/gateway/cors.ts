/**
 * @module gateway/cors
 * CORS with an exact list of origins: a string compare against a Set, no wildcards, no suffix or
 * regex matching (the usual ways `evil-shop.example` passes for `shop.example`). Credentials are
 * not allowed: the API takes bearer tokens, not cookies.
 */
import type { IncomingHttpHeaders } from 'node:http';

/** Request headers a browser may send cross-origin (the gateway reads each of them). */
const ALLOWED_HEADERS = ['authorization', 'content-type', 'idempotency-key', 'x-request-id', 'x-api-key'];
/** Response headers a browser script may read. */
const EXPOSED_HEADERS = [
  'x-request-id',
  'retry-after',
  'ratelimit',
  'ratelimit-policy',
  'ratelimit-limit',
  'ratelimit-remaining',
  'ratelimit-reset',
];
const MAX_AGE_S = 600;

export interface Cors {
  /** Headers for a simple (non-preflight) request: `Vary` always, `Allow-Origin` when allowed. */
  simple(headers: IncomingHttpHeaders): Record<string, string>;
  /** Headers answering a preflight, or undefined when the origin is not allowed. */
  preflight(headers: IncomingHttpHeaders, methods: readonly string[]): Record<string, string> | undefined;
}

export function createCors(origins: readonly string[], headers: readonly string[] = []): Cors {
  const allowed = new Set(origins);
  const allowHeaders = [...new Set([...ALLOWED_HEADERS, ...headers.map((h) => h.toLowerCase())])].join(', ');
  const originOf = (headers: IncomingHttpHeaders) => {
    const o = headers.origin;
    return typeof o === 'string' && allowed.has(o) ? o : undefined;
  };
  return {
    simple(headers) {
      const origin = originOf(headers);
      if (origin === undefined) return { vary: 'Origin' };
      const out: Record<string, string> = {
        vary: 'Origin',
        'access-control-allow-origin': origin,
        'access-control-expose-headers': EXPOSED_HEADERS.join(', '),
      };
      return out;
    },
    preflight(headers, methods) {
      const origin = originOf(headers);
      if (origin === undefined) return undefined;
      return {
        vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers',
        'access-control-allow-origin': origin,
        'access-control-allow-methods': methods.join(', '),
        'access-control-allow-headers': allowHeaders,
        'access-control-max-age': String(MAX_AGE_S),
      };
    },
  };
}
