/**
 * @module gateway/auth/authenticator
 * What the gateway calls once per request with the request's headers. It knows nothing of Fastify:
 * headers are a plain record with lower-case names, as Node's `IncomingHttpHeaders` is.
 *
 * A request without credentials is anonymous (`undefined`); whether that is enough is the access
 * rule's decision. A request *with* a credential that fails is refused, even on a public route: a
 * client with a broken token should hear so, not be quietly served as nobody.
 */
import { type ApiKeyOptions, type ApiKeyVerifier, createApiKeyVerifier } from './api-keys.ts';
import { authFailure, badAuthConfig } from './failure.ts';
import { createJwtVerifier, type JwtVerifier, type JwtVerifierOptions } from './jwt-verifier.ts';
import type { Principal } from './principal.ts';

export type RequestHeaders = Readonly<Record<string, string | readonly string[] | undefined>>;

export interface AuthenticatorOptions {
  /** Bearer JWTs in `Authorization`. When unset, `Authorization` is not looked at. */
  jwt?: JwtVerifierOptions;
  /** API keys in their header. When unset, that header is not looked at. */
  apiKeys?: ApiKeyOptions;
}

export interface Authenticator {
  /** A principal, `undefined` when no credential was presented, or UNAUTHENTICATED. */
  authenticate(headers: RequestHeaders): Promise<Principal | undefined>;
}

const BEARER = /^bearer +/i;

export function createAuthenticator(options: AuthenticatorOptions): Authenticator {
  const jwt: JwtVerifier | undefined = options.jwt === undefined ? undefined : createJwtVerifier(options.jwt);
  const apiKeys: ApiKeyVerifier | undefined =
    options.apiKeys === undefined ? undefined : createApiKeyVerifier(options.apiKeys);
  if (jwt !== undefined && apiKeys?.header === 'authorization')
    throw badAuthConfig('API keys cannot use the Authorization header when JWTs are enabled');

  return {
    async authenticate(headers) {
      const authorization = jwt === undefined ? undefined : single(headers, 'authorization');
      const apiKey = apiKeys === undefined ? undefined : single(headers, apiKeys.header);
      // Two credentials: which one should the request act as? Refuse rather than pick.
      if (authorization !== undefined && apiKey !== undefined) throw authFailure('malformed');
      if (jwt !== undefined && authorization !== undefined) {
        const match = BEARER.exec(authorization);
        if (match === null) throw authFailure('malformed');
        return jwt.verify(authorization.slice(match[0].length));
      }
      if (apiKeys !== undefined && apiKey !== undefined) return apiKeys.verify(apiKey);
      return undefined;
    },
  };
}

/** One header value; a header sent several times is ambiguous and refused. */
function single(headers: RequestHeaders, name: string): string | undefined {
  const value = headers[name];
  if (value === undefined) return undefined;
  if (typeof value === 'string') return value;
  if (value.length === 1 && typeof value[0] === 'string') return value[0];
  if (value.length === 0) return undefined;
  throw authFailure('malformed');
}
