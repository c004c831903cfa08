/**
 * The RPC systems under test. Each serves `add({a, b, note}) → {sum}` and makes a client for it,
 * on loopback only. Peers are used the way their documentation shows, with their defaults except
 * where a default would leave the machine (Moleculer's UDP discovery is off; every address is
 * 127.0.0.1).
 */
import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';

import {
  fastify,
  fastifyToParley,
  moleculerWeb,
  nodeHttp,
  nodeHttpToParley,
  parleyGateway,
} from './http-systems.ts';
import { moleculerBroker, tcpTransporter } from './moleculer.ts';
import { addServer, parleyBench } from './parley-bench.ts';
import type { Req, RpcSystem } from './types.ts';

export type { Connected, Req, RpcSystem, Served } from './types.ts';

const HOST = '127.0.0.1';
const NATS = 'nats://127.0.0.1:4222';
const REDIS = { host: HOST, port: 6379 };
const REDIS_CHANNEL = 'parley-bench.add';
const AMQP = 'amqp://guest:guest@127.0.0.1:5672';
const AMQP_QUEUE = 'parley-bench.add';
const MQTT = 'mqtt://127.0.0.1:1883';
const MQTT_TOPIC = 'parley-bench/add';

/**
 * The calls of a hand-written request/reply client waiting for their answers, by id: `call` gives
 * a request its id and the promise of its answer (a rejected send rejects it), `answer` settles it.
 */
