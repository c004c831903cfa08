/**
 * The gateway against generated hostile input: requests built from a seeded generator (methods,
 * paths with encoded and unusual segments, query strings, headers, and JSON bodies mutated from
 * valid ones: wrong types, deep nesting, huge numbers, prototype keys, escapes, truncation). The
 * corpus test (`gateway-bad-input.test.ts`) names each known trick; this one looks for the
 * combinations nobody wrote down.
 *
 * What every answer must be: a status the gateway gives on purpose (no 5xx but the one action
 * that throws a bug on purpose), a request id, a problem+json body whose `status` is the answer's
 * for every error, JSON for every success, no internal detail. Afterwards the gateway still
 * serves and Object.prototype is untouched. Then, with authentication on, tokens and API keys
 * tampered with in generated ways: none is ever taken for its owner. `PARLEY_FUZZ_SEED` and
 * `PARLEY_FUZZ_COUNT` explore further; a failure names the seed and the request.
 */
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from 'jose';
import { createAuthenticator } from '../src/gateway/auth/index.ts';
import { gatewayAuth } from '../src/gateway/policies.ts';
import { problemOf, type RawResponse, raw, startGateway } from './gateway-fixture.ts';
import { mutate, type Seeded, seeded } from './helpers.ts';

const SEED = Number(process.env.PARLEY_FUZZ_SEED ?? 20261130);
const COUNT = Number(process.env.PARLEY_FUZZ_COUNT ?? 800);
const PARALLEL = 8;

const ROUTES = [
  ['POST', '/api/items'],
  ['GET', '/api/items/:id'],
  ['PATCH', '/api/items/:id'],
  ['GET', '/api/items'],
  ['POST', '/api/items/fail'],
  ['POST', '/api/items/whoami'],
  ['GET', '/api/count'],
  ['POST', '/api/uploads'],
  ['GET', '/healthz'],
  ['GET', '/readyz'],
  ['GET', '/openapi.json'],
  ['GET', '/docs'],
  ['POST', '/rpc/items.secret'],
  ['GET', '/nowhere'],
] as const;

const METHODS = ['GET', 'POST', 'PATCH', 'PUT', 'DELETE', 'OPTIONS', 'HEAD', 'TRACE', 'PROPFIND'];

const SEGMENTS = [
  'ok-1',
  'missing',
  'A',
  '..',
  '.',
  '%2e%2e',
  '%2F',
  '%5C',
  '%00',
  '%25',
  '%252e',
  '%c0%ae',
  '%e2%80%ae',
  '%ff',
  'caf%C3%A9',
  '%F0%9F%98%80',
  ';x=1',
  '__proto__',
  'constructor',
  'prototype',
  ' ',
  '%20',
  '~',
  '*',
  '(',
  "'",
  '"',
  '<script>',
  'a'.repeat(25),
  'a'.repeat(300),
];

const QUERY_KEYS = ['q', 'limit', 'active', 'tags', 'sizes', 'to', 'failAt', '__proto__', 'constructor', 'x'];
const QUERY_VALUES = [
  '1',
  '0',
  '-1',
  '1e309',
  'NaN',
  'true',
  'false',
  '',
  'a%00b',
  '%zz',
  '%',
  'a,b',
  '[]',
  '{}',
  '__proto__',
  'x'.repeat(200),
  '999999999999999999999',
];

const CONTENT_TYPES = [
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=latin1',
  'APPLICATION/JSON',
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'multipart/form-data',
  'application/octet-stream',
  'application/problem+json',
  '',
  ';;;',
];

/** Valid inputs of the routes, the seeds of mutation. */
const VALID: unknown[] = [
  { name: 'pen', price: 3 },
  { id: 'ok-1', name: 'renamed' },
  { code: 'NO_ITEM', message: 'declared' },
  {},
  { x: 2 },
  { to: 3 },
  { q: 'a', limit: 5, tags: ['x'], sizes: [1] },
];

function nested(depth: number): string {
  return '['.repeat(depth) + ']'.repeat(depth);
}

