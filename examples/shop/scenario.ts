/**
 * `npm run shop:scenario`: places one order of every outcome and prints where each ended and why.
 * Uses the shop running at PARLEY_TRANSPORT (default parley://127.0.0.1:7400, what `npm start`
 * runs); when none is there, starts its own in a temporary directory and stops it afterwards.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNode, createTcpTransport, type Dev, ParleyError, queryHub, runDev } from '../../src/index.ts';
import { DECLINED_CARD, GOOD_CARD, inventory, type Order, orders } from './contracts.ts';
import { SERVICES, waitForFinal, waitForShop } from './shop-client.ts';

const euros = (cents: number) => `€${(cents / 100).toFixed(2)}`;
let hubUrl = process.env.PARLEY_TRANSPORT ?? 'parley://127.0.0.1:7400';
let dev: Dev | undefined;
let tmp: string | undefined;

const running = await queryHub(hubUrl, { timeout: 1000 }).then(
  (s) => SERVICES.every((name) => s.nodes.some((n) => n.info.services.some((x) => x.name === name))),
  () => false,
);
if (!running) {
  tmp = mkdtempSync(join(tmpdir(), 'parley-shop-'));
  process.stdout.write(
    `No shop at ${hubUrl}: starting one (hub + ${SERVICES.length} service processes) in ${tmp}\n`,
  );
  dev = await runDev({
    appDir: new URL('.', import.meta.url).pathname,
    port: 0,
    dataDir: tmp,
    print: (line) => {
      if (/ (warn|error|fatal) /.test(line)) process.stdout.write(`${line}\n`);
    },
    // Its own shop, beside any other: the gateway takes a free port.
    env: { PARLEY_LOG_LEVEL: 'warn', PARLEY_GATEWAY_PORT: '0' },
  });
  hubUrl = dev.hub.url;
}

const node = createNode({
  id: `scenario-${process.pid}`,
  transport: createTcpTransport({ hub: hubUrl }),
  logLevel: 'silent',
});
try {
  await node.start();
  await waitForShop(node);
  const shop = node.client(orders);
  const stock = node.client(inventory);
  const run = `${Date.now().toString(36)}`;

  const cases = [
    {
      label: 'happy path',
      card: GOOD_CARD,
      lines: [
        { sku: 'keyboard', quantity: 1 },
        { sku: 'cable', quantity: 2 },
      ],
    },
    { label: 'out of stock', card: GOOD_CARD, lines: [{ sku: 'poster', quantity: 1 }] },
    { label: 'payment failure', card: DECLINED_CARD, lines: [{ sku: 'monitor', quantity: 1 }] },
  ];
  process.stdout.write(`\nPlacing ${cases.length + 1} orders through ${hubUrl}\n\n`);
  const placed: { label: string; order: Order }[] = [];
  for (const c of cases) {
    const order = await shop.place({
      id: `${run}-${placed.length + 1}`,
      customer: 'ada',
      card: c.card,
      lines: c.lines,
    });
    placed.push({ label: c.label, order });
  }
  const final = await waitForFinal(
    shop,
    placed.map((p) => p.order.id),
  );
  // Shipping follows payment: give it a moment to record the shipment on confirmed orders.
  for (const [i, o] of final.entries()) {
    for (let t = 0; o.status === 'CONFIRMED' && o.shipment === null && t < 50; t++) {
      await new Promise((r) => setTimeout(r, 100));
      final[i] = await shop.get({ id: o.id });
      if (final[i]?.shipment !== null) break;
    }
  }
  const { reservations } = await stock.stock({});
  const reservation = (id: string) => reservations.find((r) => r.orderId === id)?.state ?? 'none';
  const rows: string[][] = [['CASE', 'ORDER', 'FINAL STATE', 'WHY']];
  for (const [i, o] of final.entries()) {
    const why =
      o.status === 'CONFIRMED'
        ? `stock reserved, ${euros(o.total)} charged, shipment ${final[i]?.shipment ?? '(being created)'}`
        : o.status === 'CANCELLED'
          ? `${o.reason}; its stock reservation is ${reservation(o.id)}`
          : `${o.reason}; nothing reserved`;
    rows.push([placed[i]?.label ?? '', o.id, o.status, why]);
  }
  try {
    await shop.place({ customer: 'ada', card: GOOD_CARD, lines: [{ sku: 'unicorn', quantity: 1 }] });
  } catch (error) {
    const e = ParleyError.from(error);
    rows.push(['unknown product', '(none stored)', `refused: ${e.code}`, e.message]);
  }
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  for (const r of rows)
    process.stdout.write(
      `  ${r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd()}\n`,
    );
} finally {
  await node.stop();
  await dev?.stop();
  if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
}
