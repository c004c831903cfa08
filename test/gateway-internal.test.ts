/**
 * The internal `/rpc` endpoint (service tokens, every action) and multipart uploads streamed to
 * an input-stream action, with a size limit that cancels the call.
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import { registerInternal } from '../src/gateway/internal.ts';
import type { Invoker } from '../src/gateway/invoke.ts';
import { toProblem } from '../src/gateway/problem.ts';
import { createMemoryStore, createRateLimiter, gatewayRateLimit, metrics } from '../src/index.ts';
import { items, problemOf, raw, startGateway } from './gateway-fixture.ts';
import { waitFor } from './helpers.ts';

const TOKEN = 'svc-token-0123456789abcdef';

describe('gateway internal endpoint', async () => {
  const { url } = await startGateway({ internal: { tokens: ['other-token', TOKEN] } });
  const rpc = (target: string, body: unknown, token?: string) =>
    raw(url, {
      method: 'POST',
      path: `/rpc/${target}`,
      headers: {
        'content-type': 'application/json',
        ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      },
      body: JSON.stringify(body),
    });

  it('answers 401 without a token or with a wrong one', async () => {
    for (const token of [undefined, 'nope', `${TOKEN}x`, TOKEN.slice(0, -1), '']) {
      const r = await rpc('items.secret', { x: 2 }, token);
      assert.equal(r.status, 401, String(token));
      assert.equal(problemOf(r).code, 'UNAUTHENTICATED');
      assert.match(String(r.headers['www-authenticate']), /^Bearer/);
    }
    const basic = await raw(url, {
      method: 'POST',
      path: '/rpc/items.secret',
      headers: { 'content-type': 'application/json', authorization: `Basic ${TOKEN}` },
      body: '{"x":2}',
    });
    assert.equal(basic.status, 401);
  });

  it('calls any action, public or not, with a right token; non-public ones only here', async () => {
    const r = await rpc('items.secret', { x: 21 }, TOKEN);
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.body), { doubled: 42 });
    const pub = await rpc('items.create', { name: 'a', price: 1 }, TOKEN);
    assert.equal(pub.status, 200);
    const who = JSON.parse((await rpc('items.whoami', {}, TOKEN)).body) as { principal: { kind: string } };
    assert.equal(who.principal.kind, 'service');
    const invalid = await rpc('items.secret', { x: 'two' }, TOKEN);
    assert.equal(invalid.status, 400);
    assert.deepEqual(
      (problemOf(invalid).errors as { path: string }[]).map((e) => e.path),
      ['x'],
    );
    for (const target of [
      'items.nothing',
      'nothing.secret',
      'items',
      'items.constructor',
      'items.__proto__',
    ]) {
      const r404 = await rpc(target, {}, TOKEN);
      assert.equal(r404.status, 404, target);
    }
    const stream = await rpc('items.count', { to: 2 }, TOKEN);
    assert.equal(stream.headers['content-type'], 'application/x-ndjson');
    assert.equal(stream.body, '{"n":0}\n{"n":1}\n');
  });

  it('validates a JSON null as sent: refused where the input is an object or a list of chunks', async () => {
    for (const target of ['items.whoami', 'items.upload']) {
      const r = await raw(url, {
        method: 'POST',
        path: `/rpc/${target}`,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
        body: 'null',
      });
      assert.equal(r.status, 400, `${target}: ${r.body}`);
      assert.equal(problemOf(r).code, 'INVALID_ARGUMENT');
    }
    // No body at all is still no input.
    const none = await raw(url, {
      method: 'POST',
      path: '/rpc/items.whoami',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(none.status, 200, none.body);
  });

  it('refuses a multipart form with 415 instead of dropping it unread', async () => {
    // The gateway reads forms on upload routes only; this gateway has one, so it knows the type.
    const form = await raw(url, {
      method: 'POST',
      path: '/rpc/items.upload',
      headers: {
        'content-type': 'multipart/form-data; boundary=b',
        authorization: `Bearer ${TOKEN}`,
      },
      body: '--b\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\nhello\r\n--b--\r\n',
    });
    assert.equal(form.status, 415, form.body);
    assert.equal(problemOf(form).code, 'INVALID_ARGUMENT');
  });

  it('takes the Bearer scheme in any case, as public routes do', async () => {
    for (const scheme of ['bearer', 'BEARER', 'Bearer  ']) {
      const r = await raw(url, {
        method: 'POST',
        path: '/rpc/items.secret',
        headers: { 'content-type': 'application/json', authorization: `${scheme} ${TOKEN}` },
        body: '{"x":1}',
      });
      assert.equal(r.status, 200, scheme);
    }
  });

  it('is off when no tokens are configured', async () => {
    const { url: plain } = await startGateway();
    const r = await raw(plain, {
      method: 'POST',
      path: '/rpc/items.secret',
      headers: { 'content-type': 'application/json', authorization: 'Bearer ' },
      body: '{"x":1}',
    });
    assert.equal(r.status, 404);
  });
});

describe('gateway internal endpoint and the rate limit', () => {
  it('refused tokens spend from the client’s bucket, whatever the target; held ones do not', async () => {
    const fastify = Fastify();
    fastify.setErrorHandler((error, request, reply) => {
      const problem = toProblem({ error, instance: request.url, requestId: request.id });
      return reply.code(problem.status).send(problem);
    });
    const { rateLimit } = gatewayRateLimit({
      limiter: createRateLimiter({
        store: createMemoryStore(),
        policy: { name: 'api', capacity: 3, refillPerSecond: 0.001 },
      }),
    });
    registerInternal({
      fastify,
      contracts: [items],
      tokens: [TOKEN],
      // Never reached: the calls below are refused, or name no action.
      invoker: {} as Invoker,
      bodyLimit: 1024,
      rateLimit,
    });
    const rpc = (target: string, authorization: string) =>
      fastify.inject({
        method: 'POST',
        url: `/rpc/${target}`,
        headers: { 'content-type': 'application/json', authorization },
        payload: '{}',
      });
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await rpc(`items.a${i}`, `Bearer guess-${i}`)).statusCode);
    assert.deepEqual(statuses, [401, 401, 401, 429, 429, 429]);
    assert.ok((await rpc('items.secret', 'Bearer guess')).headers['retry-after'] !== undefined);
    // A caller holding a token is not limited: it gets past the guard, to the action lookup.
    assert.equal((await rpc('items.nothing', `Bearer ${TOKEN}`)).statusCode, 404);
    await fastify.close();
  });
});

const boundary = 'parley-test-boundary';
const head = (filename: string) =>
  `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\n` +
  'Content-Type: application/octet-stream\r\n\r\n';
const tail = `\r\n--${boundary}--\r\n`;

/** Sends `pieces` one by one; `between` runs after each piece is written (before the next). */
function upload(
  base: string,
  pieces: Buffer[],
  options: { between?: (i: number) => Promise<void>; contentLength?: number } = {},
): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: hostname,
        port,
        method: 'POST',
        path: '/api/uploads',
        headers: {
          'content-type': `multipart/form-data; boundary=${boundary}`,
          ...(options.contentLength === undefined ? {} : { 'content-length': String(options.contentLength) }),
        },
        timeout: 10_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('upload timed out')));
    req.on('error', (e) =>
      req.destroyed && (e as { code?: string }).code === 'EPIPE' ? undefined : reject(e),
    );
    void (async () => {
      for (const [i, piece] of pieces.entries()) {
        if (req.destroyed) return;
        req.write(piece);
        await options.between?.(i);
      }
      req.end();
    })().catch(reject);
  });
}

