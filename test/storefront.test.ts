/**
 * The storefront page in headless Chromium, against a small server: the page's three files from
 * `registerStorefront`, stub `/api/products` and `/api/orders`, and the real push path (`/events`
 * fed by a real `notify` on a Parley node). The page lists products, places an order, and shows its
 * status move PENDING → CONFIRMED (and REJECTED with the reason) live; it reconnects by itself and
 * resumes; a refused order shows the problem's `detail`.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { notifications } from '../examples/shop/contracts.ts';
import { registerStorefront } from '../src/gateway/push/storefront.ts';
import { withBrowser } from './browser.ts';
import { waitFor } from './helpers.ts';
import { ORDER_STATUS, startPush } from './push-fixture.ts';

const PRODUCTS = [
  { sku: 'keyboard', name: 'Keyboard', price: 4999 },
  { sku: 'mouse', name: 'Mouse', price: 1999 },
  { sku: 'poster', name: 'Poster', price: 999 },
];

interface StubOrder {
  id: string;
  customer: string;
  status: string;
  total: number;
  reason: string | null;
}

/** The REST routes the gateway core will serve, as stubs: orders are kept in a map. */
function stubShop(app: FastifyInstance, orders: Map<string, StubOrder>, lastEventIds: string[]): void {
  registerStorefront(app, { root: 'examples/shop/web' });
  app.addHook('onRequest', async (request) => {
    if (request.url.startsWith('/events')) lastEventIds.push(String(request.headers['last-event-id'] ?? ''));
  });
  app.get('/api/products', async () => ({ products: PRODUCTS }));
  app.post('/api/orders', async (request, reply) => {
    const body = request.body as {
      customer: string;
      card: string;
      lines: { sku: string; quantity: number }[];
    };
    if (body.lines.some((l) => l.sku === 'poster')) {
      return reply.code(409).type('application/problem+json').send({
        type: 'about:blank',
        title: 'Conflict',
        status: 409,
        detail: 'Posters are sold out.',
        code: 'FAILED_PRECONDITION',
      });
    }
    const total = body.lines.reduce(
      (sum, l) => sum + (PRODUCTS.find((p) => p.sku === l.sku)?.price ?? 0) * l.quantity,
      0,
    );
    const order = {
      id: `order-${orders.size + 1}`,
      customer: body.customer,
      status: 'PENDING',
      total,
      reason: null,
    };
    orders.set(order.id, order);
    return order;
  });
  app.get('/api/orders/:id', async (request, reply) => {
    const order = orders.get((request.params as { id: string }).id);
    return (
      order ??
      reply.code(404).type('application/problem+json').send({ title: 'Not Found', detail: 'no order' })
    );
  });
}

