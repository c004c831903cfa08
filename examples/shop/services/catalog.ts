/** catalog: products and prices, answered by RPC. A price change is announced ephemerally. */
import { defineServiceModule, implement } from '../../../src/index.ts';
import { catalog } from '../contracts.ts';
import { openDatabase } from '../db.ts';

export const PRODUCTS = [
  { sku: 'keyboard', name: 'Mechanical keyboard', price: 8900 },
  { sku: 'mouse', name: 'Wireless mouse', price: 2900 },
  { sku: 'monitor', name: '27" monitor', price: 27900 },
  { sku: 'cable', name: 'USB-C cable', price: 900 },
  { sku: 'poster', name: 'Limited poster (sold out)', price: 1500 },
];

export default defineServiceModule({
  name: 'catalog',
  setup({ dataDir }) {
    const db = openDatabase(
      dataDir,
      'catalog',
      'CREATE TABLE IF NOT EXISTS products (sku TEXT PRIMARY KEY, name TEXT NOT NULL, price INTEGER NOT NULL)',
    );
    const seed = db.prepare('INSERT OR IGNORE INTO products (sku, name, price) VALUES (@sku, @name, @price)');
    db.transaction(() => {
      for (const p of PRODUCTS) seed.run(p);
    })();
    const all = db.prepare('SELECT sku, name, price FROM products ORDER BY sku');
    const one = db.prepare('SELECT sku, name, price FROM products WHERE sku = ?');
    const update = db.prepare('UPDATE products SET price = ? WHERE sku = ?');
    type Product = { sku: string; name: string; price: number };

    return {
      services: [
        implement(catalog, {
          actions: {
            list: () => ({ products: all.all() as Product[] }),
            prices: ({ skus }, ctx) => {
              const products: Product[] = [];
              const unknown: string[] = [];
              for (const sku of new Set(skus)) {
                const p = one.get(sku) as Product | undefined;
                if (p === undefined) unknown.push(sku);
                else products.push(p);
              }
              if (unknown.length > 0) {
                throw ctx.fail('UNKNOWN_SKU', `unknown product ${unknown.join(', ')}`, { skus: unknown });
              }
              return { products };
            },
            setPrice: async ({ sku, price }, ctx) => {
              if (update.run(price, sku).changes === 0)
                throw ctx.fail('UNKNOWN_SKU', `unknown product ${sku}`);
              await ctx.notify(catalog, 'catalog.price-changed', { sku });
              return one.get(sku) as Product;
            },
          },
        }),
      ],
      close: () => db.close(),
    };
  },
});
