/**
 * The machine's brokers, for adapter tests: a test that needs one asks `needBroker`, which skips
 * it with a clear message when the broker is unreachable, except under CI=true, where an
 * unreachable broker is a failure.
 */
import assert from 'node:assert/strict';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { it } from 'node:test';
import { reachable } from '../bench/lib/net.ts';
import type { BusTransport, BusTransportOptions } from '../src/adapters/bus-transport.ts';
import type { ParleyNode, Transport } from '../src/index.ts';
import { transportConformance } from './conformance/transport.ts';
import { calc, calcService, testNode, waitFor } from './helpers.ts';
import type { PrivateServer } from './private-server.ts';

// The bench makes the same check before it uses a broker.
export { reachable };

export const BROKERS = {
  nats: { port: 4222, url: 'nats://127.0.0.1:4222' },
  redis: { port: 6379, url: 'redis://127.0.0.1:6379' },
  rabbitmq: { port: 5672, url: 'amqp://guest:guest@127.0.0.1:5672' },
  mqtt: { port: 1883, url: 'mqtt://127.0.0.1:1883' },
} as const;

export type BrokerName = keyof typeof BROKERS;

/**
 * `false` when the tests may run; otherwise the reason to skip them. Throws under CI=true.
 * Use as `describe(name, { skip: await needBroker('nats') }, ...)`.
 */
export async function needBroker(name: BrokerName): Promise<false | string> {
  const { port } = BROKERS[name];
  // Twice, patiently: on a loaded machine a connect can take over a second, and a skip (or under
  // CI a failure) should mean the broker is down, not busy.
  if ((await reachable(port, 3000)) || (await reachable(port, 3000))) return false;
  const why = `${name} is not reachable on 127.0.0.1:${port}`;
  if (process.env.CI === 'true') throw new Error(`CI: ${why} (adapter tests must run in CI)`);
  return `${why}: skipped (start it with the command in the machine notes)`;
}

/**
 * A TCP proxy on a free loopback port in front of a broker: `cut()` drops every connection through
 * it, as a network failure would (clients see their connection die and must reconnect); `hold()`
 * stops passing on what the broker sends (the connections stay up and the broker still gets what
 * clients send: its answers are what goes missing).
 */
export async function cuttableProxy(
  brokerPort: number,
): Promise<{ port: number; cut(): void; hold(): void; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const pairs = new Set<{ inbound: Socket; outbound: Socket }>();
  const proxy = createServer((inbound) => {
    const outbound = connect(brokerPort, '127.0.0.1');
    const pair = { inbound, outbound };
    pairs.add(pair);
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        sockets.delete(s);
        pairs.delete(pair);
      });
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const cut = () => {
    for (const s of sockets) s.destroy();
  };
  return {
    port: (proxy.address() as AddressInfo).port,
    cut,
    hold: () => {
      for (const { inbound, outbound } of pairs) {
        outbound.unpipe(inbound);
        outbound.pause();
      }
    },
    close: async () => {
      cut();
      await new Promise((resolve) => proxy.close(resolve));
    },
  };
}

/**
 * The transport conformance suite for a bus transport on `broker` (its own subject prefix, short
 * heartbeats so a crash is noticed quickly), or one skipped test saying why it cannot run.
 */
export function busConformance(
  broker: BrokerName,
  skip: false | string,
  make: (options: BusTransportOptions & { prefix: string }) => BusTransport,
  prefix: string,
  teardown?: () => Promise<void>,
): void {
  if (skip !== false) {
    it(`transport conformance: ${broker}`, { skip }, () => {});
    return;
  }
  transportConformance({
    name: broker,
    create: ({ maxPayload }) => make({ prefix, maxPayload, heartbeatMs: 100, heartbeatTimeoutMs: 600 }),
    crash: (transport) => (transport as BusTransport).destroy(),
    ...(teardown === undefined ? {} : { teardown }),
  });
}

/**
 * A node serving `calc` and a node calling it, each on its own transport from `make` (the same
 * broker and prefix), both started and the client aware of the server; pushed onto `nodes` for
 * the suite's `after` to stop.
 */
export async function calcPair(
  make: (log?: (m: string) => void) => Transport,
  nodes: ParleyNode[],
  serverLog?: (m: string) => void,
): Promise<{ server: ParleyNode; client: ParleyNode }> {
  const server = testNode({ transport: make(serverLog), services: [calcService()] });
  const client = testNode({ transport: make() });
  nodes.push(server, client);
  await server.start();
  await client.start();
  await waitFor(() => client.registry.endpoints('calc').length > 0, 5000, 'discovery');
  return { server, client };
}

