/**
 * The gateway over real HTTP: routes from contracts, validation, errors as problem+json, request
 * ids, 404/405, output streams as NDJSON, the auth and rate-limit hooks, CORS.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createGateway, type GatewayRoute, ParleyError, type Principal } from '../src/index.ts';
import { items, problemOf, raw, startGateway } from './gateway-fixture.ts';
import { testNode } from './helpers.ts';

const json = (body: unknown) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** The ids the gateway makes: UUIDv7 (version 7, RFC 9562 variant). */
const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('gateway routes', async () => {
  const { url } = await startGateway();

  it('POST with a JSON body, GET with a path parameter, PATCH merging the path into the body', async () => {
    const created = await fetch(`${url}/api/items`, json({ name: 'pen', price: 3 }));
    assert.equal(created.status, 200);
    assert.match(created.headers.get('content-type') ?? '', /^application\/json/);
    assert.deepEqual(await created.json(), { id: 'i-1', name: 'pen', price: 3 });

    const got = await fetch(`${url}/api/items/abc-1`);
    assert.deepEqual(await got.json(), { id: 'abc-1', name: 'thing', price: 5 });

    const renamed = await fetch(`${url}/api/items/abc-2`, { ...json({ name: 'new' }), method: 'PATCH' });
    assert.deepEqual(await renamed.json(), { id: 'abc-2', name: 'new', price: 5 });
    // The body may not name a different id than the path.
    const conflict = await fetch(`${url}/api/items/abc-2`, {
      ...json({ id: 'other', name: 'x' }),
      method: 'PATCH',
    });
    assert.equal(conflict.status, 400);
  });

  it('coerces query values by the schema: numbers, booleans, repeated keys as arrays', async () => {
    const r = await fetch(`${url}/api/items?q=red&limit=5&active=true&tags=a&tags=b&sizes=1.5&sizes=2`);
    assert.equal(r.status, 200);
    assert.deepEqual(((await r.json()) as { seen: unknown }).seen, {
      q: 'red',
      limit: 5,
      active: true,
      tags: ['a', 'b'],
      sizes: [1.5, 2],
    });
    const single = await fetch(`${url}/api/items?tags=only`);
    assert.deepEqual(((await single.json()) as { seen: unknown }).seen, { limit: 10, tags: ['only'] });
    const bad = problemOf(await asRaw(fetch(`${url}/api/items?limit=lots`)));
    assert.equal(bad.status, 400);
    assert.deepEqual(
      (bad.errors as { path: string }[]).map((e) => e.path),
      ['limit'],
    );
    const twice = problemOf(await asRaw(fetch(`${url}/api/items?q=a&q=b`)));
    assert.equal(twice.code, 'INVALID_ARGUMENT');
  });

  it('routes by convention when the action has no http route; private actions have no route', async () => {
    const r = await fetch(`${url}/api/items/whoami`, json({}));
    assert.equal(r.status, 200);
    // POST /api/items/secret would be the convention route: it is only GET /items/:id's path (405).
    const secret = await fetch(`${url}/api/items/secret`, json({ x: 1 }));
    assert.equal(secret.status, 405);
  });

  it('answers an invalid input 400 with every field violation, before the service is called', async () => {
    const r = await asRaw(fetch(`${url}/api/items`, json({ name: '', price: -1, extra: 1 })));
    const p = problemOf(r);
    assert.equal(r.status, 400);
    assert.equal(p.code, 'INVALID_ARGUMENT');
    assert.equal(p.status, 400);
    assert.equal(p.instance, '/api/items');
    assert.deepEqual((p.errors as { path: string }[]).map((e) => e.path).sort(), ['name', 'price']);
    const notObject = await asRaw(fetch(`${url}/api/items`, json([1, 2])));
    assert.equal(notObject.status, 400);
    const badJson = problemOf(await asRaw(fetch(`${url}/api/items`, { ...json({}), body: '{"name": "x",' })));
    assert.equal(badJson.status, 400);
    const text = await asRaw(
      fetch(`${url}/api/items`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hi' }),
    );
    assert.equal(text.status, 415);
  });

  it('maps error codes to statuses as problem+json with code, reason and request id', async () => {
    const cases: [string, number][] = [
      ['NOT_FOUND', 404],
      ['ALREADY_EXISTS', 409],
      ['PERMISSION_DENIED', 403],
      ['FAILED_PRECONDITION', 400],
      ['UNAVAILABLE', 503],
      ['RESOURCE_EXHAUSTED', 429],
      ['DEADLINE_EXCEEDED', 504],
      ['UNAUTHENTICATED', 401],
    ];
    for (const [code, status] of cases) {
      const r = await asRaw(fetch(`${url}/api/items/fail`, json({ code, message: `it is ${code}` })));
      const p = problemOf(r);
      assert.equal(r.status, status, code);
      assert.equal(p.status, status);
      assert.equal(p.code, code);
      assert.equal(p.detail, `it is ${code}`);
      assert.equal(p.type, `urn:parley:problem:${code.toLowerCase().replaceAll('_', '-')}`);
      assert.equal(typeof p.title, 'string');
      assert.equal(p.instance, '/api/items/fail');
      assert.equal(p.requestId, r.headers['x-request-id']);
      if (code === 'UNAUTHENTICATED') assert.equal(r.headers['www-authenticate'], 'Bearer');
    }
    const declared = problemOf(await asRaw(fetch(`${url}/api/items/missing`)));
    assert.equal(declared.status, 404);
    assert.equal(declared.reason, 'NO_ITEM');
  });

  it('hides an unexpected error: 500 INTERNAL without its message', async () => {
    const r = await asRaw(fetch(`${url}/api/items/fail`, json({ code: 'BUG' })));
    const p = problemOf(r);
    assert.equal(r.status, 500);
    assert.equal(p.code, 'INTERNAL');
    assert.doesNotMatch(r.body, /hunter2|secret internal|stack|at /);
  });

  it('puts a request id on every response; keeps a client id only when it is a UUID', async () => {
    const ok = await fetch(`${url}/api/items/a`);
    assert.match(ok.headers.get('x-request-id') ?? '', UUID_V7);
    const notFound = await fetch(`${url}/nope`);
    assert.match(notFound.headers.get('x-request-id') ?? '', UUID_V7);
    const given = '0191e6a4-7c1d-7b3a-9f00-1234567890ab';
    const kept = await fetch(`${url}/api/items/a`, { headers: { 'x-request-id': given } });
    assert.equal(kept.headers.get('x-request-id'), given);
    const hostile = await fetch(`${url}/api/items/a`, { headers: { 'x-request-id': 'abc\tinjected=1' } });
    assert.notEqual(hostile.headers.get('x-request-id'), 'abc\tinjected=1');
    assert.match(hostile.headers.get('x-request-id') ?? '', UUID);
    const a = (await fetch(`${url}/healthz`)).headers.get('x-request-id') ?? '';
    const b = (await fetch(`${url}/healthz`)).headers.get('x-request-id') ?? '';
    // Made one after the other, the second sorts after the first (time, then a counter).
    assert.ok(a < b, `${a} then ${b}`);
  });

  it('answers an unknown route 404 and a known path with the wrong method 405 with Allow', async () => {
    const nf = await asRaw(fetch(`${url}/api/nothing/here`));
    assert.equal(nf.status, 404);
    assert.equal(problemOf(nf).code, 'NOT_FOUND');
    const na = await asRaw(fetch(`${url}/api/items/abc`, { method: 'DELETE' }));
    assert.equal(na.status, 405);
    assert.equal(problemOf(na).status, 405);
    assert.deepEqual(na.headers.allow?.split(', ').sort(), ['GET', 'PATCH']);
    const head = await fetch(`${url}/api/items/abc`, { method: 'HEAD' });
    assert.equal(head.status, 405);
  });

  it('streams an output-stream action as NDJSON; a failure midway ends it with an error line', async () => {
    const r = await fetch(`${url}/api/count?to=3`);
    assert.equal(r.headers.get('content-type'), 'application/x-ndjson');
    assert.deepEqual(
      (await r.text())
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l)),
      [{ n: 0 }, { n: 1 }, { n: 2 }],
    );
    const broken = (await (await fetch(`${url}/api/count?to=5&failAt=2`)).text()).trim().split('\n');
    assert.equal(broken.length, 3);
    const last = JSON.parse(broken[2] as string) as { error: { code: string } };
    assert.equal(last.error.code, 'FAILED_PRECONDITION');
    // Failing before the first chunk is an ordinary problem response.
    const atOnce = await asRaw(fetch(`${url}/api/count?to=5&failAt=0`));
    assert.equal(atOnce.status, 400);
    assert.equal(problemOf(atOnce).code, 'FAILED_PRECONDITION');
  });

  it('calls with a deadline: the action timeout, else the gateway default', async () => {
    const who = (await (await fetch(`${url}/api/items/whoami`, json({}))).json()) as { remaining: number };
    assert.ok(who.remaining > 9000 && who.remaining <= 10_000, `remaining ${who.remaining}`);
    const late = await asRaw(fetch(`${url}/api/items/slow`, json({ ms: 5000 })));
    assert.equal(late.status, 504);
    assert.equal(problemOf(late).code, 'DEADLINE_EXCEEDED');
  });
});

