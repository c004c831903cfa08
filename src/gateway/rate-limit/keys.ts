/**
 * @module gateway/rate-limit/keys
 * Who a bucket belongs to: functions of the request that the gateway picks per route. Each key
 * names its kind (`user:`, `apikey:`, `ip:`) so that a user id can never share a bucket with an
 * address. `firstKey` tries several in order: the user when signed in, else the API key, else the
 * address.
 */
import { createHash } from 'node:crypto';
import { clientAddress, createTrustedProxies, type TrustedProxies } from './client-address.ts';

/** The little of a request the key functions read, whatever the HTTP server. */
export interface RequestLike {
  remoteAddress?: string | undefined;
  /** Lower-case names, as Node gives them. */
  headers: Readonly<Record<string, string | readonly string[] | undefined>>;
}

/** A request's bucket key, or undefined when this function cannot name one (then try the next). */
export type RateLimitKey<R> = (request: R) => string | undefined;

/** By the authenticated user, as the auth step found it. */
export function byUser<R>(userOf: (request: R) => string | undefined): RateLimitKey<R> {
  return (request) => {
    const user = userOf(request);
    return user === undefined || user === '' ? undefined : `user:${user}`;
  };
}

/**
 * By API key, from a header (default `x-api-key`). The key is hashed: bucket names end up in
 * Redis and in logs, and a secret must not.
 */
export function byApiKey(options: { header?: string } = {}): RateLimitKey<RequestLike> {
  const header = (options.header ?? 'x-api-key').toLowerCase();
  return (request) => {
    const value = request.headers[header];
    const key = typeof value === 'string' ? value : value?.[0];
    if (key === undefined || key === '') return undefined;
    return `apikey:${createHash('sha256').update(key).digest('base64url').slice(0, 22)}`;
  };
}

export interface ByClientAddressOptions {
  trustedProxies?: readonly string[];
  /**
   * IPv6 clients are limited per network of this prefix (default 64): a single host is usually
   * given a whole /64 and could otherwise take a fresh address, and a fresh bucket, per request.
   */
  ipv6Prefix?: number;
}

/** By client address (see `clientAddress`), IPv6 grouped by prefix. */
export function byClientAddress(options: ByClientAddressOptions = {}): RateLimitKey<RequestLike> {
  const trustedProxies: TrustedProxies = createTrustedProxies(options.trustedProxies ?? []);
  const prefix = options.ipv6Prefix ?? 64;
  return (request) => {
    const address = clientAddress({
      remoteAddress: request.remoteAddress,
      forwardedFor: request.headers['x-forwarded-for'],
      trustedProxies,
    });
    if (address === undefined) return undefined;
    return `ip:${address.includes(':') ? maskIpv6(address, prefix) : address}`;
  };
}

/** The first key any of `keys` names. */
export function firstKey<R>(...keys: RateLimitKey<R>[]): RateLimitKey<R> {
  return (request) => {
    for (const key of keys) {
      const k = key(request);
      if (k !== undefined) return k;
    }
    return undefined;
  };
}

/** `address` (canonical IPv6, no embedded IPv4) with the bits past `prefix` cleared, as `net/prefix`. */
export function maskIpv6(address: string, prefix: number): string {
  if (prefix >= 128) return address;
  const [head = '', tail] = address.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right].map((g) =>
    Number.parseInt(g, 16),
  );
  const masked = groups.map((g, i) => {
    const bits = Math.min(16, Math.max(0, prefix - i * 16));
    return bits === 16 ? g : bits === 0 ? 0 : g & (0xffff << (16 - bits)) & 0xffff;
  });
  return `${masked.map((g) => g.toString(16)).join(':')}/${prefix}`;
}