function waitingReplies() {
  const waiting = new Map<number, (value: unknown) => void>();
  let seq = 0;
  return {
    call(send: (id: number) => unknown): Promise<unknown> {
      const id = ++seq;
      return new Promise((resolve, reject) => {
        waiting.set(id, resolve);
        const sent = send(id);
        if (sent instanceof Promise) {
          sent.catch((error: unknown) => {
            waiting.delete(id);
            reject(error);
          });
        }
      });
    },
    answer(id: number, value: unknown): void {
      const resolve = waiting.get(id);
      waiting.delete(id);
      resolve?.(value);
    },
  };
}

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
    const replies = waitingReplies();
    let buffered = '';
    let out: string[] = [];
    let scheduled = false;
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let nl = buffered.indexOf('\n');
      while (nl >= 0) {
        const m = JSON.parse(buffered.slice(0, nl)) as { id: number; sum: number };
        buffered = buffered.slice(nl + 1);
        replies.answer(m.id, m);
        nl = buffered.indexOf('\n');
      }
    });
    const flush = () => {
      scheduled = false;
      socket.write(out.join(''));
      out = [];
    };
    return {
      call: (req) =>
        replies.call((id) => {
          out.push(`${JSON.stringify({ id, ...req })}\n`);
          if (!scheduled) {
            scheduled = true;
            setImmediate(flush);
          }
        }),
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

/** `metrics`: Moleculer's own metrics on both sides (`metrics: { enabled: true }`, no reporter). */
function moleculer(kind: 'tcp' | 'nats', metrics = false): RpcSystem {
  const transporter = (port?: number) =>
    kind === 'nats' ? NATS : tcpTransporter(port === undefined ? [] : [`${HOST}:${port}/bench-server`]);
  return {
    ...(kind === 'nats' ? { needs: 'nats' as const } : {}),
    async serve() {
      const { broker, port } = await moleculerBroker({
        nodeID: 'bench-server',
        transporter: transporter(),
        addService: true,
        metrics,
      });
      return { port: kind === 'tcp' ? (port ?? 0) : 0, close: () => broker.stop() };
    },
    async connect(port) {
      const { broker } = await moleculerBroker({
        nodeID: `bench-client-${process.pid}`,
        transporter: transporter(port),
        metrics,
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
const parleyTcp: RpcSystem = parleyTcpWith({});

/**
 * `policies`: the default policy stack on the calling side. `metrics`: Prometheus metrics on both
 * sides (calls counted and timed; process metrics on), nothing scraping them.
 */
function parleyTcpWith({
  policies = false,
  metrics = false,
}: {
  policies?: boolean;
  metrics?: boolean;
}): RpcSystem {
  return {
    async serve() {
      const bench = await parleyBench();
      const hub = await bench.parley.createHub();
      const node = addServer(
        bench,
        bench.parley.createTcpTransport({ hub: hub.url }),
        metrics ? [bench.parley.metrics()] : [],
      );
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
        middleware: [...(metrics ? [parley.metrics()] : []), ...(policies ? parley.resilience() : [])],
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
function parleyBus(needs: NonNullable<RpcSystem['needs']>, url: string): RpcSystem {
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

/**
 * Request/reply over Redis pub/sub as an application writes it with ioredis: the server
 * subscribes to one channel; each request is one PUBLISH of `{id, reply, a, b, note}`, each
 * answer one PUBLISH to the caller's own channel, matched by id. ioredis's defaults (no
 * auto-pipelining); a subscribed connection cannot publish, so each side holds two.
 */
const rawRedisRequest: RpcSystem = {
  needs: 'redis',
  async serve() {
    const { Redis } = await import('ioredis');
    const sub = new Redis(REDIS);
    const pub = new Redis(REDIS);
    sub.on('messageBuffer', (_channel: Buffer, message: Buffer) => {
      const m = JSON.parse(message.toString('utf8')) as { id: number; reply: string } & Req;
      // An answer that fails to go leaves its caller waiting (the run's time limit ends it), not a crash.
      pub.publish(m.reply, JSON.stringify({ id: m.id, sum: m.a + m.b })).catch(() => undefined);
    });
    await sub.subscribe(REDIS_CHANNEL);
    return {
      port: 0,
      close: async () => {
        sub.disconnect();
        pub.disconnect();
      },
    };
  },
  async connect() {
    const { Redis } = await import('ioredis');
    const sub = new Redis(REDIS);
    const pub = new Redis(REDIS);
    const reply = `${REDIS_CHANNEL}.reply.${process.pid}`;
    const replies = waitingReplies();
    sub.on('messageBuffer', (_channel: Buffer, message: Buffer) => {
      const m = JSON.parse(message.toString('utf8')) as { id: number; sum: number };
      replies.answer(m.id, { sum: m.sum });
    });
    await sub.subscribe(reply);
    return {
      call: (req) => replies.call((id) => pub.publish(REDIS_CHANNEL, JSON.stringify({ id, reply, ...req }))),
      close: async () => {
        sub.disconnect();
        pub.disconnect();
      },
    };
  },
};

/**
 * amqplib's RPC as RabbitMQ's tutorial writes it: the server consumes a queue and answers to each
 * message's `replyTo` with its `correlationId`; the client publishes to the queue and consumes
 * `amq.rabbitmq.reply-to` (direct reply-to), no acks on either side. Nagle's algorithm is off on
 * both connections (`noDelay`), as Parley's RabbitMQ transport sets it: amqplib leaves it on, and
 * a small frame then waits for a delayed ACK.
 */
const rawAmqpRequest: RpcSystem = {
  needs: 'rabbitmq',
  async serve() {
    const amqplib = await import('amqplib');
    const conn = await amqplib.connect(AMQP, { noDelay: true });
    const ch = await conn.createChannel();
    await ch.assertQueue(AMQP_QUEUE, { durable: false, autoDelete: true });
    await ch.consume(
      AMQP_QUEUE,
      (msg) => {
        if (msg === null) return;
        const m = JSON.parse(msg.content.toString('utf8')) as Req;
        ch.sendToQueue(msg.properties.replyTo as string, Buffer.from(JSON.stringify({ sum: m.a + m.b })), {
          correlationId: msg.properties.correlationId as string,
        });
      },
      { noAck: true },
    );
    return { port: 0, close: () => conn.close() };
  },
  async connect() {
    const amqplib = await import('amqplib');
    const conn = await amqplib.connect(AMQP, { noDelay: true });
    const ch = await conn.createChannel();
    const replies = waitingReplies();
    await ch.consume(
      'amq.rabbitmq.reply-to',
      (msg) => {
        if (msg === null) return;
        replies.answer(Number(msg.properties.correlationId), JSON.parse(msg.content.toString('utf8')));
      },
      { noAck: true },
    );
    return {
      call: (req) =>
        replies.call((id) => {
          ch.sendToQueue(AMQP_QUEUE, Buffer.from(JSON.stringify(req)), {
            correlationId: String(id),
            replyTo: 'amq.rabbitmq.reply-to',
          });
        }),
      close: () => conn.close(),
    };
  },
};

/**
 * MQTT 5 request/response with mqtt.js, QoS 0 both ways (as Parley's MQTT transport sends calls):
 * the request carries `Response Topic` (the client's own topic, subscribed first) and
 * `Correlation Data`; the server publishes the answer there with the same correlation data.
 * mqtt.js's defaults otherwise.
 */
const rawMqttRequest: RpcSystem = {
  needs: 'mqtt',
  async serve() {
    const { connectAsync } = await import('mqtt');
    const client = await connectAsync(MQTT, { protocolVersion: 5, clean: true });
    client.on('message', (_topic, payload, packet) => {
      const m = JSON.parse(payload.toString('utf8')) as Req;
      const props = packet.properties;
      if (props?.responseTopic === undefined) return;
      client.publish(props.responseTopic, JSON.stringify({ sum: m.a + m.b }), {
        qos: 0,
        properties: { correlationData: props.correlationData as Buffer },
      });
    });
    await client.subscribeAsync(MQTT_TOPIC, { qos: 1 });
    return { port: 0, close: () => client.endAsync() };
  },
  async connect() {
    const { connectAsync } = await import('mqtt');
    const client = await connectAsync(MQTT, { protocolVersion: 5, clean: true });
    const responseTopic = `${MQTT_TOPIC}/reply/${process.pid}`;
    const replies = waitingReplies();
    client.on('message', (_topic, payload, packet) => {
      const data = packet.properties?.correlationData as Buffer | undefined;
      if (data !== undefined) replies.answer(data.readUInt32BE(0), JSON.parse(payload.toString('utf8')));
    });
    await client.subscribeAsync(responseTopic, { qos: 1 });
    return {
      call: (req) =>
        replies.call((id) => {
          const correlationData = Buffer.alloc(4);
          correlationData.writeUInt32BE(id >>> 0, 0);
          client.publish(MQTT_TOPIC, JSON.stringify(req), {
            qos: 0,
            properties: { responseTopic, correlationData },
          });
        }),
      close: () => client.endAsync(),
    };
  },
};

export const rpcSystems: Record<string, RpcSystem> = {
  'parley tcp': parleyTcp,
  'parley tcp + policies': parleyTcpWith({ policies: true }),
  'parley tcp + metrics': parleyTcpWith({ metrics: true }),
  'parley nats': parleyBus('nats', `${NATS}?prefix=parley-bench`),
  'parley redis': parleyBus('redis', 'redis://127.0.0.1:6379?prefix=parley-bench'),
  'parley rabbitmq': parleyBus('rabbitmq', `${AMQP}?prefix=parley-bench`),
  'parley mqtt': parleyBus('mqtt', `${MQTT}?prefix=parley-bench`),
  'raw node:net': rawNet,
  'raw nats request': rawNatsRequest,
  'raw ioredis request': rawRedisRequest,
  'raw amqplib request': rawAmqpRequest,
  'raw mqtt request': rawMqttRequest,
  'fastify+undici': fastify,
  'parley gateway (tcp)': parleyGateway,
  'fastify → parley tcp': fastifyToParley,
  'moleculer-web': moleculerWeb,
  'node:http': nodeHttp,
  'node:http → parley tcp': nodeHttpToParley,
  'grpc-js': grpc,
  'moleculer tcp': moleculer('tcp'),
  'moleculer tcp + metrics': moleculer('tcp', true),
  'moleculer nats': moleculer('nats'),
  'nestjs tcp': nest('tcp'),
  'nestjs nats': nest('nats'),
};
