/**
 * The push routes (`/events`, `/ws`) against generated requests: event types known, unknown,
 * not allowed, repeated, empty, overlong or encoded; `?customer=` and `Last-Event-ID` (header
 * and query) of every sort; tokens of other viewers and none. Every answer is an open stream
 * (`text/event-stream`) or a problem+json whose `status` is the answer's, never a 5xx. Afterwards
 * no dropped stream is left open, and a viewer still gets its own events and nobody else's.
 * `PARLEY_FUZZ_SEED` and `PARLEY_FUZZ_COUNT` explore further.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { describe, it } from 'node:test';
import { mutate, seeded, waitFor } from './helpers.ts';
import { openSse } from './push-clients.ts';
import { auth, ORDER_STATUS, startPush } from './push-fixture.ts';

const SEED = Number(process.env.PARLEY_FUZZ_SEED ?? 20261130);
const COUNT = Number(process.env.PARLEY_FUZZ_COUNT ?? 300);

const TYPES = [ORDER_STATUS, 'catalog.price-changed', 'order.placed', 'orders.secret', '', ' ', '__proto__'];
const ODD = ['', '%00', '%zz', '..', 'x'.repeat(300), '%E2%80%AE', '[]', '{}', '-1', '1e309', 'a,b'];

/** The status line, the headers and up to 2 KiB of what follows; the request is then dropped. */
function head(
  url: string,
  headers: Record<string, string>,
): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, timeout: 5000 }, (res) => {
      let body = '';
      const done = () => {
        req.destroy();
        resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body });
      };
      res.setEncoding('utf8');
      // A stream says something at once (its `retry:` line); a refusal ends.
      res.on('data', (chunk: string) => {
        body += chunk;
        if (res.statusCode === 200 || body.length > 2048) done();
      });
      res.on('end', done);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer: ${url}`)));
    req.on('error', reject);
    req.end();
  });
}

describe('push fuzz', { timeout: 60_000 }, () => {
  it(`${COUNT} generated subscriptions (seed ${SEED}): a stream or a problem, never a 5xx; viewers still get only theirs`, async (t) => {
    const f = await startPush(t, { allowAnonymousAudience: true });
    const prototypeKeys = Object.getOwnPropertyNames(Object.prototype).sort();
    const g = seeded(SEED);
    const failures: string[] = [];
    const statuses = new Map<number, number>();
    for (let n = 0; n < COUNT; n++) {
      // Half ask for types every viewer may have, so that streams open too; half for anything.
      const good = g.chance(0.5);
      const types = Array.from({ length: 1 + g.int(3) }, () => {
        if (good) return g.pick([ORDER_STATUS, 'catalog.price-changed']);
        return g.chance(0.85) ? g.pick(TYPES) : encodeURIComponent(JSON.stringify(mutate(g, 'x')) ?? '');
      });
      const query: string[] = [];
      if (g.chance(0.9)) query.push(`types=${types.join(g.pick([',', '%2C', ', ']))}`);
      if (g.chance(0.2)) query.push(`types=${g.pick(TYPES)}`); // repeated
      if (g.chance(0.3)) query.push(`customer=${g.pick(['alice', 'bob', ...ODD])}`);
      if (g.chance(0.2)) query.push(`lastEventId=${g.pick(ODD)}`);
      const headers: Record<string, string> = {};
      if (g.chance(0.6)) Object.assign(headers, auth(g.pick(['alice', 'bob', 'staff', 'nobody', 'x y'])));
      if (g.chance(0.2)) headers['last-event-id'] = g.pick(['1', 'abc', '9'.repeat(200), 'ORDER-1-2']);
      if (g.chance(0.1)) headers.accept = g.pick(['text/html', '*/*', 'application/json']);
      const path = `${g.pick(['/events', '/ws'])}?${query.join('&')}`;
      const r = await head(`${f.base}${path}`, headers).catch((e: Error) => ({
        status: 0,
        type: '',
        body: e.message,
      }));
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      const what = `#${n} ${path.slice(0, 160)} ${JSON.stringify(headers).slice(0, 120)} → ${r.status} ${r.body.slice(0, 160)}`;
      if (r.status === 200) {
        if (!r.type.startsWith('text/event-stream')) failures.push(`${what}: a 200 that is no stream`);
        continue;
      }
      if (r.status < 400 || r.status >= 500) {
        failures.push(`${what}: status`);
        continue;
      }
      try {
        const problem = JSON.parse(r.body) as { status?: unknown };
        if (!r.type.startsWith('application/problem+json') || problem.status !== r.status)
          failures.push(`${what}: not a problem of its status`);
      } catch {
        failures.push(`${what}: a body that is not JSON`);
      }
    }
    t.diagnostic(`statuses: ${JSON.stringify([...statuses].sort((a, b) => a[0] - b[0]))}`);
    assert.deepEqual(failures, [], `seed ${SEED}`);
    assert.ok((statuses.get(200) ?? 0) > COUNT / 20, 'the generator opens streams too');
    // Nothing the requests carried (a `__proto__` type, odd values) reached Object.prototype.
    assert.equal(Object.hasOwn(Object.prototype, '__proto__x'), false);
    assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeKeys);
    // Every stream the generator dropped is let go: none is left counted against the limits.
    await waitFor(() => f.push.stats().connections === 0, 5000, 'the dropped streams to close');
    // Push still works, for the right viewer only.
    const alice = await openSse(`${f.base}/events?types=${ORDER_STATUS}`, auth('alice'));
    t.after(() => alice.close());
    assert.equal(alice.status, 200);
    await f.status('bob', 'b-after');
    await f.status('alice', 'a-after');
    const [event] = await alice.waitForEvents(1);
    assert.equal((JSON.parse(event?.data ?? '{}') as { orderId: string }).orderId, 'a-after');
    assert.equal(f.logs.filter((l) => /failed/.test(l)).length, 0, f.logs.join('\n'));
  });
});
