/**
 * @module gateway/auth/api-keys
 * API keys presented in a header (default `x-api-key`). The configuration holds only SHA-256
 * hashes of the keys, so a leaked config file does not leak keys. The presented key is hashed and
 * compared with every configured hash in constant time, without stopping at a match, so timing
 * tells an attacker neither how close a guess was nor which entry it hit.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { authFailure, badAuthConfig } from './failure.ts';
import { createPrincipal, type Principal } from './principal.ts';

export interface ApiKeyEntry {
  /** Hex SHA-256 of the key (see `hashApiKey`). */
  sha256: string;
  subject: string;
  roles?: readonly string[];
  scopes?: readonly string[];
}

export interface ApiKeyOptions {
  keys: readonly ApiKeyEntry[];
  /** Header carrying the key. Default `x-api-key`. */
  header?: string;
  /** Longer keys are refused before hashing. Default 512. */
  maxKeyLength?: number;
}

export interface ApiKeyVerifier {
  /** The lower-case header name the key is read from. */
  readonly header: string;
  verify(presented: string): Principal;
}

/** The hex SHA-256 of a key, as stored in `ApiKeyEntry.sha256`. */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

export function createApiKeyVerifier(options: ApiKeyOptions): ApiKeyVerifier {
  const header = (options.header ?? 'x-api-key').toLowerCase();
  const maxKeyLength = options.maxKeyLength ?? 512;
  const seen = new Set<string>();
  const entries = options.keys.map((entry) => {
    const hex = typeof entry.sha256 === 'string' ? entry.sha256.toLowerCase() : '';
    if (!/^[0-9a-f]{64}$/.test(hex))
      throw badAuthConfig(`API key for ${entry.subject}: sha256 is not 64 hex digits`);
    if (seen.has(hex)) throw badAuthConfig(`API key for ${entry.subject}: the same key is configured twice`);
    if (typeof entry.subject !== 'string' || entry.subject === '')
      throw badAuthConfig('API key entry needs a subject');
    seen.add(hex);
    const principal = createPrincipal({
      kind: 'apiKey',
      subject: entry.subject,
      roles: entry.roles ?? [],
      scopes: entry.scopes ?? [],
    });
    return { hash: Buffer.from(hex, 'hex'), principal };
  });

  return {
    header,
    verify(presented) {
      if (presented.length > maxKeyLength) throw authFailure('too_large');
      if (presented === '') throw authFailure('bad_api_key');
      const digest = createHash('sha256').update(presented, 'utf8').digest();
      let found: Principal | undefined;
      for (const entry of entries) {
        // No early exit: every entry costs the same whether or not an earlier one matched.
        if (timingSafeEqual(digest, entry.hash) && found === undefined) found = entry.principal;
      }
      if (found === undefined) throw authFailure('bad_api_key');
      return found;
    },
  };
}
