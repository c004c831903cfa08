/**
 * The RPC systems under test. Each serves `add({a, b, note}) → {sum}` and makes a client for it,
 * on loopback only. Peers are used the way their documentation shows, with their defaults except
 * where a default would leave the machine (Moleculer's UDP discovery is off; every address is
 * 127.0.0.1).
 */
import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';

import { fastify, fastifyToParley, moleculerWeb, parleyGateway } from './http-systems.ts';
import { moleculerBroker, tcpTransporter } from './moleculer.ts';
import { addServer, parleyBench } from './parley-bench.ts';
import type { Req, RpcSystem } from './types.ts';

export type { Connected, Req, RpcSystem, Served } from './types.ts';

const HOST = '127.0.0.1';
const NATS = 'nats://127.0.0.1:4222';

/** Newline-delimited JSON over node:net, replies and requests written once per tick. */
const rawNet: RpcSystem = {
  async serve() {
    const server = createServer((socket) => {
      let buffered = '';
      let out: string[] = [];
      let scheduled = false;
      const flush = () => {
        scheduled = false;
        socket.write(out.join(''));
        out = [];
      };
      socket.setNoDelay(true);
      socket.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        let nl = buffered.indexOf('\n');
        while (nl >= 0) {
          const m = JSON.parse(buffered.slice(0, nl)) as { id: number } & Req;
          buffered = buffered.slice(nl + 1);
          out.push(`${JSON.stringify({ id: m.id, sum: m.a + m.b })}\n`);
          nl = buffered.indexOf('\n');
        }
        if (!scheduled && out.length > 0) {
          scheduled = true;
          setImmediate(flush);
        }
      });
      socket.on('error', () => socket.destroy());
    });
    server.listen(0, HOST);
    await once(server, 'listening');
    return {
      port: (server.address() as { port: number }).port,
      close: () => new Promise<void>((r) => server.close(() => r())),
    };
  },
  async connect(port) {
    const socket: Socket = createConnection({ port, host: HOST });
    await once(socket, 'connect');
    socket.setNoDelay(true);
    const pending = new Map<number, (v: unknown) => void>();
    let seq = 0;
    let buffered = '';
    let out: string[] = [];
    let scheduled = false;
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let nl = buffered.indexOf('\n');
      while (nl >= 0) {
        const m = JSON.parse(buffered.slice(0, nl)) as { id: number; sum: number };
        buffered = buffered.slice(nl + 1);
        pending.get(m.id)?.(m);
        pending.delete(m.id);
        nl = buffered.indexOf('\n');
      }
    });
    const flush = () => {
      scheduled = false;
      socket.write(out.join(''));
      out = [];
    };
    return {
      call(req) {
        const id = ++seq;
        out.push(`${JSON.stringify({ id, ...req })}\n`);
        if (!scheduled) {
          scheduled = true;
          setImmediate(flush);
        }
        return new Promise((resolve) => pending.set(id, resolve));
      },
      close: async () => void socket.destroy(),
    };
  },
};

const grpcDefinition = async () => {
  const grpc = await import('@grpc/grpc-js');
  const json = {
    serialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
    deserialize: (b: Buffer) => JSON.parse(b.toString('utf8')) as unknown,
  };
  const service = {
    add: {
      path: '/bench.Calc/Add',
      requestStream: false,
      responseStream: false,
      requestSerialize: json.serialize,
      requestDeserialize: json.deserialize,
      responseSerialize: json.serialize,
      responseDeserialize: json.deserialize,
    },
  };
  return { grpc, service };
};

