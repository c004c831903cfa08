/**
 * @module gateway/auth/secrets
 * Presented secrets (API keys, internal service tokens) checked against configured ones by their
 * SHA-256 digests: fixed-length, compared with `timingSafeEqual` against every entry without
 * stopping at a match, so neither the comparison nor the loop tells how close a guess was.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

export function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** The value of the entry whose digest is the presented secret's; undefined when none is. */
export function matchSecret<T>(
  presented: string,
  entries: readonly { readonly digest: Buffer; readonly value: T }[],
): T | undefined {
  const digest = sha256(presented);
  let found: T | undefined;
  for (const entry of entries) {
    if (timingSafeEqual(digest, entry.digest) && found === undefined) found = entry.value;
  }
  return found;
}

/** The scheme is case-insensitive (RFC 9110 11.1), as on the public routes. */
const BEARER = /^bearer +/i;

/** True when an `Authorization` header carries one of `tokens` as `Bearer <token>`. */
export function bearerCheck(tokens: readonly string[]): (authorization: unknown) => boolean {
  const entries = tokens.map((token) => ({ digest: sha256(token), value: true }));
  return (header) => {
    if (typeof header !== 'string') return false;
    const scheme = BEARER.exec(header);
    return scheme !== null && matchSecret(header.slice(scheme[0].length), entries) === true;
  };
}
