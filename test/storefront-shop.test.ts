/**
 * The storefront against the real shop, as a customer uses it: `parley dev examples/shop` (seven
 * processes: the six services and the gateway), headless Chromium on the gateway's page. An order
 * is placed, and its status reaches CONFIRMED live, pushed by the notifications service through the
 * gateway's /events; a declined card ends CANCELLED and a sold-out product REJECTED, each with
 * the reason. A screenshot
 * is kept as a test artifact (`test/.tmp/storefront-shop.png`).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { DECLINED_CARD, GOOD_CARD } from '../examples/shop/contracts.ts';
import { type Dev, runDev } from '../src/index.ts';
import { withBrowser } from './browser.ts';
import { tempDir, waitFor } from './helpers.ts';

describe('the storefront on the real shop', { timeout: 120_000 }, () => {
  const dir = tempDir('storefront-shop');
  let dev: Dev | undefined;
  let base: string | undefined;
  after(async () => {
    await dev?.stop();
  });

  it('places orders in the browser and sees them go PENDING → CONFIRMED, CANCELLED (card declined) and REJECTED (out of stock) live', async (t) => {
    const lines: string[] = [];
    dev = await runDev({
      appDir: 'examples/shop',
      port: 0,
      dataDir: dir.file('data'),
      print: (line) => void lines.push(line),
      env: { PARLEY_LOG_LEVEL: 'info', PARLEY_GATEWAY_PORT: '0' },
    });
    await waitFor(
      () => {
        base = lines.map((l) => /storefront at (http:\/\/127\.0\.0\.1:\d+)\//.exec(l)?.[1]).find(Boolean);
        return base !== undefined;
      },
      60_000,
      'the gateway to print its URL',
    );
    // The gateway is up before every service is: wait until it says every service it fronts has
    // an instance (catalog and orders).
    let ready: Response | undefined;
    for (let i = 0; i < 600 && ready?.status !== 200; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 100));
      ready = await fetch(`${base}/readyz`).catch(() => undefined);
    }
    assert.equal(ready?.status, 200, await ready?.text());

    await withBrowser(t, async (browser) => {
      const page = await browser.newPage();
      const pageErrors: string[] = [];
      page.on('pageerror', (error) => void pageErrors.push(String(error)));
      page.setDefaultTimeout(20_000);
      await page.goto(`${base}/`);
      await page.locator('#products li[data-sku="mouse"]').waitFor();

      await page.click('#products li[data-sku="mouse"] button.add');
      await page.click('#products li[data-sku="keyboard"] button.add');
      await page.fill('#customer', 'ann');
      await page.fill('#card', GOOD_CARD);
      await page.click('#place');
      const first = page.locator('#orders li[data-order-id]').first();
      await first.waitFor();
      const id = await first.getAttribute('data-order-id');
      assert.ok(id);
      await page
        .locator(`#orders li[data-order-id="${id}"] .status`, { hasText: /CONFIRMED|SHIPPED/ })
        .waitFor();

      await page.click('#products li[data-sku="mouse"] button.add');
      await page.fill('#card', DECLINED_CARD);
      await page.click('#place');
      // A declined card: stock was reserved, the payment failed, the order is CANCELLED and says why.
      await page.locator('#orders li .status', { hasText: 'CANCELLED' }).waitFor();
      const cancelled = page.locator('#orders li', {
        has: page.locator('.status', { hasText: 'CANCELLED' }),
      });
      assert.match(String(await cancelled.locator('.detail').textContent()), /Reason: .*declined/i);

      // Out of stock: the poster is sold out, so the order is REJECTED with the reason.
      await page.click('#products li[data-sku="poster"] button.add');
      await page.fill('#card', GOOD_CARD);
      await page.click('#place');
      const rejected = page.locator('#orders li', { has: page.locator('.status', { hasText: 'REJECTED' }) });
      await rejected.waitFor();
      assert.match(String(await rejected.locator('.detail').textContent()), /Reason: .*out of stock/i);

      mkdirSync('test/.tmp', { recursive: true });
      await page.screenshot({ path: 'test/.tmp/storefront-shop.png', fullPage: true });
      assert.deepEqual(pageErrors, []);
    });
  });

  it('places one order per Idempotency-Key, however often and however concurrently it is sent', async () => {
    assert.ok(base, 'the shop is running (the test before started it)');
    const place = async (key: string) => {
      const r = await fetch(`${base}/api/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: JSON.stringify({ customer: 'bob', card: GOOD_CARD, lines: [{ sku: 'mouse', quantity: 1 }] }),
      });
      assert.equal(r.status, 200, await r.clone().text());
      return ((await r.json()) as { id: string }).id;
    };
    const key = randomUUID();
    const [a, b] = await Promise.all([place(key), place(key)]);
    const c = await place(key);
    assert.equal(a, b);
    assert.equal(a, c);
    assert.notEqual(await place(randomUUID()), a);
  });
});