describe('gateway hooks', async () => {
  const alice: Principal = { kind: 'user', subject: 'alice', roles: ['customer'], scopes: [] };
  const seenRoutes: GatewayRoute[] = [];
  let parsedBodies = 0;
  const { url } = await startGateway(
    {
      async authenticate(request) {
        const auth = request.headers.authorization;
        if (auth === undefined) return undefined;
        if (auth === 'Bearer alice') return alice;
        throw new ParleyError('UNAUTHENTICATED', 'bad token');
      },
      authorize(principal, route) {
        if (route.action === 'create' && principal === undefined)
          throw new ParleyError('UNAUTHENTICATED', 'log in');
        if (route.action === 'rename' && !principal?.roles.includes('admin'))
          throw new ParleyError('PERMISSION_DENIED', 'admins only');
      },
      async rateLimit(request, route, principal) {
        seenRoutes.push(route);
        const headers = { 'ratelimit-remaining': principal === undefined ? '0' : '9' };
        if (request.headers['x-test-flood'] !== undefined) {
          return { headers, refused: new ParleyError('RESOURCE_EXHAUSTED', 'slow down') };
        }
        return { headers };
      },
    },
    {
      prepare: (gateway) =>
        gateway.fastify.addHook('preValidation', async () => {
          parsedBodies++;
        }),
    },
  );

  it('passes the authenticated principal to the service as ctx.caller.principal', async () => {
    const r = await fetch(`${url}/api/items/whoami`, {
      ...json({}),
      headers: { authorization: 'Bearer alice', 'content-type': 'application/json' },
    });
    assert.deepEqual(((await r.json()) as { principal: unknown }).principal, alice);
    assert.equal(r.headers.get('ratelimit-remaining'), '9');
    const anon = await fetch(`${url}/api/items/whoami`, json({}));
    assert.equal(((await anon.json()) as { principal: unknown }).principal, null);
  });

  it('passes Idempotency-Key to the service scoped to its sender; refuses malformed keys', async () => {
    const whoami = async (headers: Record<string, string>) => {
      const r = await asRaw(
        fetch(`${url}/api/items/whoami`, {
          ...json({}),
          headers: { 'content-type': 'application/json', ...headers },
        }),
      );
      return {
        status: r.status,
        body: JSON.parse(r.body) as { idempotencyKey?: string | null; code?: string },
      };
    };
    assert.equal((await whoami({})).body.idempotencyKey, null);
    // A token and the draft's quoted form (escapes undone) reach the handler alike.
    assert.equal((await whoami({ 'idempotency-key': 'k-1' })).body.idempotencyKey, 'anonymous/k-1');
    assert.equal((await whoami({ 'idempotency-key': '"a \\"b\\""' })).body.idempotencyKey, 'anonymous/a "b"');
    // The same key from alice is another key: nobody reaches another's result by sending its key.
    assert.equal(
      (await whoami({ 'idempotency-key': 'k-1', authorization: 'Bearer alice' })).body.idempotencyKey,
      'user:alice/k-1',
    );
    for (const bad of ['', '""', 'two words', 'a, b', '"open', '"x"y"', 'é', 'k'.repeat(256)]) {
      const r = await whoami({ 'idempotency-key': bad });
      assert.equal(r.status, 400, `key ${JSON.stringify(bad)}`);
      assert.equal(r.body.code, 'INVALID_ARGUMENT');
    }
    assert.equal((await whoami({ 'idempotency-key': 'k'.repeat(255) })).status, 200);
  });

  it('refuses before reading the body: 401 from authenticate/authorize, 403, 429 with headers', async () => {
    const before = parsedBodies;
    const bad = await asRaw(
      fetch(`${url}/api/items`, {
        ...json({ name: 'a', price: 1 }),
        headers: { authorization: 'Bearer mallory', 'content-type': 'application/json' },
      }),
    );
    assert.equal(bad.status, 401);
    assert.equal(bad.headers['www-authenticate'], 'Bearer');
    const anon = await asRaw(fetch(`${url}/api/items`, json({ name: 'a', price: 1 })));
    assert.equal(problemOf(anon).code, 'UNAUTHENTICATED');
    const denied = await asRaw(
      fetch(`${url}/api/items/x`, {
        ...json({ name: 'b' }),
        method: 'PATCH',
        headers: { authorization: 'Bearer alice', 'content-type': 'application/json' },
      }),
    );
    assert.equal(denied.status, 403);
    const flood = await asRaw(fetch(`${url}/api/items/a`, { headers: { 'x-test-flood': '1' } }));
    assert.equal(flood.status, 429);
    assert.equal(flood.headers['ratelimit-remaining'], '0');
    assert.equal(problemOf(flood).code, 'RESOURCE_EXHAUSTED');
    assert.equal(parsedBodies, before, 'no refused request reached body validation');
    assert.ok(
      seenRoutes.some((r) => r.service === 'items' && r.action === 'get' && r.path === '/api/items/:id'),
    );
  });
});

