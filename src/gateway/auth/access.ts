/**
 * @module gateway/auth/access
 * Route access rules, checked after authentication. A refusal to an anonymous caller is
 * UNAUTHENTICATED (401: log in and try again); to a known caller it is PERMISSION_DENIED (403:
 * logging in again will not help). Rules fail closed: an empty list or an unrecognised rule admits
 * nobody.
 */
import type { AccessRule } from '../../contract/contract.ts';
import { ParleyError } from '../../errors.ts';
// The runtime's principal: any edge's (this module's included) passes the same rules.
import type { Principal } from '../../runtime/principal.ts';
import { credentialsRequired } from './failure.ts';

export type { AccessRule };

/** Whether `principal` (undefined: anonymous) may pass `rule`. */
export function allowed(principal: Principal | undefined, rule: AccessRule): boolean {
  if ('public' in rule) return rule.public === true;
  if (principal === undefined) return false;
  if ('authenticated' in rule) return rule.authenticated === true;
  const { roles, scopes } = rule as { roles?: readonly string[]; scopes?: readonly string[] };
  if (roles === undefined && scopes === undefined) return false;
  if (roles !== undefined && !roles.some((r) => principal.roles.includes(r))) return false;
  if (scopes !== undefined && (scopes.length === 0 || !scopes.every((s) => principal.scopes.includes(s))))
    return false;
  return true;
}

/** Throws UNAUTHENTICATED (anonymous) or PERMISSION_DENIED (known caller) unless `allowed`. */
export function assertAllowed(principal: Principal | undefined, rule: AccessRule): void {
  if (allowed(principal, rule)) return;
  if (principal === undefined) throw credentialsRequired();
  throw new ParleyError('PERMISSION_DENIED', 'not allowed');
}
