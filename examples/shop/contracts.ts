/**
 * The shop's contracts: one per service. Each service imports the contracts of those it calls or
 * listens to, never their code. Money is in cents.
 */
import { defineContract, z } from '../../src/index.ts';

const Sku = z.string().regex(/^[a-z0-9-]{1,40}$/);
const Cents = z.number().int().nonnegative();
const OrderId = z.string().min(1).max(64);
const Line = z.object({ sku: Sku, quantity: z.number().int().min(1).max(1000) });
const Product = z.object({ sku: Sku, name: z.string(), price: Cents });

export const catalog = defineContract({
  name: 'catalog',
  version: '1.0.0',
  actions: {
    list: {
      input: z.object({}),
      output: z.object({ products: z.array(Product) }),
      idempotent: true,
      http: 'GET /products',
      public: true,
      description: 'Every product with its price.',
    },
    prices: {
      input: z.object({ skus: z.array(Sku).min(1).max(100) }),
      output: z.object({ products: z.array(Product) }),
      idempotent: true,
      errors: { UNKNOWN_SKU: 'NOT_FOUND' },
    },
    setPrice: {
      input: z.object({ sku: Sku, price: Cents }),
      output: Product,
      idempotent: true,
      errors: { UNKNOWN_SKU: 'NOT_FOUND' },
    },
  },
  events: {
    // Ephemeral: tells every live orders instance to forget a cached price.
    'catalog.price-changed': { schema: z.object({ sku: Sku }), version: 1 },
  },
});

export const OrderStatus = z.enum(['PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLED']);
const Order = z.object({
  id: OrderId,
  customer: z.string(),
  status: OrderStatus,
  total: Cents,
  lines: z.array(Line.extend({ price: Cents })),
  reason: z.string().nullable(),
  shipment: z.string().nullable(),
  createdAt: z.number(),
  updatedAt: z.number(),
});
export type Order = z.infer<typeof Order>;

export const orders = defineContract({
  name: 'orders',
  version: '1.0.0',
  actions: {
    place: {
      input: z.object({
        // The client's id for the order: placing the same id twice returns the first order.
        id: OrderId.optional(),
        customer: z.string().min(1).max(100),
        card: z.string().regex(/^[0-9 ]{12,23}$/),
        lines: z.array(Line).min(1).max(50),
      }),
      output: Order,
      errors: { UNKNOWN_SKU: 'NOT_FOUND' },
      timeout: 5000,
      http: 'POST /orders',
      public: true,
      description: 'Places an order: it is PENDING until stock and payment say otherwise.',
    },
    get: {
      input: z.object({ id: OrderId }),
      output: Order,
      idempotent: true,
      errors: { NO_ORDER: 'NOT_FOUND' },
      http: 'GET /orders/:id',
      public: true,
      description: 'One order and its current status.',
    },
    list: {
      input: z.object({
        status: OrderStatus.optional(),
        limit: z.number().int().min(1).max(1000).default(100),
      }),
      output: z.object({ orders: z.array(Order) }),
      idempotent: true,
    },
  },
  events: {
    'order.placed': {
      schema: z.object({
        orderId: OrderId,
        customer: z.string(),
        card: z.string(),
        total: Cents,
        lines: z.array(Line),
      }),
      version: 1,
    },
    'order.confirmed': {
      schema: z.object({ orderId: OrderId, customer: z.string(), total: Cents }),
      version: 1,
    },
    'order.rejected': {
      schema: z.object({ orderId: OrderId, customer: z.string(), reason: z.string() }),
      version: 1,
    },
    'order.cancelled': {
      schema: z.object({ orderId: OrderId, customer: z.string(), reason: z.string() }),
      version: 1,
    },
  },
});

export const inventory = defineContract({
  name: 'inventory',
  version: '1.0.0',
  actions: {
    stock: {
      input: z.object({}),
      output: z.object({
        items: z.array(z.object({ sku: Sku, available: z.number().int(), reserved: z.number().int() })),
        reservations: z.array(z.object({ orderId: OrderId, state: z.enum(['HELD', 'RELEASED']) })),
      }),
      idempotent: true,
    },
    restock: {
      input: z.object({ sku: Sku, quantity: z.number().int().min(1) }),
      output: z.object({ available: z.number().int() }),
    },
  },
  events: {
    'inventory.reserved': {
      schema: z.object({ orderId: OrderId, customer: z.string(), card: z.string(), total: Cents }),
      version: 1,
    },
    'inventory.rejected': { schema: z.object({ orderId: OrderId, reason: z.string() }), version: 1 },
  },
});

export const ProcessorMode = z.enum(['ok', 'fail', 'slow']);

export const payments = defineContract({
  name: 'payments',
  version: '1.0.0',
  actions: {
    charges: {
      input: z.object({}),
      output: z.object({
        charges: z.array(
          z.object({
            orderId: OrderId,
            amount: Cents,
            status: z.enum(['SUCCEEDED', 'FAILED']),
            reason: z.string().nullable(),
          }),
        ),
      }),
      idempotent: true,
    },
    // Tells the fake card processor to decline everything, be slow, or behave.
    setProcessor: {
      input: z.object({ mode: ProcessorMode, delayMs: z.number().int().min(0).max(60_000).default(2000) }),
      output: z.object({ mode: ProcessorMode, delayMs: z.number().int() }),
      idempotent: true,
    },
  },
  events: {
    'payment.succeeded': {
      schema: z.object({ orderId: OrderId, amount: Cents, chargeId: z.string() }),
      version: 1,
    },
    'payment.failed': { schema: z.object({ orderId: OrderId, reason: z.string() }), version: 1 },
  },
});

export const shipping = defineContract({
  name: 'shipping',
  version: '1.0.0',
  actions: {
    shipments: {
      input: z.object({}),
      output: z.object({
        shipments: z.array(z.object({ id: z.string(), orderId: OrderId, createdAt: z.number() })),
      }),
      idempotent: true,
    },
  },
  events: {
    'shipment.created': { schema: z.object({ orderId: OrderId, shipmentId: z.string() }), version: 1 },
  },
});

export const notifications = defineContract({
  name: 'notifications',
  version: '1.0.0',
  actions: {
    list: {
      input: z.object({
        customer: z.string().optional(),
        limit: z.number().int().min(1).max(1000).default(100),
      }),
      output: z.object({
        notifications: z.array(
          z.object({ customer: z.string(), orderId: OrderId, text: z.string(), at: z.number() }),
        ),
      }),
      idempotent: true,
    },
  },
  events: {
    // Each step of an order as the customer should see it, for the gateway to push to their
    // browser: published (kept in the broker's log, from which a browser resumes) and notified
    // (for gateways on brokers that keep no log). Past what is kept, the page refetches the order.
    'notifications.order-status': {
      schema: z.object({
        customer: z.string(),
        orderId: OrderId,
        status: z.enum([...OrderStatus.options, 'SHIPPED']),
        text: z.string(),
        reason: z.string().nullable(),
        at: z.number(),
      }),
      version: 1,
    },
  },
});

/** Cards of the fake processor: this one is always declined. */
export const DECLINED_CARD = '4000 0000 0000 0002';
export const GOOD_CARD = '4242 4242 4242 4242';