describe('gateway: a principal too large to travel', () => {
  // Claims that fit a token (8 KiB by default) but not an envelope's principal (8 KiB as JSON):
  // roles are read from the claims, so they are there twice.
  const roles = Array.from({ length: 400 }, (_, i) => `role-${i}`);
  const big: Principal = { kind: 'user', subject: 'bob', roles, scopes: [], claims: { roles } };
  const alice: Principal = { kind: 'user', subject: 'alice', roles: ['customer'], scopes: [] };
  const broken = { kind: 'user', subject: 'eve' } as unknown as Principal;
  const authenticate = async (request: { headers: Record<string, string | string[] | undefined> }) =>
    ({ 'Bearer bob': big, 'Bearer alice': alice, 'Bearer eve': broken })[
      String(request.headers.authorization)
    ];

  for (const inProcess of [true, false]) {
    it(`is a refused credential (401), the service ${inProcess ? 'in process' : 'behind a transport'}`, async () => {
      const { url } = await startGateway({ authenticate }, { inProcess });
      const call = (token: string) =>
        asRaw(
          fetch(`${url}/api/items/whoami`, {
            ...json({}),
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          }),
        );
      // Before: 400 INVALID_ARGUMENT "principal over 8192 bytes", as if the request were
      // malformed, and a hook's broken principal was a 400 too.
      const r = await call('bob');
      assert.equal(r.status, 401);
      assert.equal(problemOf(r).code, 'UNAUTHENTICATED');
      assert.equal(problemOf(r).detail, 'invalid credentials');
      const bad = await call('eve');
      assert.equal(bad.status, 500, "the hook returned no principal: our bug, not the client's");
      const ok = await call('alice');
      assert.equal(ok.status, 200);
      assert.deepEqual((JSON.parse(ok.body) as { principal: unknown }).principal, alice);
    });
  }
});

