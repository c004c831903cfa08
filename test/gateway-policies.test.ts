/**
 * The gateway with the real authentication and rate-limit modules plugged in (`gatewayAuth`,
 * `gatewayRateLimit`): a signed JWT's principal reaches the service's ctx.caller; each action's
 * `access` rule is enforced (401 anonymous, 403 without the role); bad tokens are refused; limits
 * answer 429 with RateLimit and Retry-After headers; and two gateway instances share one limit
 * through Redis.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { createAuthenticator } from '../src/gateway/auth/index.ts';
import { gatewayAuth, gatewayRateLimit } from '../src/gateway/policies.ts';
import { createMemoryStore, createRateLimiter, createRedisStore } from '../src/gateway/rate-limit/index.ts';
import {
  createGateway,
  createMemoryNetwork,
  defineContract,
  type Gateway,
  implement,
  type ParleyNode,
  z,
} from '../src/index.ts';
import { BROKERS, needBroker } from './brokers.ts';
import { testNode, waitFor } from './helpers.ts';

const ISS = 'https://id.test';
const AUD = 'gateway-test';

const shop = defineContract({
  name: 'shop',
  version: '1.0.0',
  actions: {
    whoami: {
      input: z.object({}),
      output: z.object({ subject: z.string().nullable(), roles: z.array(z.string()) }),
      http: 'GET /whoami',
      public: true,
    },
    mine: {
      input: z.object({}),
      output: z.object({ ok: z.boolean() }),
      http: 'GET /mine',
      public: true,
      access: { authenticated: true },
    },
    admin: {
      input: z.object({}),
      output: z.object({ ok: z.boolean() }),
      http: 'POST /admin',
      public: true,
      access: { roles: ['admin'] },
    },
  },
});

const service = implement(shop, {
  actions: {
    whoami: (_i, ctx) => ({
      subject: ctx.caller?.principal?.subject ?? null,
      roles: [...(ctx.caller?.principal?.roles ?? [])],
    }),
    mine: () => ({ ok: true }),
    admin: () => ({ ok: true }),
  },
});

const nodes: ParleyNode[] = [];
const gateways: Gateway[] = [];
after(async () => {
  for (const g of gateways) await g.close();
  await Promise.allSettled(nodes.map((n) => n.stop()));
});

/** A service node and a gateway node on one memory network. */
async function system(): Promise<{ edge: ParleyNode }> {
  const net = createMemoryNetwork();
  const server = testNode({ transport: net.transport(), services: [service] });
  const edge = testNode({ transport: net.transport() });
  nodes.push(server, edge);
  await server.start();
  await edge.start();
  await waitFor(() => edge.registry.endpoints('shop').length > 0);
  return { edge };
}

describe('gateway with authentication', async () => {
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256' };
  const authenticator = createAuthenticator({
    jwt: { algorithms: ['RS256'], keys: { type: 'jwks', jwks: { keys: [jwk] } }, issuer: ISS, audience: AUD },
  });
  const token = (claims: Record<string, unknown>, exp = '5m') =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .setIssuer(ISS)
      .setAudience(AUD)
      .setSubject(String(claims.sub ?? 'ann'))
      .setIssuedAt()
      .setExpirationTime(exp)
      .sign(privateKey);
  const { edge } = await system();
  const gateway = createGateway({ node: edge, contracts: [shop], ...gatewayAuth({ authenticator }) });
  gateways.push(gateway);
  const { url } = await gateway.listen();
  const get = (path: string, jwt?: string, method = 'GET') =>
    fetch(`${url}/api${path}`, {
      method,
      headers: jwt === undefined ? {} : { authorization: `Bearer ${jwt}` },
    });

  it('a valid token’s principal reaches ctx.caller; anonymous is nobody', async () => {
    const ann = await token({ sub: 'ann', roles: ['customer'] });
    assert.deepEqual(await (await get('/whoami', ann)).json(), { subject: 'ann', roles: ['customer'] });
    assert.deepEqual(await (await get('/whoami')).json(), { subject: null, roles: [] });
  });

  it('access rules: 401 for anonymous, 403 without the role, 200 with it', async () => {
    assert.equal((await get('/mine')).status, 401);
    assert.equal((await get('/mine', await token({ sub: 'ann' }))).status, 200);
    assert.equal((await get('/admin', await token({ sub: 'ann', roles: ['customer'] }), 'POST')).status, 403);
    assert.equal((await get('/admin', await token({ sub: 'root', roles: ['admin'] }), 'POST')).status, 200);
  });

  it('bad tokens are 401 problems, even on an open route, and reveal nothing', async () => {
    const expired = await token({ sub: 'ann' }, '-1m');
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"sub":"root","roles":["admin"]}').toString('base64url')}.`;
    for (const bad of [expired, none, 'garbage', `${(await token({ sub: 'ann' })).slice(0, -4)}AAAA`]) {
      const r = await get('/whoami', bad);
      assert.equal(r.status, 401, bad.slice(0, 20));
      const problem = (await r.json()) as { code: string; detail?: string };
      assert.equal(problem.code, 'UNAUTHENTICATED');
      assert.doesNotMatch(JSON.stringify(problem), /root|admin/);
    }
  });
});

