/**
 * The gateway's test system: an `items` contract with public and private actions, streaming and
 * upload actions, served by one node and reached by the gateway's node over the memory transport
 * (so calls cross a wire: what reaches the handler is what the envelope carried). Plus a raw HTTP
 * client for requests `fetch` would normalise or refuse to send.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { after } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  createGateway,
  createMemoryNetwork,
  defineContract,
  type Gateway,
  type GatewayOptions,
  implement,
  ParleyError,
  type ParleyNode,
  UploadChunk,
  z,
} from '../src/index.ts';
import { testNode, waitFor } from './helpers.ts';

const Item = z.object({ id: z.string(), name: z.string(), price: z.number().int() });

export const items = defineContract({
  name: 'items',
  version: '1.2.0',
  actions: {
    create: {
      input: z.object({ name: z.string().min(1).max(50), price: z.number().int().nonnegative() }),
      output: Item,
      public: true,
      http: 'POST /items',
      description: 'Creates an item.',
    },
    get: {
      input: z.object({ id: z.string().regex(/^[a-z0-9-]{1,20}$/) }),
      output: Item,
      public: true,
      http: 'GET /items/:id',
      errors: { NO_ITEM: 'NOT_FOUND' },
    },
    rename: {
      input: z.object({ id: z.string(), name: z.string().min(1) }),
      output: Item,
      public: true,
      http: 'PATCH /items/:id',
    },
    search: {
      input: z.object({
        q: z.string().optional(),
        limit: z.number().int().min(1).max(50).default(10),
        active: z.boolean().optional(),
        tags: z.array(z.string()).optional(),
        sizes: z.array(z.number()).optional(),
      }),
      output: z.object({ seen: z.record(z.string(), z.unknown()) }),
      public: true,
      http: 'GET /items',
    },
    /** Fails with the code it is given (convention route: POST /api/items/fail). */
    fail: {
      input: z.object({ code: z.string(), message: z.string().optional() }),
      output: z.object({}),
      public: true,
      errors: { NO_ITEM: 'NOT_FOUND' },
    },
    /** What reached the handler from the edge. */
    whoami: {
      input: z.object({}),
      output: z.object({
        principal: z.unknown(),
        traceId: z.string(),
        idempotencyKey: z.string().nullable(),
        remaining: z.number(),
      }),
      public: true,
    },
    slow: {
      input: z.object({ ms: z.number().int().max(10_000) }),
      output: z.object({ slept: z.number() }),
      public: true,
      timeout: 2000,
    },
    count: {
      input: z.object({ to: z.number().int().max(1000), failAt: z.number().int().optional() }),
      output: z.object({ n: z.number() }),
      public: true,
      stream: 'output',
      http: 'GET /count',
    },
    upload: {
      input: UploadChunk,
      output: z.object({ bytes: z.number(), chunks: z.number(), filename: z.string(), sample: z.string() }),
      public: true,
      stream: 'input',
      http: 'POST /uploads',
      timeout: 10_000,
    },
    /** Not public: reachable on /rpc only. */
    secret: { input: z.object({ x: z.number() }), output: z.object({ doubled: z.number() }) },
  },
});

/** What the service saw, for assertions about uploads. */
export interface Seen {
  uploadChunks: number[];
  uploadsAborted: number;
}

