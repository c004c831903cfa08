/**
 * @module gateway/policies
 * The gateway's hooks made from the authentication and rate-limit modules, so a gateway is
 * configured with objects rather than hand-written hooks:
 *
 * ```ts
 * createGateway({ node, contracts, ...gatewayAuth({ authenticator }), ...gatewayRateLimit({ limiter }) });
 * ```
 *
 * Access: each route's rule is its action's `access` in the contract, else `defaultAccess`
 * (default `{ public: true }`: a public action is open unless it says otherwise). Rate limits: one
 * bucket per (route, key); the key is the principal's subject when there is one, else the API key,
 * else the client's address (`X-Forwarded-For` is believed only from `trustedProxies`).
 */
import type { AccessRule } from '../contract/contract.ts';
import type { Principal } from '../runtime/principal.ts';
import { assertAllowed } from './auth/access.ts';
import type { Authenticator } from './auth/authenticator.ts';
import type { GatewayOptions, GatewayRequest, GatewayRoute, RateLimitDecision } from './options.ts';
import { rateLimitHeaders } from './rate-limit/headers.ts';
import { byClientAddress, type RateLimitKey, type RequestLike } from './rate-limit/keys.ts';
import { type RateLimiter, refuse } from './rate-limit/limiter.ts';

export interface GatewayAuthOptions {
  authenticator: Authenticator;
  /** The rule of a route whose action declares no `access`. Default `{ public: true }`. */
  defaultAccess?: AccessRule;
}

/** `authenticate` and `authorize` hooks for `createGateway`. */
export function gatewayAuth(options: GatewayAuthOptions): Pick<GatewayOptions, 'authenticate' | 'authorize'> {
  const fallback = options.defaultAccess ?? { public: true };
  return {
    authenticate: (request) => options.authenticator.authenticate(request.headers),
    authorize: (principal, route) => assertAllowed(principal, route.def.access ?? fallback),
  };
}

export interface GatewayRateLimitOptions {
  limiter: RateLimiter;
  /** Proxies whose `X-Forwarded-For` is believed (CIDRs). Default: none. */
  trustedProxies?: readonly string[];
  /**
   * The bucket key of a request; default: the principal's subject, else the client's address. (Not
   * an API key the request merely carries: unverified, a new one per request would be a new
   * bucket each time; a verified one is a principal.)
   */
  key?: (request: GatewayRequest, principal: Principal | undefined) => string | undefined;
}

/** A `rateLimit` hook for `createGateway`. */
export function gatewayRateLimit(options: GatewayRateLimitOptions): Pick<GatewayOptions, 'rateLimit'> {
  const { limiter } = options;
  const address: RateLimitKey<RequestLike> = byClientAddress({
    trustedProxies: options.trustedProxies ?? [],
  });
  const keyOf =
    options.key ??
    ((request: GatewayRequest, principal: Principal | undefined) => {
      if (principal !== undefined) return `user:${principal.kind}:${principal.subject}`;
      return address({ remoteAddress: request.ip, headers: request.headers });
    });
  return {
    async rateLimit(request: GatewayRequest, route: GatewayRoute, principal): Promise<RateLimitDecision> {
      // No key (no address at all): one shared bucket, so such requests are still limited.
      const key = keyOf(request, principal) ?? 'unknown';
      const decision = await limiter.take({ route: `${route.method} ${route.path}`, key });
      const headers = rateLimitHeaders(decision, limiter.policy);
      return decision.allowed ? { headers } : { headers, refused: refuse(decision) };
    },
  };
}
