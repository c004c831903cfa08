/**
 * @module gateway/auth/key-source
 * Where a JWT verifier gets its keys: one static key, a JWKS given inline, or a JWKS fetched from
 * a URL. Each source is checked against the algorithm family at construction, so a key that could
 * be misused (an RSA public key where HMAC is allowed, a private key at all, a short secret) stops
 * the gateway from starting instead of waiting for an attacker to find it.
 */
import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey, type KeyInput } from 'jose';
import { ParleyError } from '../../errors.ts';
import type { Clock } from '../../runtime/clock.ts';
import type { AllowList } from './algorithms.ts';
import { authFailure, badAuthConfig } from './failure.ts';
import { createRemoteKeySet, type RemoteJwksOptions } from './remote-jwks.ts';

export type KeySource =
  /** One key: a public key (KeyObject, CryptoKey or JWK) for asymmetric algorithms, a secret for HMAC. */
  | { type: 'static'; key: KeyInput }
  /** A JSON Web Key Set held in memory; keys chosen by `kid` (and `alg`). Asymmetric only. */
  | { type: 'jwks'; jwks: JSONWebKeySet }
  /** A JSON Web Key Set fetched from the identity provider. Asymmetric only. */
  | ({ type: 'remoteJwks' } & Omit<RemoteJwksOptions, 'clock'>);

/** What jose's `jwtVerify` takes as its key argument. */
export function resolveKeySource(
  source: KeySource,
  allow: AllowList,
  clock: Clock,
): KeyInput | JWTVerifyGetKey {
  switch (source.type) {
    case 'static':
      checkStaticKey(source.key, allow);
      return source.key;
    case 'jwks': {
      // A JWKS is a published list of public keys; a shared secret has no business in one.
      if (allow.family !== 'asymmetric') throw badAuthConfig('a JWKS needs asymmetric algorithms');
      let set: ReturnType<typeof createLocalJWKSet>;
      try {
        set = createLocalJWKSet(source.jwks);
      } catch {
        throw badAuthConfig('jwks is not a valid JSON Web Key Set');
      }
      return noKeyOnFailure(set);
    }
    case 'remoteJwks': {
      if (allow.family !== 'asymmetric') throw badAuthConfig('a remote JWKS needs asymmetric algorithms');
      return noKeyOnFailure(createRemoteKeySet({ ...source, clock }));
    }
    default:
      throw badAuthConfig('unknown key source type');
  }
}

/**
 * A set's member is imported when a token first names it, and WebCrypto refuses members in more
 * ways than anyone lists (DataError, SyntaxError for `key_ops` with `sign` on a public key,
 * NotSupportedError for an algorithm this runtime lacks): whichever, we have no key for the token.
 * Our own errors (keys unavailable: the set could not be fetched) pass as they are.
 */
function noKeyOnFailure(resolve: JWTVerifyGetKey): JWTVerifyGetKey {
  return async (header, token) => {
    try {
      return await resolve(header, token);
    } catch (error) {
      if (error instanceof ParleyError) throw error;
      throw authFailure('unknown_key');
    }
  };
}

type KeyRole = 'secret' | 'public' | 'private';

function checkStaticKey(key: KeyInput, allow: AllowList): void {
  const role = roleOf(key);
  if (role === undefined) throw badAuthConfig('static key is not a KeyObject, CryptoKey, JWK or Uint8Array');
  // The gateway verifies; it must never hold a key that can mint tokens for an asymmetric issuer.
  if (role === 'private') throw badAuthConfig('static key must be a public key, not a private one');
  if (allow.family === 'asymmetric' && role !== 'public')
    throw badAuthConfig('asymmetric algorithms need a public key');
  if (allow.family === 'hmac') {
    if (role !== 'secret') throw badAuthConfig('HMAC algorithms need a secret key');
    // A secret we cannot measure is refused too: accepting it would let a short one through.
    const length = secretLength(key);
    if (length === undefined || length < allow.minSecretBytes)
      throw badAuthConfig(`HMAC secret must be at least ${allow.minSecretBytes} bytes`);
  }
}

function roleOf(key: KeyInput): KeyRole | undefined {
  if (key instanceof Uint8Array) return 'secret';
  if (typeof key !== 'object' || key === null) return undefined;
  // KeyObject and CryptoKey both say what they are in `type`.
  const type = (key as { type?: unknown }).type;
  if (type === 'secret' || type === 'public' || type === 'private') return type;
  const jwk = key as { kty?: unknown; d?: unknown };
  if (typeof jwk.kty !== 'string') return undefined;
  if (jwk.kty === 'oct') return 'secret';
  return jwk.d === undefined ? 'public' : 'private';
}

function secretLength(key: KeyInput): number | undefined {
  if (key instanceof Uint8Array) return key.byteLength;
  const sized = key as { symmetricKeySize?: unknown; k?: unknown; algorithm?: { length?: unknown } };
  if (typeof sized.symmetricKeySize === 'number') return sized.symmetricKeySize;
  // A CryptoKey gives its HMAC key's length in bits.
  const bits = sized.algorithm?.length;
  if (typeof bits === 'number') return Math.floor(bits / 8);
  if (typeof sized.k === 'string') return Buffer.from(sized.k, 'base64url').byteLength;
  return undefined;
}
