import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ParleyError } from '../../errors.ts';
import { createApiKeyVerifier, hashApiKey } from './api-keys.ts';

const KEY = 'pk_live_3f9c1b7e2a';

function reasonOf(fn: () => unknown): unknown {
  try {
    fn();
    return 'accepted';
  } catch (e) {
    assert.ok(e instanceof ParleyError);
    return `${e.code}:${String(e.details?.reason)}`;
  }
}

describe('API keys', () => {
  const verifier = createApiKeyVerifier({
    keys: [
      { sha256: hashApiKey('other-key'), subject: 'other' },
      {
        sha256: hashApiKey(KEY).toUpperCase(),
        subject: 'billing',
        roles: ['billing'],
        scopes: ['invoices:read'],
      },
    ],
  });

  it('maps the right key to its principal', () => {
    const p = verifier.verify(KEY);
    assert.deepEqual(
      { kind: p.kind, subject: p.subject, roles: p.roles, scopes: p.scopes, claims: p.claims },
      { kind: 'apiKey', subject: 'billing', roles: ['billing'], scopes: ['invoices:read'], claims: {} },
    );
    assert.equal(verifier.verify('other-key').subject, 'other');
  });

  it('refuses wrong, empty, near-miss and oversized keys', () => {
    assert.equal(
      reasonOf(() => verifier.verify('pk_live_3f9c1b7e2b')),
      'UNAUTHENTICATED:bad_api_key',
    );
    assert.equal(
      reasonOf(() => verifier.verify(`${KEY} `)),
      'UNAUTHENTICATED:bad_api_key',
    );
    assert.equal(
      reasonOf(() => verifier.verify('')),
      'UNAUTHENTICATED:bad_api_key',
    );
    // The hash itself is not a key.
    assert.equal(
      reasonOf(() => verifier.verify(hashApiKey(KEY))),
      'UNAUTHENTICATED:bad_api_key',
    );
    assert.equal(
      reasonOf(() => verifier.verify('x'.repeat(513))),
      'UNAUTHENTICATED:too_large',
    );
  });

  it('refuses bad configuration at construction', () => {
    const bad = (keys: Parameters<typeof createApiKeyVerifier>[0]['keys']) =>
      reasonOf(() => createApiKeyVerifier({ keys }));
    assert.equal(bad([{ sha256: 'abc', subject: 's' }]), 'INVALID_ARGUMENT:undefined');
    assert.equal(bad([{ sha256: KEY, subject: 's' }]), 'INVALID_ARGUMENT:undefined');
    assert.equal(
      bad([
        { sha256: hashApiKey(KEY), subject: 'a' },
        { sha256: hashApiKey(KEY), subject: 'b' },
      ]),
      'INVALID_ARGUMENT:undefined',
    );
    assert.equal(bad([{ sha256: hashApiKey(KEY), subject: '' }]), 'INVALID_ARGUMENT:undefined');
  });

  it('reads the configured header name in lower case', () => {
    assert.equal(createApiKeyVerifier({ keys: [], header: 'X-Service-Key' }).header, 'x-service-key');
  });
});