describe('gateway CORS', async () => {
  const { url } = await startGateway({
    cors: { origins: ['https://shop.example'], headers: ['X-Shop-Key'] },
  });

  it('allows the exact origin, with Vary: Origin; answers the preflight', async () => {
    const r = await fetch(`${url}/api/items/a`, { headers: { origin: 'https://shop.example' } });
    assert.equal(r.headers.get('access-control-allow-origin'), 'https://shop.example');
    assert.match(r.headers.get('vary') ?? '', /Origin/);
    assert.match(r.headers.get('access-control-expose-headers') ?? '', /x-request-id/);
    const pre = await raw(url, {
      method: 'OPTIONS',
      path: '/api/items',
      headers: { origin: 'https://shop.example', 'access-control-request-method': 'POST' },
    });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers['access-control-allow-origin'], 'https://shop.example');
    assert.match(String(pre.headers['access-control-allow-methods']), /POST/);
    // Every request header the gateway reads, and the ones configured (an API key of another name).
    assert.deepEqual(String(pre.headers['access-control-allow-headers']).split(', ').sort(), [
      'authorization',
      'content-type',
      'idempotency-key',
      'x-api-key',
      'x-request-id',
      'x-shop-key',
    ]);
  });

  it('gives no Allow-Origin to an origin that differs by one character, or to lookalikes', async () => {
    for (const origin of [
      'https://shop.exampl',
      'https://shop.examplf',
      'http://shop.example',
      'https://shop.example.evil',
      'https://evil-shop.example',
      'https://shop.example:443',
      'null',
    ]) {
      const r = await fetch(`${url}/api/items/a`, { headers: { origin } });
      assert.equal(r.headers.get('access-control-allow-origin'), null, origin);
      assert.match(r.headers.get('vary') ?? '', /Origin/);
      const pre = await raw(url, {
        method: 'OPTIONS',
        path: '/api/items',
        headers: { origin, 'access-control-request-method': 'POST' },
      });
      assert.equal(pre.headers['access-control-allow-origin'], undefined, origin);
      assert.equal(pre.status, 403);
    }
  });
});