function body(g: Seeded): string | undefined {
  const kind = g.int(10);
  if (kind === 0) return undefined;
  if (kind === 1) return '{"__proto__":{"polluted":1},"name":"p","price":1}';
  if (kind === 2) return '{"constructor":{"prototype":{"polluted":1}},"name":"p","price":1}';
  if (kind === 3) return '{"name":"\\u005f_proto__","price":1,"\\u005f_proto__":{"polluted":1}}';
  if (kind === 4) return nested(1 + g.int(5000));
  if (kind === 5) {
    const text = JSON.stringify(g.pick(VALID));
    return text.slice(0, g.int(text.length)); // truncated
  }
  if (kind === 6) return Buffer.from([0xff, 0xfe, 0x7b, 0x22, 0xc0, 0xaf, 0x22, 0x7d]).toString('latin1');
  return JSON.stringify(mutate(g, g.pick(VALID)));
}

function path(g: Seeded): { method: string; path: string } {
  const [method, template] = g.pick(ROUTES);
  let p = template.replace(':id', () => g.pick(SEGMENTS));
  if (g.chance(0.15)) p = p.replace(/\/(?=[^/]*$)/, `/${g.pick(SEGMENTS)}/`);
  if (g.chance(0.05)) p = p.toUpperCase();
  if (g.chance(0.05)) p += '/';
  if (g.chance(0.4)) {
    const pairs = Array.from(
      { length: 1 + g.int(4) },
      () => `${g.pick(QUERY_KEYS)}${g.chance(0.1) ? '[]' : ''}=${g.pick(QUERY_VALUES)}`,
    );
    p += `?${pairs.join('&')}`;
  }
  return { method: g.chance(0.15) ? g.pick(METHODS) : method, path: p };
}

function headers(g: Seeded, withBody: boolean): Record<string, string> {
  const h: Record<string, string> = {};
  if (withBody || g.chance(0.2)) h['content-type'] = g.pick(CONTENT_TYPES);
  const extras: [string, () => string][] = [
    ['x-parley-principal', () => '{"sub":"admin","roles":["admin"]}'],
    ['x-parley-deadline', () => g.pick(['0', '-1', '1e20', 'x'])],
    ['traceparent', () => g.pick(['00-xyz', `00-${'0'.repeat(32)}-${'0'.repeat(16)}-01`, 'ff'.repeat(40)])],
    ['idempotency-key', () => g.pick(['', 'k', 'k'.repeat(500), '\u00e9'])],
    [
      'authorization',
      () => g.pick(['Bearer ', 'Bearer x.y.z', 'Basic Zm9vOmJhcg==', 'Bearer eyJhbGciOiJub25lIn0.e30.']),
    ],
    ['x-forwarded-for', () => g.pick(['1.2.3.4', '::1, 10.0.0.1', 'garbage', ''])],
    ['origin', () => g.pick(['http://evil.test', 'null', 'http://127.0.0.1'])],
    ['accept', () => g.pick(['*/*', 'text/event-stream', 'application/x-ndjson', 'image/png'])],
    ['last-event-id', () => g.pick(['1', '-1', 'x', '9'.repeat(40)])],
    ['content-encoding', () => g.pick(['gzip', 'br', 'identity', 'x'])],
  ];
  for (const [name, value] of extras) if (g.chance(0.12)) h[name] = value();
  return h;
}

