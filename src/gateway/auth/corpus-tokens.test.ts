import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { base64url, exportJWK, exportSPKI } from 'jose';
import {
  API_KEY,
  AUD,
  type AuthCorpus,
  b64json,
  bearer,
  type Case,
  corpusSuite,
  ISS,
  withSegment,
} from '../../../test/fixtures/auth-corpus.ts';

/**
 * The bad-token corpus, tokens part: algorithm confusion, forged and tampered signatures, unknown
 * keys, claims and time. Zero bypasses; every refusal UNAUTHENTICATED with the right reason.
 */
function cases(c: AuthCorpus): Case[] {
  return [
    // Good credentials.
    {
      name: 'valid RS256 token',
      headers: async () => bearer(await c.token()),
      expect: { kind: 'user', subject: 'alice' },
    },
    {
      name: 'lower-case bearer scheme',
      headers: async () => ({ authorization: `bearer ${await c.token()}` }),
      expect: { kind: 'user', subject: 'alice' },
    },
    {
      name: 'nbf in the future within the skew',
      headers: async () => bearer(await c.token({ claims: { nbf: c.now + 20 } })),
      expect: { kind: 'user', subject: 'alice' },
    },
    {
      name: 'exp just past, within the skew',
      headers: async () => bearer(await c.token({ claims: { exp: c.now - 20 } })),
      expect: { kind: 'user', subject: 'alice' },
    },
    {
      name: 'aud as a list containing ours',
      headers: async () => bearer(await c.token({ claims: { aud: ['other', AUD] } })),
      expect: { kind: 'user', subject: 'alice' },
    },
    {
      name: 'right API key',
      headers: () => ({ 'x-api-key': API_KEY }),
      expect: { kind: 'apiKey', subject: 'billing-job' },
    },
    { name: 'no credentials', headers: () => ({ accept: 'application/json' }), expect: 'anonymous' },

    // Algorithm attacks.
    {
      name: 'alg none, hand-built',
      headers: () =>
        bearer(
          `${b64json({ alg: 'none', typ: 'JWT' })}.${b64json({ iss: ISS, aud: AUD, sub: 'mallory', exp: c.now + 300 })}.`,
        ),
      expect: 'alg_not_allowed',
    },
    {
      name: 'alg NONE with a kid',
      headers: () =>
        bearer(
          `${b64json({ alg: 'NONE', kid: 'k1' })}.${b64json({ iss: ISS, aud: AUD, sub: 'mallory', exp: c.now + 300 })}.`,
        ),
      expect: 'alg_not_allowed',
    },
    {
      name: 'alg none with a copied signature',
      headers: async () => {
        const [, , sig] = (await c.token()).split('.');
        return bearer(
          `${b64json({ alg: 'none' })}.${b64json({ iss: ISS, aud: AUD, sub: 'mallory', exp: c.now + 300 })}.${sig}`,
        );
      },
      expect: 'alg_not_allowed',
    },
    {
      name: 'HS256 signed with the RSA public key PEM as secret',
      headers: async () =>
        bearer(
          await c.token({
            header: { alg: 'HS256' },
            key: new TextEncoder().encode(await exportSPKI(c.goodPublic)),
          }),
        ),
      expect: 'alg_not_allowed',
    },
    {
      name: 'HS256 signed with the RSA public JWK bytes as secret',
      headers: async () =>
        bearer(
          await c.token({
            header: { alg: 'HS256' },
            key: new TextEncoder().encode(JSON.stringify(await exportJWK(c.goodPublic))),
          }),
        ),
      expect: 'alg_not_allowed',
    },
    {
      name: 'ES256 from a rogue key, claiming kid k1',
      headers: async () => bearer(await c.token({ header: { alg: 'ES256' }, key: c.rogueEc })),
      expect: 'alg_not_allowed',
    },
    {
      name: 'missing alg',
      headers: async () => bearer(withSegment(await c.token(), 0, b64json({ kid: 'k1', typ: 'JWT' }))),
      expect: 'malformed',
    },
    {
      name: 'unknown crit header',
      headers: async () =>
        bearer(
          withSegment(
            await c.token(),
            0,
            b64json({ alg: 'RS256', kid: 'k1', crit: ['x-magic'], 'x-magic': 1 }),
          ),
        ),
      expect: 'malformed',
    },

    // Signature attacks.
    {
      name: 'tampered payload (role escalation)',
      headers: async () => {
        const t = await c.token();
        const body = JSON.parse(new TextDecoder().decode(base64url.decode(t.split('.')[1] ?? '')));
        return bearer(withSegment(t, 1, b64json({ ...body, roles: ['superadmin'] })));
      },
      expect: 'bad_signature',
    },
    {
      name: 'tampered payload (subject swap)',
      headers: async () => {
        const t = await c.token();
        return bearer(withSegment(t, 1, (await c.token({ claims: { sub: 'root' } })).split('.')[1] ?? ''));
      },
      expect: 'bad_signature',
    },
    {
      name: 'tampered signature',
      headers: async () => {
        const t = await c.token();
        const sig = t.split('.')[2] ?? '';
        return bearer(withSegment(t, 2, (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1)));
      },
      expect: 'bad_signature',
    },
    {
      name: 'truncated signature',
      headers: async () => {
        const t = await c.token();
        return bearer(withSegment(t, 2, (t.split('.')[2] ?? '').slice(0, 40)));
      },
      expect: 'bad_signature',
    },
    {
      name: 'signed by a rogue RSA key claiming kid k1',
      headers: async () => bearer(await c.token({ key: c.rogue })),
      expect: 'bad_signature',
    },
    {
      name: 'header swapped to another kid',
      headers: async () => bearer(withSegment(await c.token(), 0, b64json({ alg: 'RS256', kid: 'k0' }))),
      expect: 'unknown_key',
    },

    // Keys.
    {
      name: 'unknown kid',
      headers: async () => bearer(await c.token({ header: { kid: 'who-knows' }, key: c.rogue })),
      expect: 'unknown_key',
    },

    // Claims and time.
    {
      name: 'expired beyond the skew',
      headers: async () => bearer(await c.token({ claims: { exp: c.now - 31 } })),
      expect: 'expired',
    },
    {
      name: 'nbf in the future beyond the skew',
      headers: async () => bearer(await c.token({ claims: { nbf: c.now + 31 } })),
      expect: 'not_yet_valid',
    },
    {
      name: 'wrong aud',
      headers: async () => bearer(await c.token({ claims: { aud: 'billing-api' } })),
      expect: 'bad_audience',
    },
    {
      name: 'missing aud',
      headers: async () => bearer(await c.token({ omit: ['aud'] })),
      expect: 'bad_audience',
    },
    {
      name: 'wrong iss',
      headers: async () => bearer(await c.token({ claims: { iss: 'https://id.evil.example' } })),
      expect: 'bad_issuer',
    },
    {
      name: 'missing iss',
      headers: async () => bearer(await c.token({ omit: ['iss'] })),
      expect: 'bad_issuer',
    },
    {
      name: 'missing exp',
      headers: async () => bearer(await c.token({ omit: ['exp'] })),
      expect: 'malformed',
    },
    {
      name: 'exp not a number',
      headers: async () => bearer(await c.token({ claims: { exp: String(c.now + 300) } })),
      expect: 'malformed',
    },
    {
      name: 'missing sub',
      headers: async () => bearer(await c.token({ omit: ['sub'] })),
      expect: 'malformed',
    },
    {
      name: 'sub not a string',
      headers: async () => bearer(await c.token({ claims: { sub: 42 } })),
      expect: 'malformed',
    },
  ];
}

describe('bad-token corpus: tokens', () => {
  const corpus = corpusSuite(cases, (c) => {
    // Nothing here may trigger a second JWKS fetch inside the cooldown.
    assert.equal(c.server.fetches, 1);
  });

  it('a good token maps to the right principal', async () => {
    const c = corpus();
    const p = await c.auth.authenticate(bearer(await c.token()));
    assert.ok(p);
    assert.deepEqual(
      [p.kind, p.subject, p.roles, p.scopes],
      ['user', 'alice', ['admin'], ['orders:read', 'orders:write']],
    );
    assert.equal(p.claims.iss, ISS);
  });

  it('the same token expires when the clock moves past exp plus the skew', async () => {
    const c = corpus();
    const t = await c.token({ claims: { exp: c.now + 60 } });
    assert.equal(await c.outcome(bearer(t)), 'principal:user:alice');
    c.clock.advance(89_000);
    assert.equal(await c.outcome(bearer(t)), 'principal:user:alice');
    c.clock.advance(2_000);
    assert.equal(await c.outcome(bearer(t)), 'UNAUTHENTICATED:expired');
  });
});