/** gRPC unary with JSON bodies (a protobuf message of the same fields would be a little smaller). */
const grpc: RpcSystem = {
  async serve() {
    const { grpc, service } = await grpcDefinition();
    const server = new grpc.Server();
    server.addService(service, {
      add: (call: { request: Req }, callback: (e: null, v: unknown) => void) => {
        callback(null, { sum: call.request.a + call.request.b });
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${HOST}:0`, grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    return { port, close: () => new Promise<void>((r) => server.tryShutdown(() => r())) };
  },
  async connect(port) {
    const { grpc, service } = await grpcDefinition();
    const Client = grpc.makeGenericClientConstructor(service, 'Calc');
    const client = new Client(`${HOST}:${port}`, grpc.credentials.createInsecure()) as unknown as {
      add(req: Req, cb: (e: Error | null, v: unknown) => void): void;
      close(): void;
    };
    return {
      call: (req) =>
        new Promise((resolve, reject) => client.add(req, (e, v) => (e ? reject(e) : resolve(v)))),
      close: async () => client.close(),
    };
  },
};

function moleculer(kind: 'tcp' | 'nats'): RpcSystem {
  const transporter = (port?: number) =>
    kind === 'nats' ? NATS : tcpTransporter(port === undefined ? [] : [`${HOST}:${port}/bench-server`]);
  return {
    ...(kind === 'nats' ? { needs: 'nats' as const } : {}),
    async serve() {
      const { broker, port } = await moleculerBroker({
        nodeID: 'bench-server',
        transporter: transporter(),
        addService: true,
      });
      return { port: kind === 'tcp' ? (port ?? 0) : 0, close: () => broker.stop() };
    },
    async connect(port) {
      const { broker } = await moleculerBroker({
        nodeID: `bench-client-${process.pid}`,
        transporter: transporter(port),
      });
      await broker.waitForServices(['bench'], 10_000);
      return { call: (req) => broker.call('bench.add', req), close: () => broker.stop() };
    },
  };
}

function nest(kind: 'tcp' | 'nats'): RpcSystem {
  const options = (port: number) => (kind === 'nats' ? { servers: [NATS] } : { host: HOST, port });
  return {
    ...(kind === 'nats' ? { needs: 'nats' as const } : {}),
    async serve() {
      await import('reflect-metadata');
      const { NestFactory } = await import('@nestjs/core');
      const { Module, Controller } = await import('@nestjs/common');
      const { MessagePattern, Transport } = await import('@nestjs/microservices');
      // Decorators applied as functions, so no compiler flag is needed.
      class CalcController {
        add(data: Req) {
          return { sum: data.a + data.b };
        }
      }
      const descriptor = Object.getOwnPropertyDescriptor(
        CalcController.prototype,
        'add',
      ) as PropertyDescriptor;
      MessagePattern('add')(CalcController.prototype, 'add', descriptor);
      Controller()(CalcController);
      class AppModule {}
      Module({ controllers: [CalcController] })(AppModule);
      const port = kind === 'tcp' ? await freePort() : 0;
      const app = await NestFactory.createMicroservice(AppModule, {
        transport: kind === 'nats' ? Transport.NATS : Transport.TCP,
        options: options(port),
        logger: false,
      } as never);
      await app.listen();
      return { port, close: () => app.close() };
    },
    async connect(port) {
      await import('reflect-metadata');
      const { ClientProxyFactory, Transport } = await import('@nestjs/microservices');
      const { lastValueFrom } = await import('rxjs');
      const client = ClientProxyFactory.create({
        transport: kind === 'nats' ? Transport.NATS : Transport.TCP,
        options: options(port),
      } as never);
      await client.connect();
      return { call: (req) => lastValueFrom(client.send('add', req)), close: async () => client.close() };
    },
  };
}

async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, HOST);
  await once(s, 'listening');
  const { port } = s.address() as { port: number };
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Parley's TCP transport: a hub for discovery, calls straight from node to node. */
const parleyTcp: RpcSystem = parleyTcpWith(false);

function parleyTcpWith(policies: boolean): RpcSystem {
  return {
    async serve() {
      const bench = await parleyBench();
      const hub = await bench.parley.createHub();
      const node = addServer(bench, bench.parley.createTcpTransport({ hub: hub.url }));
      await node.start();
      return {
        port: hub.port,
        close: async () => {
          await node.stop();
          await hub.close();
        },
      };
    },
    async connect(port) {
      const { parley, contract } = await parleyBench();
      const node = parley.createNode({
        logLevel: 'silent',
        transport: parley.createTcpTransport({ hub: `parley://${HOST}:${port}` }),
        // The default policy stack on the calling side: budgeted retries, a breaker per instance.
        ...(policies ? { middleware: parley.resilience() } : {}),
      });
      await node.start();
      while (node.registry.endpoints('bench').length === 0) await new Promise((r) => setTimeout(r, 5));
      const client = node.client(contract);
      return { call: (req) => client.add(req), close: () => node.stop() };
    },
  };
}

