import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { base64url, exportJWK, generateKeyPair, generateSecret, type JSONWebKeySet, SignJWT } from 'jose';
import { verifyOutcome as outcome } from '../../../test/fixtures/auth-corpus.ts';
import { ParleyError } from '../../errors.ts';
import { createFakeClock } from '../../runtime/clock.ts';
import { createJwtVerifier, type JwtVerifierOptions } from './jwt-verifier.ts';

const ISS = 'https://id.example.com';
const AUD = 'api';
const clock = createFakeClock(1_700_000_000_000);
const NOW = Math.floor(clock.now() / 1000);

function claims(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { iss: ISS, aud: AUD, sub: 'alice', iat: NOW, exp: NOW + 300, ...extra };
}

function refused(
  options: Partial<JwtVerifierOptions> & Pick<JwtVerifierOptions, 'algorithms' | 'keys'>,
): string {
  try {
    createJwtVerifier({ issuer: ISS, audience: AUD, ...options });
    return 'constructed';
  } catch (e) {
    assert.ok(e instanceof ParleyError);
    return e.code;
  }
}

describe('JWT verifier configuration', async () => {
  const rsa = await generateKeyPair('RS256', { extractable: true });
  const secret = new Uint8Array(32).fill(7);
  const jwks = { keys: [{ ...(await exportJWK(rsa.publicKey)), kid: 'k1' }] };

  it('refuses allow-lists that mix HMAC and asymmetric algorithms, or name none', () => {
    const keys = { type: 'jwks', jwks } as const;
    assert.equal(refused({ algorithms: ['RS256', 'HS256'], keys }), 'INVALID_ARGUMENT');
    assert.equal(
      refused({ algorithms: ['HS256', 'ES256'], keys: { type: 'static', key: secret } }),
      'INVALID_ARGUMENT',
    );
    // Casts: these are exactly the values the types keep out, arriving from untyped config.
    assert.equal(refused({ algorithms: ['none'] as never, keys }), 'INVALID_ARGUMENT');
    assert.equal(refused({ algorithms: ['RS256', 'None'] as never, keys }), 'INVALID_ARGUMENT');
    assert.equal(refused({ algorithms: [], keys }), 'INVALID_ARGUMENT');
    assert.equal(refused({ algorithms: ['RS256', 'PS256', 'ES256'], keys }), 'constructed');
  });

  it('refuses a key that does not fit the algorithm family', () => {
    const nodeRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    // The RSA public key offered as an HMAC secret: the algorithm-confusion set-up itself.
    assert.equal(
      refused({ algorithms: ['HS256'], keys: { type: 'static', key: nodeRsa.publicKey } }),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      refused({ algorithms: ['HS256'], keys: { type: 'static', key: rsa.publicKey } }),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      refused({ algorithms: ['RS256'], keys: { type: 'static', key: secret } }),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      refused({ algorithms: ['RS256'], keys: { type: 'static', key: nodeRsa.privateKey } }),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      refused({ algorithms: ['RS256'], keys: { type: 'static', key: rsa.privateKey } }),
      'INVALID_ARGUMENT',
    );
    assert.equal(refused({ algorithms: ['HS256'], keys: { type: 'jwks', jwks } }), 'INVALID_ARGUMENT');
    assert.equal(
      refused({ algorithms: ['HS256'], keys: { type: 'static', key: new Uint8Array(16) } }),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      refused({ algorithms: ['HS256', 'HS512'], keys: { type: 'static', key: secret } }),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      refused({ algorithms: ['RS256'], keys: { type: 'static', key: nodeRsa.publicKey } }),
      'constructed',
    );
    assert.equal(refused({ algorithms: ['HS256'], keys: { type: 'static', key: secret } }), 'constructed');
  });

  it('refuses a short HMAC CryptoKey, and a secret it cannot measure', async () => {
    const hmac = (bytes: number) =>
      crypto.subtle.importKey(
        'raw',
        new Uint8Array(bytes).fill(7),
        { name: 'HMAC', hash: 'SHA-256' },
        false,
        ['verify'],
      );
    const hs256 = ['HS256'] as const;
    assert.equal(
      refused({ algorithms: [...hs256], keys: { type: 'static', key: await hmac(1) } }),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      refused({ algorithms: [...hs256], keys: { type: 'static', key: await hmac(31) } }),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      refused({ algorithms: [...hs256], keys: { type: 'static', key: await hmac(32) } }),
      'constructed',
    );
    // Says it is a secret, gives no length: unknown is not long enough.
    assert.equal(
      refused({ algorithms: [...hs256], keys: { type: 'static', key: { type: 'secret' } as never } }),
      'INVALID_ARGUMENT',
    );
  });

  it('bounds the clock skew and needs issuer and audience', () => {
    const keys = { type: 'jwks', jwks } as const;
    assert.equal(refused({ algorithms: ['RS256'], keys, clockToleranceSeconds: 301 }), 'INVALID_ARGUMENT');
    assert.equal(refused({ algorithms: ['RS256'], keys, clockToleranceSeconds: -1 }), 'INVALID_ARGUMENT');
    assert.equal(refused({ algorithms: ['RS256'], keys, clockToleranceSeconds: 300 }), 'constructed');
    assert.equal(refused({ algorithms: ['RS256'], keys, issuer: '' }), 'INVALID_ARGUMENT');
    assert.equal(refused({ algorithms: ['RS256'], keys, audience: [] }), 'INVALID_ARGUMENT');
    assert.equal(
      refused({ algorithms: ['RS256'], keys: { type: 'jwks', jwks: { keys: 'x' } as never } }),
      'INVALID_ARGUMENT',
    );
  });
});