/** What is wrong with one answer, or undefined. */
function violation(r: RawResponse, method: string, requestPath: string): string | undefined {
  const id = r.headers['x-request-id'];
  if (r.status >= 500) {
    const bug = requestPath.startsWith('/api/items/fail') && method === 'POST';
    if (!(bug && r.status === 500)) return `status ${r.status}`;
  }
  if (r.status < 200 || r.status > 599) return `status ${r.status}`;
  if (r.body.includes('hunter2')) return 'an internal detail leaked';
  if (Object.hasOwn(Object.prototype, 'polluted')) return 'Object.prototype polluted';
  if (method === 'HEAD' || method === 'OPTIONS' || r.status === 204) return undefined;
  if (r.status >= 400) {
    if (typeof id !== 'string' || !/^[0-9a-f-]{36}$/.test(id)) return `no request id (${String(id)})`;
    let problem: Record<string, unknown>;
    try {
      problem = problemOf(r);
    } catch (error) {
      return (error as Error).message;
    }
    if (problem.status !== r.status) return `problem status ${String(problem.status)} on a ${r.status}`;
    if (typeof problem.code !== 'string' || problem.code === '') return 'a problem without a code';
    return undefined;
  }
  const type = String(r.headers['content-type'] ?? '');
  if (type.startsWith('application/json')) {
    try {
      JSON.parse(r.body);
    } catch {
      return 'a success whose JSON does not parse';
    }
  }
  return undefined;
}

describe('gateway fuzz', async () => {
  const { url } = await startGateway({ bodyLimit: 64 * 1024 });

  it(`${COUNT} generated requests (seed ${SEED}): every answer on purpose, nothing leaks, still serving`, async (t) => {
    const g = seeded(SEED);
    const statuses = new Map<number, number>();
    const failures: string[] = [];
    for (let done = 0; done < COUNT; done += PARALLEL) {
      const batch = Array.from({ length: Math.min(PARALLEL, COUNT - done) }, (_, i) => {
        const n = done + i;
        const target = path(g);
        const text = target.method === 'GET' || target.method === 'HEAD' ? undefined : body(g);
        const init = { ...target, headers: headers(g, text !== undefined), body: text };
        return raw(url, init).then(
          (r) => {
            statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
            const wrong = violation(r, init.method, init.path);
            if (wrong !== undefined) {
              failures.push(
                `#${n} ${wrong}: ${init.method} ${init.path.slice(0, 120)} ${JSON.stringify(init.headers)} ` +
                  `${String(init.body).slice(0, 120)} → ${r.status} ${r.body.slice(0, 200)}`,
              );
            }
          },
          (error: unknown) => {
            // The server may close a connection it refuses (a head it cannot parse): that is an
            // answer too, but never a timeout.
            const message = (error as Error).message;
            if (/timeout/.test(message)) failures.push(`#${n} no answer: ${init.method} ${init.path}`);
          },
        );
      });
      await Promise.all(batch);
    }
    t.diagnostic(`statuses: ${JSON.stringify([...statuses].sort((a, b) => a[0] - b[0]))}`);
    assert.deepEqual(failures, [], `seed ${SEED}`);
    assert.equal(Object.hasOwn(Object.prototype, 'polluted'), false);
    // The generator reaches past validation, not only the first refusal.
    assert.ok((statuses.get(200) ?? 0) > COUNT / 50, `successes: ${JSON.stringify([...statuses])}`);
    assert.ok((statuses.get(400) ?? 0) > COUNT / 10, `refusals: ${JSON.stringify([...statuses])}`);
    const alive = await raw(url, { path: '/api/items/ok-1' });
    assert.equal(alive.status, 200, 'the gateway still serves');
  });
});