/**
 * Parley over a broker's transport, from its URL (`TransportRegistry`): calls go to the callee's
 * inbox subject and back through the broker; discovery by the bus transport's heartbeats. The
 * bench's own prefix keeps it apart from anything else on the server.
 */
function parleyBus(needs: 'nats' | 'redis' | 'rabbitmq', url: string): RpcSystem {
  const open = async () => {
    const { parley, contract } = await parleyBench();
    return { parley, contract, transport: new parley.TransportRegistry().open(url) };
  };
  return {
    needs,
    async serve() {
      const { parley, contract, transport } = await open();
      const node = addServer({ parley, contract }, transport);
      await node.start();
      return { port: 0, close: () => node.stop() };
    },
    async connect() {
      const { parley, contract, transport } = await open();
      const node = parley.createNode({ logLevel: 'silent', transport });
      await node.start();
      while (node.registry.endpoints('bench').length === 0) await new Promise((r) => setTimeout(r, 5));
      const client = node.client(contract);
      return { call: (req) => client.add(req), close: () => node.stop() };
    },
  };
}

/** The raw nats.js client's request/reply (a reply inbox per client, JSON bodies). */
const rawNatsRequest: RpcSystem = {
  needs: 'nats',
  async serve() {
    const { connect } = await import('nats');
    const nc = await connect({ servers: NATS });
    nc.subscribe('parley-bench.add', {
      callback: (err, msg) => {
        if (err !== null) return;
        const m = JSON.parse(Buffer.from(msg.data).toString('utf8')) as Req;
        msg.respond(Buffer.from(JSON.stringify({ sum: m.a + m.b })));
      },
    });
    await nc.flush();
    return { port: 0, close: () => nc.drain() };
  },
  async connect() {
    const { connect } = await import('nats');
    const nc = await connect({ servers: NATS });
    return {
      async call(req) {
        const reply = await nc.request('parley-bench.add', Buffer.from(JSON.stringify(req)), {
          timeout: 10_000,
        });
        return JSON.parse(Buffer.from(reply.data).toString('utf8')) as unknown;
      },
      close: () => nc.drain(),
    };
  },
};

export const rpcSystems: Record<string, RpcSystem> = {
  'parley tcp': parleyTcp,
  'parley tcp + policies': parleyTcpWith(true),
  'parley nats': parleyBus('nats', `${NATS}?prefix=parley-bench`),
  'parley redis': parleyBus('redis', 'redis://127.0.0.1:6379?prefix=parley-bench'),
  'parley rabbitmq': parleyBus('rabbitmq', 'amqp://guest:guest@127.0.0.1:5672?prefix=parley-bench'),
  'raw node:net': rawNet,
  'raw nats request': rawNatsRequest,
  'fastify+undici': fastify,
  'parley gateway (tcp)': parleyGateway,
  'fastify → parley tcp': fastifyToParley,
  'moleculer-web': moleculerWeb,
  'grpc-js': grpc,
  'moleculer tcp': moleculer('tcp'),
  'moleculer nats': moleculer('nats'),
  'nestjs tcp': nest('tcp'),
  'nestjs nats': nest('nats'),
};
