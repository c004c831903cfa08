/**
 * Headless Chromium for page tests: Debian's /usr/bin/chromium driven by playwright-core (never
 * `playwright install`: the machine has no network for a browser download). Each run gets a fresh
 * profile in a temporary directory; the browser and the profile are always removed, whatever the
 * test does. Without Chromium the test is skipped with the reason, except under CI=true, where a
 * missing browser is a failure (the CI script must install it).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { type BrowserContext, chromium } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/**
 * Runs `fn` with a fresh browser context (Playwright passes the temporary profile as
 * `--user-data-dir`). Returns false when the test was skipped for want of Chromium.
 */
export async function withBrowser(
  t: TestContext,
  fn: (browser: BrowserContext) => Promise<void>,
): Promise<boolean> {
  if (!existsSync(CHROMIUM)) {
    const reason = `${CHROMIUM} is missing (apt-get install -y chromium)`;
    if (process.env.CI === 'true') throw new Error(`browser test cannot run under CI: ${reason}`);
    t.skip(reason);
    return false;
  }
  const profile = mkdtempSync(join(tmpdir(), 'parley-chromium-'));
  let browser: BrowserContext | undefined;
  try {
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ARGS,
      timeout: 30_000,
      viewport: { width: 1200, height: 800 },
    });
    await fn(browser);
    return true;
  } finally {
    await browser?.close().catch(() => undefined);
    rmSync(profile, { recursive: true, force: true });
  }
}
