/**
 * @module gateway/auth/jwt-verifier
 * Verifies a compact JWS bearer token with jose and turns it into a Principal. The policy is fixed
 * where it matters for safety: an allow-list of one algorithm family, `iss`, `aud`, `exp` and
 * `sub` required, `nbf` honoured, clock skew bounded, size bounded before any parsing. Every
 * refusal is UNAUTHENTICATED with a reason code (see failure.ts); a key source that cannot be
 * reached is UNAVAILABLE, because then the fault is ours, not the token's.
 */
import { type JWTPayload, type JWTVerifyOptions, jwtVerify } from 'jose';
import { ParleyError } from '../../errors.ts';
import { type Clock, systemClock } from '../../runtime/clock.ts';
import { checkAllowList, type JwsAlgorithm } from './algorithms.ts';
import { type AuthFailureReason, authFailure, badAuthConfig } from './failure.ts';
import { type KeySource, resolveKeySource } from './key-source.ts';
import { type ClaimPath, createPrincipal, namesFromClaim, type Principal, readClaim } from './principal.ts';

export interface JwtVerifierOptions {
  /** One family: HMAC (`HS*`) or asymmetric (`RS*`, `PS*`, `ES*`, `EdDSA`, ...), never both. */
  algorithms: readonly JwsAlgorithm[];
  keys: KeySource;
  /** Accepted `iss` values; the claim is required. */
  issuer: string | readonly string[];
  /** Accepted `aud` values (any one matching); the claim is required. */
  audience: string | readonly string[];
  /** Allowed clock skew for `exp`, `nbf` and `iat`. Default 30, at most 300. */
  clockToleranceSeconds?: number;
  /** When set, `iat` is required and a token older than this is refused as expired. */
  maxTokenAgeSeconds?: number;
  /** Tokens longer than this are refused before they are decoded. Default 8 KiB. */
  maxTokenBytes?: number;
  /** Required `typ` header, e.g. `at+jwt` (RFC 9068). Not checked when unset. */
  typ?: string;
  /** Default `roles`. */
  rolesClaim?: ClaimPath;
  /** Default `scope` (a space-separated string or an array). */
  scopesClaim?: ClaimPath;
  /** Tells service tokens (client credentials) from user tokens. Default: every token is a user. */
  kindOf?: (claims: Readonly<Record<string, unknown>>) => 'user' | 'service';
  clock?: Clock;
}

export interface JwtVerifier {
  /** The token without its `Bearer ` prefix. */
  verify(token: string): Promise<Principal>;
}

const MAX_SKEW_SECONDS = 300;
// Three base64url segments; the signature may be empty so that `alg: none` tokens reach the
// algorithm check and are refused as alg_not_allowed rather than as noise.
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

export function createJwtVerifier(options: JwtVerifierOptions): JwtVerifier {
  const allow = checkAllowList(options.algorithms);
  const clock = options.clock ?? systemClock;
  const key = resolveKeySource(options.keys, allow, clock);
  const issuer = nonEmptyList(options.issuer, 'issuer');
  const audience = nonEmptyList(options.audience, 'audience');
  const skew = options.clockToleranceSeconds ?? 30;
  if (!Number.isFinite(skew) || skew < 0 || skew > MAX_SKEW_SECONDS)
    throw badAuthConfig(`clockToleranceSeconds must be between 0 and ${MAX_SKEW_SECONDS}`);
  const maxAge = options.maxTokenAgeSeconds;
  if (maxAge !== undefined && (!Number.isFinite(maxAge) || maxAge <= 0))
    throw badAuthConfig('maxTokenAgeSeconds must be a positive number');
  const maxBytes = options.maxTokenBytes ?? 8192;
  if (!Number.isInteger(maxBytes) || maxBytes <= 0)
    throw badAuthConfig('maxTokenBytes must be a positive integer');
  const rolesClaim = options.rolesClaim ?? 'roles';
  const scopesClaim = options.scopesClaim ?? 'scope';
  const kindOf = options.kindOf ?? (() => 'user');

  return {
    async verify(token) {
      // Length first: nothing below (regex, base64, JSON, crypto) runs on an oversized input.
      if (token.length > maxBytes) throw authFailure('too_large');
      if (!COMPACT_JWS.test(token)) throw authFailure('malformed');
      const verifyOptions: JWTVerifyOptions = {
        algorithms: [...allow.algorithms],
        issuer,
        audience,
        clockTolerance: skew,
        requiredClaims: ['exp', 'sub'],
        currentDate: new Date(clock.now()),
        ...(maxAge === undefined ? {} : { maxTokenAge: maxAge }),
        ...(options.typ === undefined ? {} : { typ: options.typ }),
      };
      let payload: JWTPayload;
      try {
        // Two calls because jwtVerify's overloads take a key or a resolver, not the union.
        ({ payload } =
          typeof key === 'function'
            ? await jwtVerify(token, key, verifyOptions)
            : await jwtVerify(token, key, verifyOptions));
      } catch (error) {
        throw toParleyError(error);
      }
      if (typeof payload.sub !== 'string' || payload.sub === '') throw authFailure('malformed');
      const claims: Readonly<Record<string, unknown>> = payload;
      return createPrincipal({
        kind: kindOf(claims),
        subject: payload.sub,
        roles: namesFromClaim(readClaim(claims, rolesClaim)),
        scopes: namesFromClaim(readClaim(claims, scopesClaim)),
        claims,
      });
    },
  };
}

/** jose's error codes to ours. The jose error is not kept as `cause`: it carries the claims. */
function toParleyError(error: unknown): ParleyError {
  if (error instanceof ParleyError) return error;
  const e = error as { code?: unknown; claim?: unknown; reason?: unknown } | null;
  const reason = reasonOf(e?.code, e?.claim, e?.reason);
  if (reason !== undefined) return authFailure(reason);
  // jose throws TypeError when the token's algorithm does not fit the key we hold (ES256 against an
  // RSA key, say): whatever the token says, we have no key for it.
  if (error instanceof TypeError) return authFailure('unknown_key');
  // A key of the set that cannot be imported (a malformed member the IdP published): no key for it.
  if ((error as { name?: unknown } | null)?.name === 'DataError' || e?.code === 'ERR_JWKS_INVALID')
    return authFailure('unknown_key');
  return ParleyError.from(error);
}

function reasonOf(code: unknown, claim: unknown, why: unknown): AuthFailureReason | undefined {
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return 'expired';
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return 'bad_signature';
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return 'alg_not_allowed';
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return 'unknown_key';
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return 'malformed';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (claim === 'iss') return 'bad_issuer';
      if (claim === 'aud') return 'bad_audience';
      // `nbf` ahead of the clock, or `iat` in the future (checked with maxTokenAge).
      if ((claim === 'nbf' || claim === 'iat') && why === 'check_failed') return 'not_yet_valid';
      return 'malformed';
    default:
      return undefined;
  }
}

function nonEmptyList(value: string | readonly string[], name: string): string[] {
  const list = typeof value === 'string' ? [value] : [...value];
  if (list.length === 0 || list.some((v) => typeof v !== 'string' || v === ''))
    throw badAuthConfig(`${name} must be a non-empty string or list of strings`);
  return list;
}