describe('JWT verifier key sources', async () => {
  it('static HMAC secret: accepts its own tokens only', async () => {
    const secret = await generateSecret('HS256', { extractable: true });
    const v = createJwtVerifier({
      algorithms: ['HS256'],
      keys: { type: 'static', key: secret },
      issuer: ISS,
      audience: AUD,
      clock,
    });
    const good = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256' }).sign(secret);
    assert.equal(await outcome(v, good), 'ok:alice');
    const other = await new SignJWT(claims())
      .setProtectedHeader({ alg: 'HS256' })
      .sign(new Uint8Array(32).fill(1));
    assert.equal(await outcome(v, other), 'UNAUTHENTICATED:bad_signature');
    const hs512 = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS512' }).sign(new Uint8Array(64));
    assert.equal(await outcome(v, hs512), 'UNAUTHENTICATED:alg_not_allowed');
    const rs = await generateKeyPair('RS256');
    const rsToken = await new SignJWT(claims()).setProtectedHeader({ alg: 'RS256' }).sign(rs.privateKey);
    assert.equal(await outcome(v, rsToken), 'UNAUTHENTICATED:alg_not_allowed');
  });

  it('static public key: a token in another allowed algorithm has no key', async () => {
    const rsa = await generateKeyPair('RS256');
    const ec = await generateKeyPair('ES256');
    const v = createJwtVerifier({
      algorithms: ['RS256', 'ES256'],
      keys: { type: 'static', key: rsa.publicKey },
      issuer: ISS,
      audience: AUD,
      clock,
    });
    assert.equal(
      await outcome(v, await new SignJWT(claims()).setProtectedHeader({ alg: 'RS256' }).sign(rsa.privateKey)),
      'ok:alice',
    );
    assert.equal(
      await outcome(v, await new SignJWT(claims()).setProtectedHeader({ alg: 'ES256' }).sign(ec.privateKey)),
      'UNAUTHENTICATED:unknown_key',
    );
  });

  it('local JWKS: chooses by kid', async () => {
    const a = await generateKeyPair('ES256', { extractable: true });
    const b = await generateKeyPair('ES256', { extractable: true });
    const jwks = {
      keys: [
        { ...(await exportJWK(a.publicKey)), kid: 'a' },
        { ...(await exportJWK(b.publicKey)), kid: 'b' },
      ],
    };
    const v = createJwtVerifier({
      algorithms: ['ES256'],
      keys: { type: 'jwks', jwks },
      issuer: ISS,
      audience: AUD,
      clock,
    });
    const sign = (kid: string | undefined, key: typeof a.privateKey) =>
      new SignJWT(claims())
        .setProtectedHeader(kid === undefined ? { alg: 'ES256' } : { alg: 'ES256', kid })
        .sign(key);
    assert.equal(await outcome(v, await sign('a', a.privateKey)), 'ok:alice');
    assert.equal(await outcome(v, await sign('b', b.privateKey)), 'ok:alice');
    assert.equal(await outcome(v, await sign('a', b.privateKey)), 'UNAUTHENTICATED:bad_signature');
    assert.equal(await outcome(v, await sign('c', a.privateKey)), 'UNAUTHENTICATED:unknown_key');
    // No kid and two candidate keys: we do not guess.
    assert.equal(await outcome(v, await sign(undefined, a.privateKey)), 'UNAUTHENTICATED:unknown_key');
  });

  it('local JWKS: a member WebCrypto will not import refuses its tokens as unknown_key, not a 500', async () => {
    const a = await generateKeyPair('ES256', { extractable: true });
    // `sign` on a public key: WebCrypto's SyntaxError. An ML-DSA key where the runtime has none
    // (Node 20): NotSupportedError; where it has one, the garbage signature is simply bad.
    const jwks = {
      keys: [
        { ...(await exportJWK(a.publicKey)), kid: 'ops', alg: 'ES256', key_ops: ['verify', 'sign'] },
        { kty: 'AKP', alg: 'ML-DSA-44', kid: 'pq', pub: base64url.encode(new Uint8Array(1312)) },
      ],
    } as unknown as JSONWebKeySet;
    const v = createJwtVerifier({
      algorithms: ['ES256', 'ML-DSA-44'],
      keys: { type: 'jwks', jwks },
      issuer: ISS,
      audience: AUD,
      clock,
    });
    const ops = await new SignJWT(claims())
      .setProtectedHeader({ alg: 'ES256', kid: 'ops' })
      .sign(a.privateKey);
    assert.equal(await outcome(v, ops), 'UNAUTHENTICATED:unknown_key');
    const header = base64url.encode(JSON.stringify({ alg: 'ML-DSA-44', kid: 'pq' }));
    const pq = await outcome(v, `${header}.${base64url.encode(JSON.stringify(claims()))}.AAAA`);
    assert.match(pq, /^UNAUTHENTICATED:(unknown_key|bad_signature)$/);
  });
});

