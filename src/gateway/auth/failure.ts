/**
 * @module gateway/auth/failure
 * The one way authentication says no. A refused credential is UNAUTHENTICATED with a short reason
 * code in `details.reason` and a fixed message: the client learns which rule failed, never the
 * token's contents, the key it was checked against, or the verifier's internals.
 */
import { ParleyError } from '../../errors.ts';

/** Every reason a presented credential can be refused for. */
export const AUTH_FAILURE_REASONS = [
  'malformed',
  'expired',
  'not_yet_valid',
  'bad_signature',
  'bad_issuer',
  'bad_audience',
  'unknown_key',
  'alg_not_allowed',
  'too_large',
  'bad_api_key',
] as const;

export type AuthFailureReason = (typeof AUTH_FAILURE_REASONS)[number];

/** UNAUTHENTICATED for a credential that was presented but refused. */
export function authFailure(reason: AuthFailureReason): ParleyError {
  return new ParleyError('UNAUTHENTICATED', 'invalid credentials', { details: { reason } });
}

/** UNAUTHENTICATED for a request that presented no credential where one is needed. */
export function credentialsRequired(): ParleyError {
  return new ParleyError('UNAUTHENTICATED', 'credentials required');
}

/**
 * The key source could not be reached (a remote JWKS down or broken). The token may well be good,
 * so this is our failure, retryable, not the client's.
 */
export function keysUnavailable(cause?: unknown): ParleyError {
  return new ParleyError('UNAVAILABLE', 'signing keys unavailable', {
    details: { reason: 'keys_unavailable' },
    cause,
  });
}

/** Misconfiguration found at construction: fail at startup, not on the first request. */
export function badAuthConfig(message: string): ParleyError {
  return new ParleyError('INVALID_ARGUMENT', `auth config: ${message}`);
}