describe('gateway fuzz: tampered credentials', async () => {
  const ISS = 'https://id.test';
  const AUD = 'fuzz';
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256' };
  const API_KEY = 'pk_live_0123456789abcdefghij';
  const authenticator = createAuthenticator({
    jwt: { algorithms: ['RS256'], keys: { type: 'jwks', jwks: { keys: [jwk] } }, issuer: ISS, audience: AUD },
    apiKeys: { keys: [{ sha256: createHash('sha256').update(API_KEY).digest('hex'), subject: 'svc' }] },
  });
  const { url } = await startGateway(gatewayAuth({ authenticator }));
  const sign = (claims: { sub?: string; aud?: string; exp?: number; nbf?: number }) => {
    const jwt = new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setIssuer(ISS);
    jwt.setAudience(claims.aud ?? AUD).setSubject(claims.sub ?? 'ann');
    jwt.setExpirationTime(claims.exp ?? Math.floor(Date.now() / 1000) + 300);
    if (claims.nbf !== undefined) jwt.setNotBefore(claims.nbf);
    return jwt.sign(privateKey);
  };
  const valid = await sign({});
  const now = Math.floor(Date.now() / 1000);
  const refused = [
    await sign({ exp: now - 3600 }),
    await sign({ aud: 'other' }),
    await sign({ nbf: now + 3600 }),
  ];
  const pem = await exportSPKI(publicKey);
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

  /** A credential header that must not authenticate as anyone. */
  function tampered(g: Seeded): Record<string, string> {
    const [h = '', p = '', sig = ''] = valid.split('.');
    const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
    switch (g.int(9)) {
      case 0: {
        // One character changed anywhere but in the padding bits of the last one.
        const at = g.int(valid.length - 1);
        if (valid[at] === '.') return bearer(`${valid}x`);
        const c = ALPHABET[(ALPHABET.indexOf(valid[at] as string) + 1 + g.int(60)) % 64] as string;
        return bearer(valid.slice(0, at) + c + valid.slice(at + 1));
      }
      case 1:
        return bearer(`${b64({ alg: g.pick(['none', 'None', 'NONE']), typ: 'JWT' })}.${p}.`);
      case 2: {
        const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
        const name = g.pick(['sub', 'aud', 'iss', 'exp']);
        const value = g.pick(
          ['root', 'admin', AUD, ISS, 9_999_999_999, null].filter((v) => v !== claims[name]),
        );
        claims[name] = value; // always a different value: the signature no longer covers these claims
        return bearer(`${h}.${b64(claims)}.${sig}`);
      }
      case 3: {
        // The RSA public key as an HMAC secret (algorithm confusion).
        const head = b64({ alg: 'HS256', kid: 'k1' });
        const mac = createHmac('sha256', pem).update(`${head}.${p}`).digest('base64url');
        return bearer(`${head}.${p}.${mac}`);
      }
      case 4:
        return bearer(g.pick(refused));
      case 5:
        return bearer(valid.slice(0, g.int(valid.length - 1)));
      case 6:
        return {
          authorization: g.pick([`Basic ${valid}`, `Bearer ${valid} ${valid}`, `Bearer\t${valid}`, 'Bearer']),
        };
      case 7:
        return { 'x-api-key': API_KEY.slice(0, g.int(API_KEY.length)) + g.pick(['', 'x', ' ', '\u00e9']) };
      default:
        return { ...bearer(valid), 'x-api-key': API_KEY }; // two credentials: ambiguous, refused
    }
  }

  const TAMPERED = Math.ceil(COUNT / 4);

  it(`${TAMPERED} tampered credentials (seed ${SEED}): none acts as anyone`, async () => {
    const g = seeded(SEED);
    const accepted: string[] = [];
    const statuses = new Map<number, number>();
    for (let n = 0; n < TAMPERED; n++) {
      const headers = tampered(g);
      const r = await raw(url, { method: 'POST', path: '/api/items/whoami', headers, body: undefined });
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      if (r.status === 200) accepted.push(`#${n} ${JSON.stringify(headers)} → ${r.body.slice(0, 200)}`);
      else {
        assert.equal(r.status, 401, `#${n} ${JSON.stringify(headers)}: ${r.body}`);
        assert.equal(problemOf(r).code, 'UNAUTHENTICATED');
      }
    }
    assert.deepEqual(accepted, [], `seed ${SEED}`);
    assert.equal(statuses.get(401), TAMPERED, JSON.stringify([...statuses]));
    // The untouched credentials do work: the refusals above are the tampering's doing.
    const good: Record<string, string>[] = [{ authorization: `Bearer ${valid}` }, { 'x-api-key': API_KEY }];
    for (const headers of good) {
      const r = await raw(url, { method: 'POST', path: '/api/items/whoami', headers });
      assert.equal(r.status, 200, r.body);
      assert.ok((JSON.parse(r.body) as { principal: unknown }).principal !== null);
    }
  });
});
