/**
 * @module gateway/auth/remote-jwks
 * A JWKS fetched from the identity provider's URL and cached. Fetches are rate-limited by one rule:
 * at most one fetch per `cooldownMs`, whatever asks for it (a token with an unknown `kid`, a stale
 * set, a failed fetch), and at most one in flight. So a flood of tokens with random `kid`s costs
 * at most one fetch per cooldown, and an identity provider that is down is not hammered by every
 * request. Key selection within a fetched set is jose's `createLocalJWKSet`.
 *
 * We own this rather than use jose's `createRemoteJWKSet` because that one retries a failed fetch
 * on every request (no backoff after failure) and reads `Date.now()` directly, which a test cannot
 * drive; here time is the injected Clock.
 */
import {
  type CryptoKey,
  createLocalJWKSet,
  type FlattenedJWSInput,
  type JSONWebKeySet,
  type JWK,
  type JWSHeaderParameters,
  type LocalJWKSet,
} from 'jose';
import { type Clock, systemClock } from '../../runtime/clock.ts';
import { badAuthConfig, keysUnavailable } from './failure.ts';

export interface RemoteJwksOptions {
  url: string | URL;
  /** Least time between two fetches, whatever triggers them. Default 30 s. */
  cooldownMs?: number;
  /** A set older than this is refetched on next use (kept if the refetch fails). Default 10 min. */
  maxAgeMs?: number;
  /** Default 5 s. */
  timeoutMs?: number;
  /** The largest JWKS response accepted. Default 256 KiB. */
  maxBytes?: number;
  /** Allow an `http:` URL. Off by default: keys fetched in clear text can be swapped in transit. */
  insecureHttp?: boolean;
  clock?: Clock;
}

export interface RemoteKeySet {
  (header: JWSHeaderParameters, token: FlattenedJWSInput): Promise<CryptoKey>;
  /** Fetches attempted so far, successful or not (for tests and metrics). */
  readonly fetches: number;
}

export function createRemoteKeySet(options: RemoteJwksOptions): RemoteKeySet {
  const url = parseUrl(options);
  const clock = options.clock ?? systemClock;
  const cooldownMs = nonNegative(options.cooldownMs ?? 30_000, 'cooldownMs');
  const maxAgeMs = nonNegative(options.maxAgeMs ?? 600_000, 'maxAgeMs');
  const timeoutMs = nonNegative(options.timeoutMs ?? 5_000, 'timeoutMs');
  const maxBytes = nonNegative(options.maxBytes ?? 256 * 1024, 'maxBytes');

  let local: LocalJWKSet | undefined;
  let fetchedAt = Number.NEGATIVE_INFINITY;
  let attemptedAt = Number.NEGATIVE_INFINITY;
  let pending: Promise<void> | undefined;
  let fetches = 0;

  // The clock is the wall clock: after it steps back (an NTP correction, a restored VM) an interval
  // reads negative, and would stay short of the cooldown until the clock caught up again, maybe
  // hours. A negative one counts as elapsed; the fetch it allows resets the mark, so a step back
  // costs at most one extra fetch.
  const elapsed = (since: number, ms: number): boolean => {
    const interval = clock.now() - since;
    return interval < 0 || interval >= ms;
  };
  const mayFetch = (): boolean => elapsed(attemptedAt, cooldownMs);

  // Shared by every caller while a fetch is in flight. A failure is swallowed here when an older
  // set exists (serving slightly stale keys beats refusing every token while the IdP is down).
  const refresh = (): Promise<void> => {
    if (pending !== undefined) return pending;
    attemptedAt = clock.now();
    fetches++;
    pending = fetchJwks(url, { timeoutMs, maxBytes })
      .then((jwks) => {
        local = createLocalJWKSet(jwks);
        fetchedAt = clock.now();
      })
      .finally(() => {
        pending = undefined;
      });
    return pending;
  };

  const current = async (): Promise<LocalJWKSet> => {
    const stale = elapsed(fetchedAt, maxAgeMs);
    if (stale && (pending !== undefined || mayFetch())) {
      try {
        await refresh();
      } catch (cause) {
        if (local === undefined) throw keysUnavailable(cause);
      }
    }
    if (local === undefined) throw keysUnavailable();
    return local;
  };

  const resolve = async (header: JWSHeaderParameters, token: FlattenedJWSInput): Promise<CryptoKey> => {
    const set = await current();
    let miss: unknown;
    try {
      return await set(header, token);
    } catch (error) {
      if (!isNoMatchingKey(error)) throw error;
      miss = error;
    }
    // An unknown kid may be a key the IdP has just rotated in: look once more, in a set fetched
    // since we looked, or in the one being fetched (tokens with the new kid arrive together, and
    // only the first may start the fetch), or in a new one if the cooldown allows.
    if (local === set) {
      if (pending === undefined && !mayFetch()) throw miss;
      try {
        await refresh();
      } catch (cause) {
        throw keysUnavailable(cause);
      }
    }
    return (await current())(header, token);
  };

  return Object.defineProperty(resolve, 'fetches', { get: () => fetches, enumerable: true }) as RemoteKeySet;
}

function isNoMatchingKey(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === 'ERR_JWKS_NO_MATCHING_KEY';
}

async function fetchJwks(url: URL, limits: { timeoutMs: number; maxBytes: number }): Promise<JSONWebKeySet> {
  const response = await fetch(url, {
    signal: AbortSignal.timeout(limits.timeoutMs),
    // A redirect could point us at keys someone else controls.
    redirect: 'error',
    headers: { accept: 'application/jwk-set+json, application/json' },
  });
  if (response.status !== 200) {
    await response.body?.cancel();
    throw new Error(`JWKS fetch: HTTP ${response.status}`);
  }
  const text = await readBounded(response, limits.maxBytes);
  return usableKeys(JSON.parse(text));
}

/** Members a public key set may hold only in a private key (or a shared secret). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

/**
 * The set's public keys. One member that is no key (null, no `kty`) or a private key (published by
 * mistake) is left out, not a reason to refuse the whole set, which would refuse every token; a set
 * with no usable key at all fails the fetch (the old set, if any, stays).
 */
function usableKeys(value: unknown): JSONWebKeySet {
  const keys = (value as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) throw new Error('JWKS: no list of keys');
  const usable = keys.filter(
    (k): k is JWK =>
      typeof k === 'object' &&
      k !== null &&
      !Array.isArray(k) &&
      typeof (k as JWK).kty === 'string' &&
      PRIVATE_MEMBERS.every((m) => !(m in k)),
  );
  if (usable.length === 0) throw new Error('JWKS: no usable public key');
  return { keys: usable };
}

async function readBounded(response: Response, maxBytes: number): Promise<string> {
  const declared = Number(response.headers.get('content-length') ?? 0);
  if (declared > maxBytes) {
    await response.body?.cancel();
    throw new Error('JWKS response too large');
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (response.body === null) return '';
  for await (const chunk of response.body) {
    size += chunk.byteLength;
    if (size > maxBytes) throw new Error('JWKS response too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseUrl(options: RemoteJwksOptions): URL {
  let url: URL;
  try {
    url = new URL(options.url);
  } catch {
    throw badAuthConfig('remote JWKS url is not a URL');
  }
  if (url.protocol === 'https:') return url;
  if (url.protocol === 'http:' && options.insecureHttp === true) return url;
  throw badAuthConfig('remote JWKS url must be https: (or http: with insecureHttp: true)');
}

function nonNegative(value: number, name: string): number {
  if (!Number.isFinite(value) || value < 0) throw badAuthConfig(`${name} must be a finite number >= 0`);
  return value;
}
