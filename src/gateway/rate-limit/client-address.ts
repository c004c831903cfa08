/**
 * @module gateway/rate-limit/client-address
 * The client's address behind reverse proxies. `X-Forwarded-For` is written by whoever sent the
 * request, so it is believed only as far as a chain of proxies we trust: starting from the TCP
 * peer, while the current address is a trusted proxy, step to the entry it appended (the
 * rightmost one left). The first untrusted address is the client. A client can put anything in
 * the header, but it cannot make its own address disappear from the right end.
 * (RFC 7239 `Forwarded` is not read: the proxies in front of us write X-Forwarded-For.)
 */
import { BlockList, isIP } from 'node:net';
import { ParleyError } from '../../errors.ts';

/** A set of proxy networks, built once from CIDRs (`10.0.0.0/8`, `fd00::/8`, or a bare address). */
export interface TrustedProxies {
  has(address: string): boolean;
}

export function createTrustedProxies(cidrs: readonly string[]): TrustedProxies {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [host = '', bits, extra] = cidr.trim().split('/');
    const family = isIP(host);
    const max = family === 4 ? 32 : 128;
    // Until 2026-12-03 an empty prefix ("10.0.0.1/", an unset variable) was Number('') = 0: /0,
    // every address trusted. Only digits count as a prefix length.
    const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : Number.NaN;
    if (family === 0 || extra !== undefined || !(prefix <= max)) {
      throw new ParleyError('INVALID_ARGUMENT', `trusted proxy: not an address or CIDR: ${cidr}`);
    }
    // BlockList matches IPv4-mapped IPv6 addresses against IPv4 rules and the other way round.
    list.addSubnet(host, prefix, family === 4 ? 'ipv4' : 'ipv6');
  }
  return {
    has(address) {
      const family = isIP(address);
      return family !== 0 && list.check(address, family === 4 ? 'ipv4' : 'ipv6');
    },
  };
}

/**
 * One address in a canonical form: IPv4 dotted, IPv4-mapped IPv6 as IPv4, other IPv6 compressed
 * and lower-case (RFC 5952, as the URL parser writes it), so one client has one spelling. Takes
 * `[v6]`, `[v6]:port` and `v4:port` as some proxies write them; anything else is undefined.
 */
export function normalizeAddress(raw: string): string | undefined {
  // No address is longer; anything longer is garbage and is not worth parsing.
  if (raw.length > 64) return undefined;
  let s = raw.trim();
  const bracket = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(s);
  if (bracket !== null) s = bracket[1] ?? '';
  else if (/^[\d.]+:\d{1,5}$/.test(s)) s = s.slice(0, s.indexOf(':'));
  // A zone (fe80::1%eth0) names an interface of the peer's link, not a different client.
  const zone = s.indexOf('%');
  if (zone !== -1 && isIP(s) === 6) s = s.slice(0, zone);
  const family = isIP(s);
  if (family === 4) return s;
  if (family !== 6) return undefined;
  const v6 = new URL(`http://[${s}]/`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(v6);
  if (mapped === null) return v6;
  const hi = Number.parseInt(mapped[1] ?? '0', 16);
  const lo = Number.parseInt(mapped[2] ?? '0', 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

export interface ClientAddressOptions {
  /** The TCP peer (`socket.remoteAddress`); undefined when the socket is already gone. */
  remoteAddress: string | undefined;
  /** The `X-Forwarded-For` header as received: one value, several (repeated header), or none. */
  forwardedFor?: string | readonly string[] | undefined;
  /** Proxies whose X-Forwarded-For entries are believed; none by default. */
  trustedProxies?: TrustedProxies | readonly string[];
  /** At most this many entries are read from the right (default 16): the work per request is bounded. */
  maxHops?: number;
}

/** Yields the comma-separated entries of the header values, rightmost first, without splitting it all. */
function* fromTheRight(values: readonly string[]): Generator<string> {
  for (let v = values.length - 1; v >= 0; v--) {
    const value = values[v] ?? '';
    let end = value.length;
    for (;;) {
      // lastIndexOf clamps a negative start to 0 and would find a leading comma again.
      const comma = end === 0 ? -1 : value.lastIndexOf(',', end - 1);
      yield value.slice(comma + 1, end);
      if (comma === -1) break;
      end = comma;
    }
  }
}

/**
 * The client's address, canonical (see `normalizeAddress`); undefined only when the peer's own
 * address is missing or unreadable. A malformed entry stops the walk: the last trusted hop, the
 * one that wrote it, is taken as the client, since nothing further left can be believed.
 */
export function clientAddress(options: ClientAddressOptions): string | undefined {
  const peer = options.remoteAddress === undefined ? undefined : normalizeAddress(options.remoteAddress);
  if (peer === undefined) return undefined;
  const trusted = options.trustedProxies;
  if (trusted === undefined) return peer;
  const proxies = Array.isArray(trusted)
    ? createTrustedProxies(trusted as readonly string[])
    : (trusted as TrustedProxies);
  const header = options.forwardedFor;
  const values: readonly string[] =
    header === undefined ? [] : typeof header === 'string' ? [header] : header;
  const maxHops = options.maxHops ?? 16;
  let current = peer;
  let hops = 0;
  for (const entry of fromTheRight(values)) {
    if (!proxies.has(current) || hops >= maxHops) break;
    const next = normalizeAddress(entry);
    if (next === undefined) break;
    current = next;
    hops++;
  }
  return current;
}