describe('gateway start-up checks', () => {
  it('refuses a route whose path parameter is not in the input, and duplicate routes', async () => {
    const node = testNode({});
    const { defineContract, z } = await import('../src/index.ts');
    const bad = defineContract({
      name: 'bad',
      version: '1.0.0',
      actions: { a: { input: z.object({}), output: z.object({}), public: true, http: 'GET /x/:id' } },
    });
    assert.throws(() => createGateway({ node, contracts: [bad] }), /:id/);
    const dup = defineContract({
      name: 'dup',
      version: '1.0.0',
      actions: {
        a: { input: z.object({}), output: z.object({}), public: true, http: 'POST /x' },
        b: { input: z.object({}), output: z.object({}), public: true, http: 'POST /x' },
      },
    });
    assert.throws(() => createGateway({ node, contracts: [dup] }), /already/);
    const nested = defineContract({
      name: 'nested',
      version: '1.0.0',
      actions: {
        a: { input: z.object({ o: z.object({}) }), output: z.object({}), public: true, http: 'GET /x' },
      },
    });
    assert.throws(() => createGateway({ node, contracts: [nested] }), /scalars/);
    void items;
  });

  it('refuses an internal token no request could present: blank, or with spaces around it', () => {
    const node = testNode({});
    for (const token of ['', '  ', ' svc-token', 'svc-token\t']) {
      assert.throws(
        () => createGateway({ node, contracts: [items], internal: { tokens: ['good-token', token] } }),
        (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && /internal token/.test(e.message),
        JSON.stringify(token),
      );
    }
    // Spaces inside a token are sent as they are.
    createGateway({ node, contracts: [items], internal: { tokens: ['svc token'] } });
  });
});

describe('gateway logging', async () => {
  const { pino } = await import('pino');
  const lines: {
    level: number;
    msg?: string;
    requestId?: string;
    err?: { message?: string };
    plugin?: string;
  }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  const { url, gateway } = await startGateway({ logger });

  it('keeps what a child of its Fastify logger asks for (no request child is made, but others are)', () => {
    lines.length = 0;
    gateway.fastify.log.child({ plugin: 'push' }).warn('from a plugin');
    const line = lines.find((l) => l.msg === 'from a plugin');
    assert.equal(line?.plugin, 'push');
  });

  it('logs a failure it answers with 5xx once, naming its request id; answers under 500 and successes log nothing', async () => {
    lines.length = 0; // Fastify's "Server listening" line
    const ok = await fetch(`${url}/api/items/a`);
    assert.equal(ok.status, 200);
    const missing = await asRaw(fetch(`${url}/api/items/missing`));
    assert.equal(missing.status, 404);
    assert.deepEqual(
      lines.map((l) => l.msg),
      [],
      'nothing for a success or a 404',
    );
    const failed = await asRaw(fetch(`${url}/api/items/fail`, json({ code: 'BUG' })));
    assert.equal(failed.status, 500);
    const logged = lines.filter((l) => l.msg === 'request failed');
    assert.equal(logged.length, 1);
    assert.equal(logged[0]?.level, 50, 'at error level');
    assert.equal(logged[0]?.requestId, failed.headers['x-request-id']);
    assert.match(logged[0]?.err?.message ?? '', /INTERNAL|internal/);
  });
});

async function asRaw(
  response: Promise<Response>,
): Promise<{ status: number; headers: Record<string, string>; body: string }> {
  const r = await response;
  return { status: r.status, headers: Object.fromEntries(r.headers.entries()), body: await r.text() };
}