export function itemsService(seen: Seen) {
  return implement(items, {
    actions: {
      create: ({ name, price }) => ({ id: 'i-1', name, price }),
      get: ({ id }, ctx) => {
        if (id === 'missing') throw ctx.fail('NO_ITEM', `no item ${id}`);
        return { id, name: 'thing', price: 5 };
      },
      rename: ({ id, name }) => ({ id, name, price: 5 }),
      search: (input) => ({ seen: input }),
      fail: ({ code, message }, ctx) => {
        if (code === 'NO_ITEM') throw ctx.fail('NO_ITEM', message ?? 'declared');
        if (code === 'BUG') throw new Error('secret internal detail: db password is hunter2');
        throw new ParleyError(code as 'NOT_FOUND', message ?? code, { details: { hint: 'x' } });
      },
      whoami: (_i, ctx) => ({
        principal: ctx.caller?.principal ?? null,
        traceId: ctx.traceId,
        idempotencyKey: ctx.idempotencyKey ?? null,
        remaining: ctx.remaining(),
      }),
      slow: async ({ ms }, ctx) => {
        await sleep(ms, undefined, { signal: ctx.signal }).catch(() => undefined);
        return { slept: ms };
      },
      count: async function* ({ to, failAt }, ctx) {
        for (let n = 0; n < to; n++) {
          if (n === failAt) throw new ParleyError('FAILED_PRECONDITION', `stopped at ${n}`);
          yield { n };
        }
        void ctx;
      },
      upload: async (chunks, ctx) => {
        let bytes = 0;
        let count = 0;
        let filename = '';
        let sample = '';
        try {
          for await (const chunk of chunks) {
            const data = Buffer.from(chunk.data, 'base64');
            if (chunk.offset !== bytes) throw new ParleyError('DATA_LOSS', 'out of order');
            bytes += data.length;
            count++;
            filename = chunk.filename;
            if (sample === '') sample = data.subarray(0, 16).toString('latin1');
            seen.uploadChunks.push(data.length);
          }
        } finally {
          if (ctx.signal.aborted) seen.uploadsAborted++;
        }
        return { bytes, chunks: count, filename, sample };
      },
      secret: ({ x }) => ({ doubled: x * 2 }),
    },
  });
}

export interface Running {
  url: string;
  gateway: Gateway;
  service: ParleyNode;
  edge: ParleyNode;
  seen: Seen;
}

/**
 * A service node and a gateway node on one memory network (or one node, `inProcess`), the
 * gateway listening on port 0.
 * Everything is closed when the test file ends.
 */
export async function startGateway(
  overrides: Partial<GatewayOptions> = {},
  setup: { prepare?: (gateway: Gateway) => void; inProcess?: boolean } = {},
): Promise<Running> {
  const seen: Seen = { uploadChunks: [], uploadsAborted: 0 };
  const net = createMemoryNetwork();
  const service = testNode({ transport: net.transport(), services: [itemsService(seen)] });
  // In process, the gateway's own node hosts the service: calls take the local fast path.
  const edge = setup.inProcess === true ? service : testNode({ transport: net.transport() });
  await service.start();
  if (edge !== service) await edge.start();
  await waitFor(() => edge.registry.endpoints('items').length > 0, 5000, 'items in the registry');
  const gateway = createGateway({ node: edge, contracts: [items], ...overrides });
  after(async () => {
    await gateway.close();
    await edge.stop();
    await service.stop();
  });
  setup.prepare?.(gateway);
  const { url } = await gateway.listen();
  return { url, gateway, service, edge, seen };
}

export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A request sent exactly as written (no URL normalisation), bounded by a 5 s timeout. */
export function raw(
  base: string,
  init: { method?: string; path: string; headers?: Record<string, string | string[]>; body?: string },
): Promise<RawResponse> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: hostname,
        port,
        method: init.method ?? 'GET',
        path: init.path,
        headers: init.headers,
        timeout: 5000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`timeout: ${init.path.slice(0, 80)}`)));
    req.on('error', reject);
    req.end(init.body);
  });
}

/** The parsed problem of a response, checking it is one. */
export function problemOf(r: { headers: IncomingHttpHeaders; body: string }): Record<string, unknown> {
  const type = r.headers['content-type'] ?? '';
  if (!String(type).startsWith('application/problem+json')) {
    throw new Error(`not a problem (content-type ${type}): ${r.body.slice(0, 200)}`);
  }
  return JSON.parse(r.body) as Record<string, unknown>;
}
