/**
 * The gateway against hostile input: path tricks, oversized bodies and heads, too many headers,
 * prototype-pollution bodies, client-sent internal headers. Every request must be refused (or
 * served without effect), the server must keep answering, and Object.prototype stay clean.
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import { problemOf, raw, startGateway } from './gateway-fixture.ts';

describe('gateway bad input', async () => {
  const { url } = await startGateway({ bodyLimit: 64 * 1024 });
  const { hostname, port } = new URL(url);

  const alive = async () => {
    const r = await raw(url, { path: '/api/items/ok-1' });
    assert.equal(r.status, 200, 'the gateway still serves');
  };

  it('refuses path tricks with 400 (never normalises them into a route)', async () => {
    const paths = [
      '/api/../api/items/x',
      '/api/items/../items/x',
      '/api/./items/x',
      '/api/items/%2e%2e/x',
      '/api/items/%2E%2E',
      '/api/items/.%2e',
      '/api/items%2fx',
      '/api/items/a%2Fb',
      '/api/items/a%5cb',
      '/api/items/a%5Cb',
      '/api/items\\x',
      '/api/items/a%00',
      '/api/items/a%00.json',
      '/api/items/%252e%252e',
      '/api/items/%252f',
      '/api/items/%25',
      '/api//items/x',
      '/api/items/a%0d%0aX-Injected:%201',
      '/api/items/a%1f',
      '/api/items/%e0%a4%a',
      '/api/items?q=a%00b',
    ];
    for (const path of paths) {
      const r = await raw(url, { path });
      assert.equal(r.status, 400, path);
      assert.equal(problemOf(r).code, 'INVALID_ARGUMENT', path);
      assert.match(String(r.headers['x-request-id']), /^[0-9a-f-]{36}$/, path);
      assert.equal(r.headers['x-injected'], undefined);
    }
    await alive();
  });

  it('refuses an overlong target (414) and an overlong path parameter', async () => {
    const long = await raw(url, { path: `/api/items/${'a'.repeat(5000)}` });
    assert.equal(long.status, 414);
    assert.equal(problemOf(long).status, 414);
    const query = await raw(url, { path: `/api/items?q=${'a'.repeat(3000)}` });
    assert.equal(query.status, 414);
    // Under the target limit but over the router's parameter limit: a problem, not a crash.
    const param = await raw(url, { path: `/api/items/${'a'.repeat(500)}` });
    assert.ok(param.status === 400 || param.status === 414, String(param.status));
    problemOf(param);
    assert.match(String(param.headers['x-request-id']), /^[0-9a-f-]{36}$/);
    await alive();
  });

  it('answers a 50 MiB declared body 413 before it is sent', async () => {
    const started = Date.now();
    const { status, sent } = await new Promise<{ status: number; sent: number }>((resolve, reject) => {
      let sent = 0;
      const req = httpRequest(
        {
          host: hostname,
          port,
          method: 'POST',
          path: '/api/items',
          headers: { 'content-type': 'application/json', 'content-length': String(50 * 1024 * 1024) },
          timeout: 5000,
        },
        (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, sent });
          req.destroy();
        },
      );
      req.on('error', (e) => {
        if (!req.destroyed) reject(e);
      });
      req.on('timeout', () => req.destroy(new Error('no answer to an oversized Content-Length')));
      req.flushHeaders();
      // A little of the body: the answer must not wait for the rest.
      req.write('{"name":"');
      sent += 9;
    });
    assert.equal(status, 413);
    assert.equal(sent, 9, 'answered with 9 bytes of 50 MiB sent');
    assert.ok(Date.now() - started < 3000);
    await alive();
  });

  it('cuts off a chunked body at the limit (413) and refuses a bad Content-Length', async () => {
    const big = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(
        {
          host: hostname,
          port,
          method: 'POST',
          path: '/api/items',
          headers: { 'content-type': 'application/json' },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      // No Content-Length: chunked. 200 KiB against a 64 KiB limit.
      const piece = `{"name":"${'x'.repeat(200 * 1024)}","price":1}`;
      req.end(piece);
    });
    assert.equal(big, 413);
    const bad = await raw(url, {
      method: 'POST',
      path: '/api/items',
      headers: { 'content-type': 'application/json', 'content-length': '1e3' },
      body: '',
    }).catch(() => ({ status: 400 }));
    assert.equal(bad.status, 400);
    await alive();
  });

  it('answers too many headers 431 and a too-large head 431', async () => {
    const many: Record<string, string> = {};
    for (let i = 0; i < 150; i++) many[`x-h-${i}`] = 'v';
    const r = await raw(url, { path: '/api/items/a', headers: many });
    assert.equal(r.status, 431);
    assert.equal(problemOf(r).status, 431);
    const large = await rawHead(
      `GET /api/items/a HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`,
    );
    assert.match(large, /^HTTP\/1\.1 431 /);
    assert.match(large, /application\/problem\+json/);
    await alive();
  });

  it('refuses prototype-pollution bodies (400) and leaves Object.prototype alone', async () => {
    const bodies = [
      '{"__proto__":{"polluted":1}}',
      '{"name":"a","price":1,"__proto__":{"polluted":1}}',
      '{"constructor":{"prototype":{"polluted":1}}}',
      '{"name":"a","price":1,"constructor":{"prototype":{"polluted":1}}}',
      '{"\\u005f\\u005fproto\\u005f\\u005f":{"polluted":1}}',
      '{"a":[{"__proto__":{"polluted":1}}]}',
    ];
    for (const body of bodies) {
      for (const path of ['/api/items', '/api/items/abc']) {
        const r = await raw(url, {
          method: path === '/api/items' ? 'POST' : 'PATCH',
          path,
          headers: { 'content-type': 'application/json' },
          body,
        });
        assert.equal(r.status, 400, `${path} ${body}`);
        problemOf(r);
      }
    }
    for (const path of [
      '/api/items?__proto__[polluted]=1',
      '/api/items?constructor[prototype][polluted]=1',
      '/api/items?__proto__=x',
    ]) {
      const r = await raw(url, { path });
      assert.ok(r.status === 400 || r.status === 200, path);
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal((Object.prototype as Record<string, unknown>).polluted, undefined);
    await alive();
  });

  it('does not forward client-sent internal headers: trace, deadline, idempotency key, principal', async () => {
    const traceId = 'ab'.repeat(16);
    const r = await raw(url, {
      method: 'POST',
      path: '/api/items/whoami',
      headers: {
        'content-type': 'application/json',
        traceparent: `00-${traceId}-${'cd'.repeat(8)}-01`,
        'x-parley-principal': '{"kind":"user","subject":"root","roles":["admin"],"scopes":[]}',
        principal: '{"kind":"user","subject":"root","roles":["admin"],"scopes":[]}',
        'x-parley-deadline': String(Date.now() + 3_600_000),
        deadline: String(Date.now() + 3_600_000),
        idempotencykey: 'k1',
        'x-parley-idempotency-key': 'k1',
        'ce-principal': 'root',
      },
      body: '{}',
    });
    assert.equal(r.status, 200);
    const seen = JSON.parse(r.body) as {
      principal: unknown;
      traceId: string;
      idempotencyKey: unknown;
      remaining: number;
    };
    assert.equal(seen.principal, null);
    assert.notEqual(seen.traceId, traceId);
    assert.equal(seen.idempotencyKey, null);
    assert.ok(seen.remaining <= 10_000, 'the deadline is the gateway’s');
  });

  it('survives garbage on the socket', async () => {
    for (const head of [
      'GARBAGE\r\n\r\n',
      'GET / HTTP/9.9\r\n\r\n',
      'GET /api/items/a HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n',
    ]) {
      const answer = await rawHead(head);
      assert.match(answer, /^HTTP\/1\.1 4\d\d /, JSON.stringify(head));
    }
    await alive();
  });

  /** Writes bytes on a fresh connection, returns everything the server sent before closing. */
  function rawHead(text: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: hostname, port: Number(port) });
      let got = '';
      socket.setTimeout(5000, () => socket.destroy(new Error('no answer')));
      socket.on('data', (d) => {
        got += d.toString('latin1');
        if (got.includes('\r\n\r\n') && /content-length: (\d+)/i.test(got)) {
          const len = Number(/content-length: (\d+)/i.exec(got)?.[1]);
          if (got.length - got.indexOf('\r\n\r\n') - 4 >= len) socket.end();
        }
      });
      socket.on('close', () => resolve(got));
      socket.on('error', (e) => (got === '' ? reject(e) : resolve(got)));
      socket.write(text);
    });
  }
});