describe('the storefront page', { timeout: 90_000 }, () => {
  it('lists products, places an order, and shows its status change live through /events', async (t) => {
    const orders = new Map<string, StubOrder>();
    const lastEventIds: string[] = [];
    const f = await startPush(t, { allowAnonymousAudience: true, retryMs: 200 }, (app) =>
      stubShop(app, orders, lastEventIds),
    );
    /** A status step as the notifications service sends it: a real notify, through the node. */
    const push = async (
      id: string,
      status: 'PENDING' | 'CONFIRMED' | 'REJECTED' | 'SHIPPED',
      reason: string | null = null,
    ) => {
      const order = orders.get(id) as StubOrder;
      order.status = status;
      order.reason = reason;
      await f.sender.notify(notifications, ORDER_STATUS, {
        customer: order.customer,
        orderId: id,
        status,
        text: `${id} is ${status}`,
        reason,
        at: Date.now(),
      });
    };
    await withBrowser(t, async (browser) => {
      const page = await browser.newPage();
      const pageErrors: string[] = [];
      page.on('pageerror', (error) => void pageErrors.push(String(error)));
      page.setDefaultTimeout(10_000);
      await page.goto(`${f.base}/`);

      const products = page.locator('#products li[data-sku]');
      await products.first().waitFor();
      assert.deepEqual(await products.locator('.name').allTextContents(), ['Keyboard', 'Mouse', 'Poster']);
      assert.deepEqual(await products.locator('.price').allTextContents(), ['€49.99', '€19.99', '€9.99']);

      await page.click('#products li[data-sku="keyboard"] button.add');
      await page.click('#products li[data-sku="keyboard"] button.add');
      await page.click('#products li[data-sku="mouse"] button.add');
      assert.equal(await page.textContent('#cart-total'), '€119.97');
      await page.fill('#customer', 'alice');
      await page.fill('#card', '4242 4242 4242 4242');
      await page.click('#place');

      const status = (id: string) => page.locator(`#orders li[data-order-id="${id}"] .status`);
      await status('order-1').waitFor();
      assert.equal(await status('order-1').textContent(), 'PENDING');
      assert.deepEqual(orders.get('order-1')?.total, 11_997);
      assert.equal(await page.textContent('#cart-total'), '€0.00', 'the cart is emptied');
      await page.locator('#live', { hasText: 'live' }).waitFor();
      await waitFor(() => f.push.stats().sse === 1, 5000, 'the page’s EventSource');

      await push('order-1', 'PENDING');
      await push('order-1', 'CONFIRMED');
      await page.locator('#orders li[data-order-id="order-1"] .status', { hasText: 'CONFIRMED' }).waitFor();

      // A second order is turned down: the reason shows.
      await page.click('#products li[data-sku="mouse"] button.add');
      await page.click('#place');
      await status('order-2').waitFor();
      await push('order-2', 'REJECTED', 'out of stock: mouse');
      await page.locator('#orders li[data-order-id="order-2"] .status', { hasText: 'REJECTED' }).waitFor();
      assert.equal(
        await page.textContent('#orders li[data-order-id="order-2"] .detail'),
        'Reason: out of stock: mouse',
      );

      // The connection drops: the page reconnects by itself with Last-Event-ID and gets what it missed.
      f.app.server.closeAllConnections();
      await push('order-1', 'SHIPPED');
      await page.locator('#orders li[data-order-id="order-1"] .status', { hasText: 'SHIPPED' }).waitFor();
      assert.ok(
        lastEventIds.slice(1).some((id) => id !== ''),
        `the reconnect resumed from an id: ${JSON.stringify(lastEventIds)}`,
      );

      // A refused order shows the problem's detail.
      await page.click('#products li[data-sku="poster"] button.add');
      await page.click('#place');
      await page.locator('#error', { hasText: 'Posters are sold out.' }).waitFor();

      mkdirSync('test/.tmp', { recursive: true });
      await page.screenshot({ path: 'test/.tmp/storefront.png', fullPage: true });
      assert.deepEqual(await page.locator('#orders li .status').allTextContents(), ['REJECTED', 'SHIPPED']);
      assert.deepEqual(pageErrors, []);
    });
  });

  it('a change of name while the last customer’s orders are being fetched lists none of them under the new name', async (t) => {
    const Fastify = (await import('fastify')).default;
    const app = Fastify({ logger: false });
    t.after(() => app.close());
    registerStorefront(app, { root: 'examples/shop/web' });
    app.get('/api/products', async () => ({ products: PRODUCTS }));
    // Alice's order is answered only when the test says so, after the name has changed.
    let release: () => void = () => undefined;
    const held = new Promise<void>((r) => (release = r));
    let answered = 0;
    app.get('/api/orders/:id', async (request) => {
      await held;
      answered++;
      const id = (request.params as { id: string }).id;
      return { id, customer: 'alice', status: 'CONFIRMED', total: 1999, reason: null };
    });
    app.get('/events', (_request, reply) => {
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream' });
      reply.raw.write('retry: 1000\n\n');
      t.after(() => reply.raw.destroy());
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    await withBrowser(t, async (browser) => {
      const page = await browser.newPage();
      page.setDefaultTimeout(10_000);
      await page.goto(`${base}/`);
      await page.evaluate(`localStorage.setItem('parley-shop-orders:alice', '["order-alice-0001"]')`);
      await page.fill('#customer', 'alice');
      await page.dispatchEvent('#customer', 'change');
      await page.locator('#orders li[data-order-id="order-alice-0001"]').waitFor();
      await page.fill('#customer', 'bob');
      await page.dispatchEvent('#customer', 'change');
      assert.equal(await page.locator('#orders li').count(), 0);
      release();
      await waitFor(() => answered > 0, 5000, "alice's order answered");
      // Until 2026-12-03 the answer landed in bob's list as soon as it arrived.
      await page.waitForTimeout(300);
      assert.equal(await page.locator('#orders li').count(), 0, "bob's list stays empty");
      await page.close();
    });
  });

  it('serves exactly its three files; nothing else in the folder, no path from the URL', async (t) => {
    const f = await startPush(t, {}, (app) => registerStorefront(app, { root: 'examples/shop/web' }));
    const index = await fetch(`${f.base}/`);
    assert.equal(index.status, 200);
    assert.match(index.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(index.headers.get('content-security-policy') ?? '', /default-src 'self'/);
    assert.match(await index.text(), /<script src="\/app.js" defer><\/script>/);
    assert.match((await fetch(`${f.base}/app.js`)).headers.get('content-type') ?? '', /^text\/javascript/);
    assert.match((await fetch(`${f.base}/style.css`)).headers.get('content-type') ?? '', /^text\/css/);
    for (const path of [
      '/index.html',
      '/../contracts.ts',
      '/%2e%2e/contracts.ts',
      '/..%2fcontracts.ts',
      '/web/app.js',
      '/app.js%00',
    ]) {
      assert.equal((await fetch(`${f.base}${path}`)).status, 404, path);
    }
  });
});