/*
 * In process the handler gets each piece as the gateway reads it. Over a transport the runtime
 * sends an input stream in pages (up to 64 chunks or half the frame limit, 512 KiB here), so the
 * first page leaves once that much has arrived: the test sends more than a page before waiting.
 */
for (const where of ['in process', 'over the memory transport'] as const) {
  describe(`gateway multipart uploads, ${where}`, async () => {
    const { url, seen } = await startGateway({}, { inProcess: where === 'in process' });
    const piece = (fill: string) => Buffer.alloc(where === 'in process' ? 100 * 1024 : 400 * 1024, fill);

    it('streams a file to the action chunk by chunk while it is still being sent', async () => {
      const pieces = [Buffer.from(head('notes.bin')), piece('a'), piece('b'), piece('c'), Buffer.from(tail)];
      const size = pieces[1]?.length ?? 0;
      let sentWhenFirstArrived = -1;
      const r = await upload(url, pieces, {
        between: async (i) => {
          if (i !== 2) return;
          // The service has bytes before the last piece is sent: nothing waits for the whole file.
          await waitFor(() => seen.uploadChunks.length > 0, 5000, 'the first chunk at the service');
          sentWhenFirstArrived = 2 * size;
        },
      });
      assert.equal(r.status, 200, r.body);
      assert.equal(sentWhenFirstArrived, 2 * size);
      const out = JSON.parse(r.body) as { bytes: number; chunks: number; filename: string; sample: string };
      assert.equal(out.bytes, 3 * size);
      assert.equal(out.filename, 'notes.bin');
      assert.equal(out.sample, 'a'.repeat(16));
      assert.ok(out.chunks >= 3, `${out.chunks} chunks`);
      assert.equal(
        seen.uploadChunks.reduce((a, b) => a + b, 0),
        3 * size,
      );
    });
  });
}

