import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import { verifyOutcome as outcome } from '../../../test/fixtures/auth-corpus.ts';
import { type JwksServer, startJwksServer } from '../../../test/fixtures/jwks-server.ts';
import { ParleyError } from '../../errors.ts';
import { createFakeClock, type FakeClock } from '../../runtime/clock.ts';
import { createJwtVerifier } from './jwt-verifier.ts';
import type { RemoteJwksOptions } from './remote-jwks.ts';

const ISS = 'https://id.example.com';
const AUD = 'api';

interface Signer {
  kid: string;
  key: CryptoKey;
  jwk: JWK;
}

async function signer(kid: string): Promise<Signer> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  return { kid, key: privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES256' } };
}

describe('remote JWKS', () => {
  let server: JwksServer;
  let k1: Signer;
  let k2: Signer;
  let clock: FakeClock;
  let now: () => number;

  const sign = (s: Signer, kid = s.kid) =>
    new SignJWT({ sub: `signed-by-${s.kid}` })
      .setProtectedHeader({ alg: 'ES256', kid })
      .setIssuer(ISS)
      .setAudience(AUD)
      .setExpirationTime(now() + 600)
      .sign(s.key);

  const verifier = (options: Partial<RemoteJwksOptions> = {}) =>
    createJwtVerifier({
      algorithms: ['ES256'],
      keys: { type: 'remoteJwks', url: server.url, insecureHttp: true, ...options },
      issuer: ISS,
      audience: AUD,
      clock,
    });

  before(async () => {
    k1 = await signer('k1');
    k2 = await signer('k2');
    server = await startJwksServer([]);
  });
  after(() => server.close());

  const reset = (keys: JWK[]) => {
    server.keys = keys;
    server.mode = 'ok';
    clock = createFakeClock(1_700_000_000_000);
    now = () => Math.floor(clock.now() / 1000);
    return server.fetches;
  };

  it('fetches once, then serves from the cache', async () => {
    const base = reset([k1.jwk]);
    const v = verifier();
    assert.equal(server.fetches, base, 'nothing fetched at construction');
    for (let i = 0; i < 5; i++) assert.equal(await outcome(v, await sign(k1)), 'ok:signed-by-k1');
    assert.equal(server.fetches - base, 1);
  });

  it('an unknown kid refetches once, then a flood of random kids is rate-limited', async () => {
    const base = reset([k1.jwk]);
    const v = verifier({ cooldownMs: 30_000 });
    assert.equal(await outcome(v, await sign(k1)), 'ok:signed-by-k1');
    clock.advance(30_000);
    assert.equal(await outcome(v, await sign(k2, 'kid-0')), 'UNAUTHENTICATED:unknown_key');
    assert.equal(server.fetches - base, 2, 'one refetch for the unknown kid');

    const flood = async (n: number) => {
      const tokens = await Promise.all(
        Array.from({ length: n }, (_, i) => sign(k2, `random-${i}-${Math.random()}`)),
      );
      const results = await Promise.all(tokens.map((t) => outcome(v, t)));
      assert.ok(results.every((r) => r === 'UNAUTHENTICATED:unknown_key'));
    };
    await flood(200);
    assert.equal(server.fetches - base, 2, 'inside the cooldown: no fetch at all');
    // Five more cooldowns of flooding: at most one fetch each, however many tokens.
    for (let round = 0; round < 5; round++) {
      clock.advance(30_000);
      await flood(100);
    }
    assert.equal(server.fetches - base, 7);
    // The known key still works throughout.
    assert.equal(await outcome(v, await sign(k1)), 'ok:signed-by-k1');
  });

  it('picks up a rotated-in key on its first use after the cooldown', async () => {
    const base = reset([k1.jwk]);
    const v = verifier();
    assert.equal(await outcome(v, await sign(k1)), 'ok:signed-by-k1');
    server.keys = [k1.jwk, k2.jwk];
    assert.equal(await outcome(v, await sign(k2)), 'UNAUTHENTICATED:unknown_key', 'still cooling down');
    clock.advance(30_000);
    assert.equal(await outcome(v, await sign(k2)), 'ok:signed-by-k2');
    assert.equal(server.fetches - base, 2);
  });

  it('tokens arriving together with a rotated-in kid all wait for the one refetch', async () => {
    const base = reset([k1.jwk]);
    const v = verifier({ cooldownMs: 30_000 });
    assert.equal(await outcome(v, await sign(k1)), 'ok:signed-by-k1');
    server.keys = [k1.jwk, k2.jwk];
    clock.advance(30_000);
    const tokens = await Promise.all(Array.from({ length: 10 }, () => sign(k2)));
    const results = await Promise.all(tokens.map((t) => outcome(v, t)));
    assert.deepEqual(new Set(results), new Set(['ok:signed-by-k2']));
    assert.equal(server.fetches - base, 2, 'still one refetch');
  });

  it('a wall clock stepped back does not hold refetches until it catches up', async () => {
    const base = reset([k1.jwk]);
    // The fake clock, seen through a wall clock that can be set back.
    let offset = 0;
    const fake = clock;
    clock = { ...fake, now: () => fake.now() + offset };
    const v = verifier({ cooldownMs: 30_000, maxAgeMs: 600_000 });
    assert.equal(await outcome(v, await sign(k1)), 'ok:signed-by-k1');
    offset = -3_600_000;
    server.keys = [k1.jwk, k2.jwk];
    fake.advance(30_000);
    assert.equal(await outcome(v, await sign(k2)), 'ok:signed-by-k2', 'an unknown kid refetches');
    assert.equal(server.fetches - base, 2);
    // From there, time counts from the new reading: the cooldown and the set's age hold again.
    assert.equal(await outcome(v, await sign(k2, 'k3')), 'UNAUTHENTICATED:unknown_key');
    assert.equal(server.fetches - base, 2, 'inside the cooldown');
    offset -= 3_600_000;
    server.keys = [k2.jwk];
    assert.equal(await outcome(v, await sign(k1)), 'UNAUTHENTICATED:unknown_key', 'a stale set is refetched');
    assert.equal(server.fetches - base, 3);
  });

  it('refreshes a set older than maxAgeMs, and keeps the old set when that refresh fails', async () => {
    const base = reset([k1.jwk]);
    const v = verifier({ maxAgeMs: 60_000 });
    assert.equal(await outcome(v, await sign(k1)), 'ok:signed-by-k1');
    clock.advance(60_000);
    server.mode = 'fail';
    assert.equal(await outcome(v, await sign(k1)), 'ok:signed-by-k1', 'stale keys beat no keys');
    assert.equal(await outcome(v, await sign(k1)), 'ok:signed-by-k1');
    assert.equal(server.fetches - base, 2, 'the failed refresh is not retried inside the cooldown');
  });

  it('an unreachable JWKS is UNAVAILABLE, and is not hammered', async () => {
    const base = reset([k1.jwk]);
    server.mode = 'fail';
    const v = verifier();
    const token = await sign(k1);
    assert.equal(await outcome(v, token), 'UNAVAILABLE:keys_unavailable');
    const many = await Promise.all(Array.from({ length: 100 }, () => outcome(v, token)));
    assert.ok(many.every((r) => r === 'UNAVAILABLE:keys_unavailable'));
    assert.equal(server.fetches - base, 1);
    server.mode = 'ok';
    assert.equal(await outcome(v, token), 'UNAVAILABLE:keys_unavailable', 'still cooling down');
    clock.advance(30_000);
    assert.equal(await outcome(v, token), 'ok:signed-by-k1');
    assert.equal(server.fetches - base, 2);
  });

  it('refuses redirects and oversized key sets', async () => {
    for (const mode of ['redirect', 'huge'] as const) {
      reset([k1.jwk]);
      server.mode = mode;
      assert.equal(await outcome(verifier(), await sign(k1)), 'UNAVAILABLE:keys_unavailable', mode);
    }
  });

  it('a disallowed or oversized token never causes a fetch', async () => {
    const base = reset([k1.jwk]);
    const v = verifier();
    const rs = await generateKeyPair('RS256');
    const rsToken = await new SignJWT({ sub: 'x' })
      .setProtectedHeader({ alg: 'RS256', kid: 'k9' })
      .sign(rs.privateKey);
    assert.equal(await outcome(v, rsToken), 'UNAUTHENTICATED:alg_not_allowed');
    assert.equal(await outcome(v, `${'a'.repeat(9000)}.b.c`), 'UNAUTHENTICATED:too_large');
    assert.equal(server.fetches - base, 0);
  });

  it('members that are no public key are left out, not a reason to refuse the set', async () => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const leaked = { ...(await exportJWK(privateKey)), kid: 'leaked', alg: 'ES256' };
    reset([null, { kid: 'no-kty' }, leaked, k1.jwk] as unknown as JWK[]);
    const v = verifier();
    assert.equal(await outcome(v, await sign(k1)), 'ok:signed-by-k1');
  });

  it('a member that cannot be imported refuses its tokens as unknown_key (401), not a 500', async () => {
    // A DataError, and WebCrypto's SyntaxError for `sign` in a public key's key_ops.
    for (const member of [
      { ...k1.jwk, x: {} },
      { ...k1.jwk, key_ops: ['verify', 'sign'] },
    ]) {
      reset([member as unknown as JWK]);
      assert.equal(await outcome(verifier(), await sign(k1)), 'UNAUTHENTICATED:unknown_key');
    }
  });

  it('a document with no list of keys, or none usable, is no set: 503 keys_unavailable', async () => {
    for (const keys of [{ nope: 1 }, [null]] as unknown as JWK[][]) {
      reset(keys);
      assert.equal(await outcome(verifier(), await sign(k1)), 'UNAVAILABLE:keys_unavailable');
    }
  });

  it('needs https unless http is asked for', () => {
    assert.throws(
      () =>
        createJwtVerifier({
          algorithms: ['ES256'],
          keys: { type: 'remoteJwks', url: server.url },
          issuer: ISS,
          audience: AUD,
        }),
      (e: unknown) => e instanceof ParleyError && e.code === 'INVALID_ARGUMENT',
    );
  });
});
