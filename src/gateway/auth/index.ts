/**
 * @module gateway/auth
 * Gateway authentication, independent of the HTTP server: `createAuthenticator` turns a request's
 * headers into a Principal (or anonymous), `assertAllowed` checks a route's access rule.
 */
export { type AccessRule, allowed, assertAllowed } from './access.ts';
export type { AsymmetricAlgorithm, HmacAlgorithm, JwsAlgorithm } from './algorithms.ts';
export { type ApiKeyEntry, type ApiKeyOptions, hashApiKey } from './api-keys.ts';
export {
  type Authenticator,
  type AuthenticatorOptions,
  createAuthenticator,
  type RequestHeaders,
} from './authenticator.ts';
export { AUTH_FAILURE_REASONS, type AuthFailureReason } from './failure.ts';
export { createJwtVerifier, type JwtVerifier, type JwtVerifierOptions } from './jwt-verifier.ts';
export type { KeySource } from './key-source.ts';
export type { ClaimPath, Principal, PrincipalKind } from './principal.ts';
export type { RemoteJwksOptions } from './remote-jwks.ts';
