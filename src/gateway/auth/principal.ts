/**
 * @module gateway/auth/principal
 * Who a request acts for, whichever way it authenticated. Roles and scopes are read from
 * configurable claims because identity providers disagree on where they put them (`roles`,
 * `realm_access.roles`, `https://example.com/roles`; `scope` as a space-separated string, `scp`
 * as an array).
 */

import type { Principal as RuntimePrincipal } from '../../runtime/principal.ts';

export type PrincipalKind = 'user' | 'apiKey' | 'service';

/** The runtime's principal, as this module makes it: a known kind, and claims always present. */
export interface Principal extends RuntimePrincipal {
  readonly kind: PrincipalKind;
  /** The verified token's claims (empty for an API key). */
  readonly claims: Readonly<Record<string, unknown>>;
}

/**
 * Where a claim lives: a top-level name (which may itself contain dots, as namespaced claims do),
 * or a path of names into nested objects, e.g. `['realm_access', 'roles']`.
 */
export type ClaimPath = string | readonly string[];

export function readClaim(claims: Readonly<Record<string, unknown>>, path: ClaimPath): unknown {
  const names = typeof path === 'string' ? [path] : path;
  let value: unknown = claims;
  for (const name of names) {
    if (typeof value !== 'object' || value === null || !Object.hasOwn(value, name)) return undefined;
    value = (value as Record<string, unknown>)[name];
  }
  return value;
}

/**
 * A list of names from a claim: an array of strings, or one space-separated string (RFC 8693
 * `scope`). Anything else yields nothing: a malformed claim grants less, never more.
 */
export function namesFromClaim(value: unknown): string[] {
  if (typeof value === 'string') return value.split(' ').filter((s) => s !== '');
  if (Array.isArray(value)) return value.filter((s): s is string => typeof s === 'string' && s !== '');
  return [];
}

export function createPrincipal(fields: {
  kind: PrincipalKind;
  subject: string;
  roles?: readonly string[];
  scopes?: readonly string[];
  claims?: Readonly<Record<string, unknown>>;
}): Principal {
  // Frozen so one request's handler cannot grant itself (or the next request) a role.
  return Object.freeze({
    kind: fields.kind,
    subject: fields.subject,
    roles: Object.freeze([...new Set(fields.roles ?? [])]),
    scopes: Object.freeze([...new Set(fields.scopes ?? [])]),
    claims: Object.freeze({ ...fields.claims }),
  });
}
