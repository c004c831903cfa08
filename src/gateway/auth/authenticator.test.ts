import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateKeyPair } from 'jose';
import { ParleyError } from '../../errors.ts';
import { hashApiKey } from './api-keys.ts';
import { createAuthenticator } from './authenticator.ts';

async function outcome(run: () => Promise<unknown>): Promise<string> {
  try {
    const p = (await run()) as { subject: string } | undefined;
    return p === undefined ? 'anonymous' : `ok:${p.subject}`;
  } catch (e) {
    assert.ok(e instanceof ParleyError);
    return `${e.code}:${String(e.details?.reason)}`;
  }
}

describe('Authenticator', async () => {
  const { publicKey } = await generateKeyPair('ES256');
  const jwt = {
    algorithms: ['ES256'],
    keys: { type: 'static', key: publicKey },
    issuer: 'https://id.example.com',
    audience: 'api',
  } as const;
  const apiKeys = { header: 'X-Service-Key', keys: [{ sha256: hashApiKey('s3cret-key'), subject: 'cron' }] };

  it('reads the configured API key header, sent once or as a one-element list', async () => {
    const auth = createAuthenticator({ apiKeys });
    assert.equal(await outcome(() => auth.authenticate({ 'x-service-key': 's3cret-key' })), 'ok:cron');
    assert.equal(await outcome(() => auth.authenticate({ 'x-service-key': ['s3cret-key'] })), 'ok:cron');
    assert.equal(
      await outcome(() => auth.authenticate({ 'x-service-key': ['s3cret-key', 'other'] })),
      'UNAUTHENTICATED:malformed',
    );
    assert.equal(await outcome(() => auth.authenticate({ 'x-api-key': 's3cret-key' })), 'anonymous');
  });

  it('leaves headers of methods that are not configured alone', async () => {
    const auth = createAuthenticator({ apiKeys });
    // No JWT configured: Authorization may be meant for someone else; it is neither used nor refused.
    assert.equal(await outcome(() => auth.authenticate({ authorization: 'Bearer x' })), 'anonymous');
    const none = createAuthenticator({});
    assert.equal(
      await outcome(() => none.authenticate({ authorization: 'Bearer x', 'x-api-key': 'k' })),
      'anonymous',
    );
  });

  it('refuses API keys in Authorization when JWTs are on', () => {
    assert.throws(
      () => createAuthenticator({ jwt, apiKeys: { ...apiKeys, header: 'Authorization' } }),
      (e: unknown) => e instanceof ParleyError && e.code === 'INVALID_ARGUMENT',
    );
  });
});