describe('gateway with rate limits', async () => {
  it('429 past the bucket, with RateLimit headers and Retry-After', async () => {
    const { edge } = await system();
    const limiter = createRateLimiter({
      store: createMemoryStore(),
      policy: { name: 'api', capacity: 3, refillPerSecond: 0.01 },
    });
    const gateway = createGateway({ node: edge, contracts: [shop], ...gatewayRateLimit({ limiter }) });
    gateways.push(gateway);
    const { url } = await gateway.listen();
    const statuses: number[] = [];
    let last: Response | undefined;
    for (let i = 0; i < 5; i++) {
      last = await fetch(`${url}/api/whoami`);
      statuses.push(last.status);
    }
    assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
    assert.ok(last);
    assert.match(last.headers.get('ratelimit') ?? '', /"api";r=0;t=\d+/);
    assert.match(last.headers.get('ratelimit-policy') ?? '', /"api";q=3;w=\d+/);
    assert.ok(Number(last.headers.get('retry-after')) > 0);
    assert.equal(((await last.json()) as { code: string }).code, 'RESOURCE_EXHAUSTED');
    // No proxy is trusted here: an X-Forwarded-For naming another client does not buy a fresh bucket.
    const spoofed = await fetch(`${url}/api/whoami`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
    assert.equal(spoofed.status, 429);
  });

  it('an API key the request merely carries is no bucket of its own: a new one per request is still limited', async () => {
    const { edge } = await system();
    const limiter = createRateLimiter({
      store: createMemoryStore(),
      policy: { capacity: 3, refillPerSecond: 0.01 },
    });
    const gateway = createGateway({ node: edge, contracts: [shop], ...gatewayRateLimit({ limiter }) });
    gateways.push(gateway);
    const { url } = await gateway.listen();
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++)
      statuses.push((await fetch(`${url}/api/whoami`, { headers: { 'x-api-key': `junk-${i}` } })).status);
    assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
  });

  it('refused credentials spend tokens too: guessing is limited like any request', async () => {
    const { edge } = await system();
    const { publicKey } = await generateKeyPair('RS256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256' };
    const authenticator = createAuthenticator({
      jwt: {
        algorithms: ['RS256'],
        keys: { type: 'jwks', jwks: { keys: [jwk] } },
        issuer: ISS,
        audience: AUD,
      },
    });
    const limiter = createRateLimiter({
      store: createMemoryStore(),
      policy: { capacity: 3, refillPerSecond: 0.01 },
    });
    const gateway = createGateway({
      node: edge,
      contracts: [shop],
      ...gatewayAuth({ authenticator }),
      ...gatewayRateLimit({ limiter }),
    });
    gateways.push(gateway);
    const { url } = await gateway.listen();
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++)
      statuses.push(
        (await fetch(`${url}/api/whoami`, { headers: { authorization: `Bearer guess-${i}` } })).status,
      );
    assert.deepEqual(statuses, [401, 401, 401, 429, 429]);
    // The same client without credentials shares that bucket (it is the client's, not the guess's).
    assert.equal((await fetch(`${url}/api/whoami`)).status, 429);
  });

  const redisSkip = await needBroker('redis');
  it('two gateway instances share one limit through Redis', { skip: redisSkip }, async () => {
    const { edge } = await system();
    const prefix = `ptest-gw-${process.pid}-${Date.now()}:`;
    const clients = [new Redis(BROKERS.redis.url), new Redis(BROKERS.redis.url)];
    try {
      const urls: string[] = [];
      for (const redis of clients) {
        const limiter = createRateLimiter({
          store: createRedisStore({ redis, prefix }),
          policy: { name: 'api', capacity: 10, refillPerSecond: 0.001 },
        });
        const g = createGateway({ node: edge, contracts: [shop], ...gatewayRateLimit({ limiter }) });
        gateways.push(g);
        urls.push((await g.listen()).url);
      }
      // 30 requests, alternating instances, all at once: exactly the bucket's 10 pass.
      const results = await Promise.all(
        Array.from({ length: 30 }, (_, i) => fetch(`${urls[i % 2]}/api/whoami`).then((r) => r.status)),
      );
      assert.equal(results.filter((s) => s === 200).length, 10, JSON.stringify(results));
      assert.equal(results.filter((s) => s === 429).length, 20);
    } finally {
      const keys = await clients[0]?.keys(`${prefix}*`);
      if (keys !== undefined && keys.length > 0) await clients[0]?.del(...keys);
      for (const c of clients) c.disconnect();
    }
  });
});
