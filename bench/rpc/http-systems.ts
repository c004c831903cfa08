/**
 * HTTP edges under test, all called the same way (undici `Pool`, 64 keep-alive connections,
 * `POST <path>` with a JSON body): a bare Fastify route doing the work itself, its input and output
 * declared as JSON Schemas the way Fastify is used (the floor), Parley's
 * gateway in front of a service reached over the TCP transport (HTTP → gateway node → TCP → service
 * node, both nodes and the hub in the server process), the bare Fastify route calling the same
 * service through a Parley client (the least an edge over that hop costs), and moleculer-web in
 * front of a Moleculer service reached the same way (another broker in the same process, over
 * Moleculer's TCP transporter).
 */
import { moleculerBroker, tcpTransporter } from './moleculer.ts';
import { addServer, parleyBench } from './parley-bench.ts';
import type { Connected, Req, RpcSystem, Served } from './types.ts';

const HOST = '127.0.0.1';

/** A client for `POST path` on 127.0.0.1:`port`. */
async function httpClient(port: number, path: string): Promise<Connected> {
  const { Pool } = await import('undici');
  const pool = new Pool(`http://${HOST}:${port}`, { connections: 64, pipelining: 1 });
  return {
    async call(req: Req) {
      const res = await pool.request({
        path,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(req),
      });
      if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}: ${await res.body.text()}`);
      return res.body.json();
    },
    close: () => pool.close(),
  };
}

/** The input and output of `add` as JSON Schemas, the way a Fastify user declares them. */
const ADD_SCHEMA = {
  body: {
    type: 'object',
    properties: { a: { type: 'number' }, b: { type: 'number' }, note: { type: 'string' } },
    required: ['a', 'b', 'note'],
  },
  response: { 200: { type: 'object', properties: { sum: { type: 'number' } }, required: ['sum'] } },
};

export const fastify: RpcSystem = {
  async serve() {
    const { default: Fastify } = await import('fastify');
    const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 });
    // The same work as the Parley rows: the input is validated against its schema (Fastify's ajv)
    // and the output is shaped by its schema (Fastify's serializer), as a Fastify user writes it.
    app.post('/add', { schema: ADD_SCHEMA }, async (request) => {
      const { a, b } = request.body as Req;
      return { sum: a + b };
    });
    await app.listen({ port: 0, host: HOST });
    return { port: (app.server.address() as { port: number }).port, close: () => app.close() };
  },
  connect: (port) => httpClient(port, '/add'),
};

/**
 * A `node:http` server with no framework: what Node's HTTP stack costs alone. The body is read,
 * parsed and checked by hand (as moleculer-web does on `node:http`) and the answer written with
 * its length. `work` answers one parsed request.
 */
async function nodeHttpEdge(work: (req: Req) => unknown): Promise<{ port: number; close(): Promise<void> }> {
  const { createServer } = await import('node:http');
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const fail = (error: unknown) => {
        response.writeHead(500, { 'content-type': 'text/plain' });
        response.end(String(error));
      };
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Req;
        if (typeof body.a !== 'number' || typeof body.b !== 'number' || typeof body.note !== 'string')
          throw new Error('bad input');
        Promise.resolve(work(body)).then((result) => {
          const text = JSON.stringify(result);
          response.writeHead(200, {
            'content-type': 'application/json; charset=utf-8',
            'content-length': Buffer.byteLength(text),
          });
          response.end(text);
        }, fail);
      } catch (error) {
        fail(error);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  return {
    port: (server.address() as { port: number }).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Not a product: Node's HTTP server doing the work in place, the floor under every edge here. */
export const nodeHttp: RpcSystem = {
  serve: () => nodeHttpEdge(({ a, b }) => ({ sum: a + b })),
  connect: (port) => httpClient(port, '/add'),
};

/** A hub, a node serving `bench.add` and an edge node that sees it, over the TCP transport. */
async function parleyPair() {
  const bench = await parleyBench();
  const { parley, contract } = bench;
  const hub = await parley.createHub();
  const service = addServer(bench, parley.createTcpTransport({ hub: hub.url }));
  const edge = parley.createNode({
    logLevel: 'silent',
    transport: parley.createTcpTransport({ hub: hub.url }),
  });
  await service.start();
  await edge.start();
  while (edge.registry.endpoints('bench').length === 0) await new Promise((r) => setTimeout(r, 5));
  return {
    parley,
    contract,
    edge,
    stop: async () => {
      await edge.stop();
      await service.stop();
      await hub.close();
    },
  };
}

export const parleyGateway: RpcSystem = {
  async serve(): Promise<Served> {
    const { parley, contract, edge, stop } = await parleyPair();
    const gateway = parley.createGateway({ node: edge, contracts: [contract], port: 0 });
    const { url } = await gateway.listen();
    return {
      port: Number(new URL(url).port),
      close: async () => {
        await gateway.close();
        await stop();
      },
    };
  },
  connect: (port) => httpClient(port, '/api/add'),
};

/**
 * Not a product: the bare Fastify route whose handler calls `bench.add` through a Parley client
 * over the TCP transport, in the gateway row's layout (everything in the server process). What
 * any HTTP edge in front of this RPC hop costs at the least; the gateway row minus this row is
 * what the gateway itself adds (routing from contracts, hardening, problems, request ids).
 */
export const fastifyToParley: RpcSystem = {
  async serve(): Promise<Served> {
    const { contract, edge, stop } = await parleyPair();
    const client = edge.client(contract);
    const { default: Fastify } = await import('fastify');
    const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 });
    app.post('/add', { schema: ADD_SCHEMA }, async (request) => client.add(request.body as Req));
    await app.listen({ port: 0, host: HOST });
    return {
      port: (app.server.address() as { port: number }).port,
      close: async () => {
        await app.close();
        await stop();
      },
    };
  },
  connect: (port) => httpClient(port, '/add'),
};

/**
 * Not a product: that `node:http` server calling `bench.add` through a Parley client over the TCP
 * transport, in the gateway row's layout: what an edge over the hop costs without Fastify.
 */
export const nodeHttpToParley: RpcSystem = {
  async serve(): Promise<Served> {
    const { contract, edge, stop } = await parleyPair();
    const client = edge.client(contract);
    const served = await nodeHttpEdge((req) => client.add(req));
    return {
      port: served.port,
      close: async () => {
        await served.close();
        await stop();
      },
    };
  },
  connect: (port) => httpClient(port, '/add'),
};

/** moleculer-web in front of the same service on another broker, over Moleculer's TCP transporter. */
export const moleculerWeb: RpcSystem = {
  async serve(): Promise<Served> {
    const { default: ApiGateway } = await import('moleculer-web');
    const service = await moleculerBroker({
      nodeID: 'bench-server',
      transporter: tcpTransporter(),
      addService: true,
    });
    let web: { server: { address(): { port: number } } } | undefined;
    const edge = await moleculerBroker({
      nodeID: 'bench-web',
      transporter: tcpTransporter([`${HOST}:${service.port}/bench-server`]),
      setup: (broker) => {
        web = broker.createService({
          name: 'api',
          mixins: [ApiGateway],
          settings: {
            port: 0,
            ip: HOST,
            routes: [{ path: '/', aliases: { 'POST add': 'bench.add' }, bodyParsers: { json: true } }],
            logRequest: null,
            logResponse: null,
          },
        }) as unknown as { server: { address(): { port: number } } };
      },
    });
    await edge.broker.waitForServices(['bench'], 10_000);
    return {
      port: (web as { server: { address(): { port: number } } }).server.address().port,
      close: async () => {
        await edge.broker.stop();
        await service.broker.stop();
      },
    };
  },
  connect: (port) => httpClient(port, '/add'),
};
