import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ParleyError } from '../../errors.ts';
import { type AccessRule, allowed, assertAllowed } from './access.ts';
import { createPrincipal } from './principal.ts';

const alice = createPrincipal({
  kind: 'user',
  subject: 'alice',
  roles: ['admin', 'staff'],
  scopes: ['orders:read', 'orders:write'],
});
const bob = createPrincipal({ kind: 'apiKey', subject: 'bob', roles: ['viewer'], scopes: ['orders:read'] });

function codeOf(fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    assert.ok(e instanceof ParleyError);
    return e.code;
  }
}

describe('access rules', () => {
  const cases: Array<[string, AccessRule, boolean, boolean, boolean]> = [
    // name, rule, anonymous, alice, bob
    ['public', { public: true }, true, true, true],
    ['authenticated', { authenticated: true }, false, true, true],
    ['any of roles', { roles: ['admin', 'viewer'] }, false, true, true],
    ['role missing', { roles: ['admin'] }, false, true, false],
    ['all of scopes', { scopes: ['orders:read', 'orders:write'] }, false, true, false],
    ['one scope', { scopes: ['orders:read'] }, false, true, true],
    [
      'roles and scopes both hold',
      { roles: ['viewer', 'staff'], scopes: ['orders:write'] },
      false,
      true,
      false,
    ],
    ['empty roles admit nobody', { roles: [] }, false, false, false],
    ['empty scopes admit nobody', { scopes: [] }, false, false, false],
  ];
  for (const [name, rule, anon, a, b] of cases) {
    it(name, () => {
      assert.equal(allowed(undefined, rule), anon, 'anonymous');
      assert.equal(allowed(alice, rule), a, 'alice');
      assert.equal(allowed(bob, rule), b, 'bob');
    });
  }

  it('refuses anonymous callers with UNAUTHENTICATED and known ones with PERMISSION_DENIED', () => {
    assert.equal(
      codeOf(() => assertAllowed(undefined, { authenticated: true })),
      'UNAUTHENTICATED',
    );
    assert.equal(
      codeOf(() => assertAllowed(undefined, { roles: ['admin'] })),
      'UNAUTHENTICATED',
    );
    assert.equal(
      codeOf(() => assertAllowed(bob, { roles: ['admin'] })),
      'PERMISSION_DENIED',
    );
    assert.equal(
      codeOf(() => assertAllowed(alice, { roles: ['admin'] })),
      undefined,
    );
    assert.equal(
      codeOf(() => assertAllowed(undefined, { public: true })),
      undefined,
    );
  });

  it('fails closed on a rule it does not recognise', () => {
    const odd = { public: false } as unknown as AccessRule;
    assert.equal(allowed(alice, odd), false);
    assert.equal(allowed(alice, {} as unknown as AccessRule), false);
  });

  it('principals are frozen: a handler cannot grant itself a role', () => {
    assert.throws(() => (alice.roles as string[]).push('root'));
    assert.throws(() => {
      (alice as { subject: string }).subject = 'root';
    });
  });
});