/**
 * A bus transport on a private server that takes messages of at most `limit` bytes, made with
 * `maxPayload` above that (`make` passes it and the log on): both nodes lower `maxPayload` to the
 * limit less the message header at start, saying so; a call over it fails at once with
 * RESOURCE_EXHAUSTED (before, it was sent, the server refused it, and the call waited for its
 * deadline); and a turn's burst of 16 calls of `each` characters all get through (before, they
 * could leave in one batch over the limit, and all wait for their deadlines).
 */
export async function serverLimitCase(
  make: (log: (m: string) => void) => Transport,
  limit: number,
  configured: number,
  nodes: ParleyNode[],
  each: number,
): Promise<void> {
  const logs: string[] = [];
  const { client } = await calcPair(() => make((m) => logs.push(m)), nodes);
  const lowered = limit - 262;
  assert.deepEqual(
    logs.filter((l) => /maxPayload lowered/.test(l)),
    Array.from(
      { length: 2 },
      () =>
        `the server takes messages up to ${limit} bytes: maxPayload lowered from ${configured} to ${lowered}`,
    ),
  );
  await assert.rejects(client.client(calc).echo({ text: 'y'.repeat(limit) }, { timeout: 60_000 }), {
    code: 'RESOURCE_EXHAUSTED',
    message: new RegExp(`exceeds the maximum of ${lowered}$`),
  });
  const texts = Array.from({ length: 16 }, (_, i) => `${i}`.padEnd(each, 'z'));
  const replies = await Promise.all(
    texts.map((text) => client.client(calc).echo({ text }, { timeout: 5000 })),
  );
  assert.deepEqual(
    replies.map((r) => r.text),
    texts,
  );
  assert.deepEqual(
    logs.filter((l) => /failed|dropped/.test(l)),
    [],
  );
}

/**
 * A bus transport on a private `server` without a limit that restarts (the same port) taking
 * messages of at most `limit` bytes (`reconfigure(limit)` writes its config), then without it
 * again (`reconfigure(undefined)`): `maxPayload` follows the server down and back up to
 * `configured`, saying so. Before, the limit was read at start only: after the first restart a
 * call over it was dropped by the client (MQTT) or refused by the driver (NATS), and waited for
 * its deadline.
 */
export async function serverLimitRestartCase(
  server: PrivateServer,
  reconfigure: (limit: number | undefined) => void,
  make: (log: (m: string) => void) => BusTransport,
  limit: number,
  configured: number,
  nodes: ParleyNode[],
): Promise<void> {
  const restart = async (to: number | undefined) => {
    reconfigure(to);
    await server.restart(100);
  };
  await server.start();
  const logs: string[] = [];
  // calcPair makes the callee's transport, then the caller's: both log here.
  const made: BusTransport[] = [];
  const { client: caller } = await calcPair(() => {
    const t = make((m) => logs.push(m));
    made.push(t);
    return t;
  }, nodes);
  const callerTransport = made[1] as BusTransport;
  const echo = (text: string, timeout = 5000) => caller.client(calc).echo({ text }, { timeout });
  // Both sides back on the restarted server (the callee subscribed again): a small call answers.
  const reconnected = async () => {
    for (let i = 0; i < 60; i++) {
      const answered = await echo('ping', 500).then(
        () => true,
        () => false,
      );
      if (answered) return;
    }
    assert.fail('no answer after the restart');
  };
  const big = 'b'.repeat(2 * limit);
  assert.equal((await echo(big)).text, big, 'no limit at first');

  await restart(limit);
  await reconnected();
  await assert.rejects(echo(big), { code: 'RESOURCE_EXHAUSTED' });
  const fits = 'f'.repeat(limit / 2);
  assert.equal((await echo(fits)).text, fits);
  assert.ok(callerTransport.maxPayload + 262 <= limit, `maxPayload ${callerTransport.maxPayload}`);

  await restart(undefined);
  await reconnected();
  assert.equal((await echo(big)).text, big, 'raised again');
  assert.equal(callerTransport.maxPayload, configured);
  const said = (how: RegExp) => logs.some((l) => how.test(l));
  assert.ok(said(new RegExp(`maxPayload lowered from ${configured} to \\d+$`)), logs.join('\n'));
  assert.ok(said(new RegExp(`maxPayload raised from \\d+ to ${configured}$`)), logs.join('\n'));
}