describe('gateway internal tokens and the rate limit, through createGateway', async () => {
  const { url } = await startGateway({
    internal: { tokens: [TOKEN] },
    metrics: metrics(),
    ...gatewayRateLimit({
      limiter: createRateLimiter({
        store: createMemoryStore(),
        policy: { name: 'api', capacity: 3, refillPerSecond: 0.001 },
      }),
    }),
  });

  it('refused tokens on /rpc and /metrics spend from one bucket of the client; a held token spends nothing', async () => {
    const guess = (path: string, token: string) =>
      raw(url, {
        method: path === '/metrics' ? 'GET' : 'POST',
        path,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        ...(path === '/metrics' ? {} : { body: '{}' }),
      });
    const statuses: number[] = [];
    for (const path of ['/rpc/items.secret', '/metrics', '/rpc/items.get', '/metrics']) {
      statuses.push((await guess(path, 'wrong')).status);
    }
    assert.deepEqual(statuses, [401, 401, 401, 429]);
    // The bucket is empty, and the token holder is not held to it.
    assert.equal((await guess('/metrics', TOKEN)).status, 200);
    const held = await raw(url, {
      method: 'POST',
      path: '/rpc/items.secret',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
      body: '{"x":2}',
    });
    assert.equal(held.status, 200, held.body);
  });
});

describe('gateway multipart limits', async () => {
  const limit = 256 * 1024;
  const { url, seen } = await startGateway({ uploadLimit: limit }, { inProcess: true });

  it('answers 413 past the limit and cancels the service call', async () => {
    const abortedBefore = seen.uploadsAborted;
    const piece = Buffer.alloc(64 * 1024, 'z');
    const pieces = [
      Buffer.from(head('big.bin')),
      ...Array.from({ length: 8 }, () => piece),
      Buffer.from(tail),
    ];
    const r = await upload(url, pieces);
    assert.equal(r.status, 413, r.body);
    assert.equal(JSON.parse(r.body).code, 'RESOURCE_EXHAUSTED');
    await waitFor(() => seen.uploadsAborted > abortedBefore, 5000, 'the handler to see its call cancelled');
    assert.ok(
      seen.uploadChunks.reduce((a, b) => a + b, 0) <= limit,
      'no more than the limit reached the service',
    );
    // A declared length over the limit is refused before any of it is read.
    const declared = await upload(url, [Buffer.from(head('big.bin'))], { contentLength: 50 * 1024 * 1024 });
    assert.equal(declared.status, 413);
  });

  it('refuses a JSON body on the upload route (415) and a form without a file (400)', async () => {
    const json = await raw(url, {
      method: 'POST',
      path: '/api/uploads',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(json.status, 415);
    const empty = await upload(url, [
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="x"\r\n\r\n1${tail}`),
    ]);
    assert.equal(empty.status, 400);
  });

  it('answers a malformed form 400 with the parser’s reason, before and after the file began', async () => {
    const cases: [string, string, RegExp][] = [
      ['multipart/form-data', '{"name":"pen"}', /Boundary not found/],
      [`multipart/form-data; boundary=${boundary}`, '{"name":"pen"}', /Unexpected end/],
      // The service has begun reading the file when the form breaks off.
      [`multipart/form-data; boundary=${boundary}`, `${head('cut.bin')}abc`, /terminated early/],
    ];
    for (const [type, body, reason] of cases) {
      const r = await raw(url, {
        method: 'POST',
        path: '/api/uploads',
        headers: { 'content-type': type },
        body,
      });
      assert.equal(r.status, 400, `${type} ${body}: ${r.body}`);
      const problem = problemOf(r);
      assert.equal(problem.code, 'INVALID_ARGUMENT');
      assert.match(String(problem.detail), /^The multipart body is malformed: /);
      assert.match(String(problem.detail), reason);
    }
    const ok = await upload(url, [Buffer.from(`${head('fine.txt')}fine${tail}`)]);
    assert.equal(ok.status, 200, 'the upload route still works');
  });
});
