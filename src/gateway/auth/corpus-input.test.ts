import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { base64url } from 'jose';
import {
  API_KEY,
  type AuthCorpus,
  b64json,
  bearer,
  type Case,
  corpusSuite,
  withSegment,
} from '../../../test/fixtures/auth-corpus.ts';
import { hashApiKey } from './api-keys.ts';

/**
 * The bad-token corpus, input part: oversized and garbage headers, schemes, duplicates, API keys.
 * Zero bypasses; every refusal UNAUTHENTICATED with the right reason.
 */
function cases(c: AuthCorpus): Case[] {
  return [
    // Size and syntax.
    {
      name: 'token over the size limit',
      headers: async () => bearer(await c.token({ claims: { pad: 'x'.repeat(9000) } })),
      expect: 'too_large',
    },
    { name: 'Bearer with nothing after', headers: () => ({ authorization: 'Bearer ' }), expect: 'malformed' },
    { name: 'Bearer alone', headers: () => ({ authorization: 'Bearer' }), expect: 'malformed' },
    { name: 'Bearer a.b', headers: () => ({ authorization: 'Bearer a.b' }), expect: 'malformed' },
    { name: 'Bearer a.b.c', headers: () => ({ authorization: 'Bearer a.b.c' }), expect: 'malformed' },
    {
      name: 'non-base64 segments',
      headers: () => ({ authorization: 'Bearer !!!.@@@.###' }),
      expect: 'malformed',
    },
    {
      name: 'padded base64',
      headers: async () => bearer(`${(await c.token()).split('.')[0]}==.e30.AAAA`),
      expect: 'malformed',
    },
    {
      name: 'header segment not JSON',
      headers: async () => bearer(withSegment(await c.token(), 0, base64url.encode('not json'))),
      expect: 'malformed',
    },
    {
      name: 'payload not a JSON object',
      headers: () => bearer(`${b64json({ alg: 'RS256', kid: 'k1' })}.${b64json([1, 2])}.AAAA`),
      expect: 'bad_signature',
    },
    {
      name: 'five segments (JWE shape)',
      headers: () => ({ authorization: 'Bearer a.b.c.d.e' }),
      expect: 'malformed',
    },
    {
      name: 'Basic scheme',
      headers: () => ({ authorization: 'Basic YWxpY2U6cGFzc3dvcmQ=' }),
      expect: 'malformed',
    },
    {
      name: 'token without a scheme',
      headers: async () => ({ authorization: await c.token() }),
      expect: 'malformed',
    },
    {
      name: 'Authorization sent twice',
      headers: async () => ({ authorization: [`Bearer ${await c.token()}`, 'Bearer x.y.z'] }),
      expect: 'malformed',
    },

    // API keys.
    { name: 'wrong API key', headers: () => ({ 'x-api-key': 'sk_test_8c1d0e5f7b' }), expect: 'bad_api_key' },
    { name: 'empty API key', headers: () => ({ 'x-api-key': '' }), expect: 'bad_api_key' },
    {
      name: 'API key hash presented as the key',
      headers: () => ({ 'x-api-key': hashApiKey(API_KEY) }),
      expect: 'bad_api_key',
    },
    { name: 'oversized API key', headers: () => ({ 'x-api-key': 'k'.repeat(4096) }), expect: 'too_large' },
    {
      name: 'token and API key together',
      headers: async () => ({ authorization: `Bearer ${await c.token()}`, 'x-api-key': API_KEY }),
      expect: 'malformed',
    },
  ];
}

describe('bad-token corpus: input', () => {
  const corpus = corpusSuite(cases, (c) => {
    // Size and syntax are refused before any key is looked up.
    assert.ok(c.server.fetches <= 1);
  });

  it('a right API key maps to its principal; no credentials is anonymous', async () => {
    const c = corpus();
    const k = await c.auth.authenticate({ 'x-api-key': API_KEY });
    assert.deepEqual([k?.kind, k?.subject, k?.roles, k?.scopes], ['apiKey', 'billing-job', ['billing'], []]);
    assert.equal(await c.auth.authenticate({}), undefined);
  });
});