describe('JWT verifier claims', async () => {
  const ec = await generateKeyPair('ES256');
  const sign = (c: Record<string, unknown>, header: Record<string, unknown> = {}) =>
    new SignJWT(c).setProtectedHeader({ alg: 'ES256', ...header }).sign(ec.privateKey);
  const base = {
    algorithms: ['ES256'],
    keys: { type: 'static', key: ec.publicKey },
    issuer: ISS,
    audience: AUD,
    clock,
  } as const;

  it('reads roles and scopes from configured claims, and tells services from users', async () => {
    const v = createJwtVerifier({
      ...base,
      rolesClaim: ['realm_access', 'roles'],
      scopesClaim: 'scp',
      kindOf: (c) => (c.gty === 'client-credentials' ? 'service' : 'user'),
    });
    const p = await v.verify(
      await sign(
        claims({ realm_access: { roles: ['ops', 7, 'ops'] }, scp: ['a', 'b'], gty: 'client-credentials' }),
      ),
    );
    assert.deepEqual([p.kind, p.roles, p.scopes], ['service', ['ops'], ['a', 'b']]);
    const q = await v.verify(await sign(claims({ realm_access: 'admin', scp: 'x y' })));
    assert.deepEqual(
      [q.kind, q.roles, q.scopes],
      ['user', [], ['x', 'y']],
      'a malformed roles claim grants nothing',
    );
    const ns = createJwtVerifier({ ...base, rolesClaim: 'https://shop.example/roles' });
    const r = await ns.verify(await sign(claims({ 'https://shop.example/roles': ['buyer'] })));
    assert.deepEqual(r.roles, ['buyer']);
  });

  it('maxTokenAgeSeconds requires iat and refuses old or future-dated tokens', async () => {
    const v = createJwtVerifier({ ...base, maxTokenAgeSeconds: 600, clockToleranceSeconds: 0 });
    assert.equal(await outcome(v, await sign(claims())), 'ok:alice');
    assert.equal(
      await outcome(v, await sign(claims({ iat: NOW - 601, exp: NOW + 60 }))),
      'UNAUTHENTICATED:expired',
    );
    assert.equal(await outcome(v, await sign(claims({ iat: NOW + 60 }))), 'UNAUTHENTICATED:not_yet_valid');
    const noIat = claims();
    delete noIat.iat;
    assert.equal(await outcome(v, await sign(noIat)), 'UNAUTHENTICATED:malformed');
  });

  it('typ is checked when configured', async () => {
    const v = createJwtVerifier({ ...base, typ: 'at+jwt' });
    assert.equal(await outcome(v, await sign(claims(), { typ: 'at+jwt' })), 'ok:alice');
    assert.equal(await outcome(v, await sign(claims(), { typ: 'JWT' })), 'UNAUTHENTICATED:malformed');
  });

  it('skew of zero is exact', async () => {
    const v = createJwtVerifier({ ...base, clockToleranceSeconds: 0 });
    assert.equal(await outcome(v, await sign(claims({ nbf: NOW + 1 }))), 'UNAUTHENTICATED:not_yet_valid');
    assert.equal(await outcome(v, await sign(claims({ exp: NOW }))), 'UNAUTHENTICATED:expired');
    assert.equal(await outcome(v, await sign(claims({ nbf: NOW, exp: NOW + 1 }))), 'ok:alice');
  });
});
