/**
 * @module gateway/auth/api-keys
 * API keys presented in a header (default `x-api-key`). The configuration holds only SHA-256
 * hashes of the keys, so a leaked config file does not leak keys. The presented key is hashed and
 * compared with every configured hash in constant time, without stopping at a match, so timing
 * tells an attacker neither how close a guess was nor which entry it hit.
 */
import { authFailure, badAuthConfig } from './failure.ts';
import { createPrincipal, type Principal } from './principal.ts';
import { matchSecret, sha256 } from './secrets.ts';

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
  return sha256(key).toString('hex');
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
    return { digest: Buffer.from(hex, 'hex'), value: principal };
  });

  return {
    header,
    verify(presented) {
      if (presented.length > maxKeyLength) throw authFailure('too_large');
      if (presented === '') throw authFailure('bad_api_key');
      const found = matchSecret(presented, entries);
      if (found === undefined) throw authFailure('bad_api_key');
      return found;
    },
  };
}
