/**
 * The MQTT transport passes the transport conformance suite against the machine's Mosquitto, and
 * shrugs off garbage published on its topics by anyone on the broker.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { safeId } from '../src/adapters/bus-transport.ts';
import { connectMqtt } from '../src/adapters/mqtt/connect.ts';
import { createMqttTransport } from '../src/adapters/mqtt/mqtt-transport.ts';
import { defineContract, type ParleyNode, subscribe, z } from '../src/index.ts';
import {
  BROKERS,
  busConformance,
  calcPair,
  cuttableProxy,
  needBroker,
  serverLimitRestartCase,
} from './brokers.ts';
import { calc, calcService, testNode, waitFor } from './helpers.ts';
import {
  MOSQUITTO,
  needBinary,
  privateMosquitto,
  privateServerScope,
  reconfigureMosquitto,
} from './private-server.ts';

const skip = await needBroker('mqtt');
const prefix = `parley-test-${process.pid}`;

busConformance('mqtt', skip, (options) => createMqttTransport({ url: BROKERS.mqtt.url, ...options }), prefix);

describe('mqtt transport: bad input', { skip }, () => {
  const nodes: ParleyNode[] = [];
  after(async () => {
    await Promise.allSettled(nodes.map((n) => n.stop()));
  });

  /** A node serving calc and a client that sees it, on `url`, each logging into its own list. */
  async function servedPair(own: string, url: string = BROKERS.mqtt.url) {
    const logs: string[] = [];
    const clientLogs: string[] = [];
    const server = testNode({
      transport: createMqttTransport({ url, prefix: own, log: (m) => logs.push(m) }),
      services: [calcService()],
      stopTimeout: 200,
    });
    const client = testNode({
      transport: createMqttTransport({ url: BROKERS.mqtt.url, prefix: own, log: (m) => clientLogs.push(m) }),
    });
    nodes.push(server, client);
    await server.start();
    await client.start();
    await waitFor(() => client.registry.endpoints('calc').length > 0, 5000, 'discovery');
    return { server, client, logs, clientLogs };
  }

  it('drops malformed messages on the inbox and presence topics, and keeps serving', async () => {
    const own = `${prefix}-bad`;
    const { server, client, logs, clientLogs } = await servedPair(own);
    assert.deepEqual(await client.client(calc).add({ a: 1, b: 2 }), { sum: 3 });

    const mqtt = await import('mqtt');
    const raw = await mqtt.connectAsync(BROKERS.mqtt.url, { protocolVersion: 5, reconnectPeriod: 0 });
    try {
      const inbox = `${own}/node/${safeId(server.id)}`;
      const presence = `${own}/presence`;
      const garbage = [
        Buffer.from([1, 2]), // shorter than any header
        Buffer.from([99, 0, 0, 0, 1, 0]), // an unknown kind
        Buffer.from([1, 0, 0, 0, 1, 40, 65]), // a sender id longer than the message
      ];
      const badHello = Buffer.concat([Buffer.from([5, 0, 0, 0, 0, 1]), Buffer.from('xnot json')]);
      for (const payload of garbage) {
        await raw.publishAsync(inbox, payload, { qos: 1 });
        await raw.publishAsync(presence, payload, { qos: 1 });
      }
      await raw.publishAsync(presence, badHello, { qos: 1 });
    } finally {
      await raw.endAsync();
    }

    await waitFor(
      () => logs.filter((l) => l.startsWith('dropped')).length >= 7,
      5000,
      'the drops to be logged',
    );
    assert.equal(logs.filter((l) => /^dropped .* on inbox$/.test(l)).length, 3, logs.join('\n'));
    assert.equal(logs.filter((l) => /^dropped .* on presence$/.test(l)).length, 3, logs.join('\n'));
    assert.ok(
      logs.some((l) => l === 'dropped a hello from x: not JSON'),
      logs.join('\n'),
    );
    // The node is still known and still answers.
    assert.equal(client.registry.endpoints('calc')[0]?.nodeId, server.id);
    assert.deepEqual(await client.client(calc).add({ a: 2, b: 3 }), { sum: 5 });
    // The client saw the presence garbage too, and dropped it the same way.
    assert.ok(
      clientLogs.some((l) => l === 'dropped a hello from x: not JSON'),
      clientLogs.join('\n'),
    );
  });

  it('a request whose Response Topic no client may publish to gets no reply, and the node stays connected', async () => {
    const own = `${prefix}-badreply`;
    const { server, client, logs } = await servedPair(own);
    const { encodeFrame, Kind } = await import('../src/adapters/bus-frames.ts');
    const mqtt = await import('mqtt');
    const raw = await mqtt.connectAsync(BROKERS.mqtt.url, { protocolVersion: 5, reconnectPeriod: 0 });
    try {
      const inbox = `${own}/node/${safeId(server.id)}`;
      // A call the node runs (its reply is what has nowhere to go).
      const call = JSON.stringify({
        specversion: '1.0',
        id: randomUUID(),
        source: '/parley/x',
        type: 'calc.add',
        deadline: Date.now() + 5000,
        data: { a: 1, b: 2 },
      });
      const request = Buffer.from(
        encodeFrame(Kind.REQUEST, 1, new TextEncoder().encode('x'), Buffer.from(call)),
      );
      // (One with a NUL cannot be sent: Mosquitto ends the sender's connection for it.)
      for (const responseTopic of ['x/#', 'x/+/y', '#'])
        await raw.publishAsync(inbox, request, { qos: 0, properties: { responseTopic } });
    } finally {
      await raw.endAsync();
    }
    await waitFor(() => logs.filter((l) => l.includes('dropped a reply to')).length === 3, 5000, 'the drops');
    // Still connected: every call goes through at once (a dropped connection fails some).
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => client.client(calc).add({ a: i, b: 1 }, { timeout: 2000 })),
    );
    assert.deepEqual(
      results.map((r) => r.sum),
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
    assert.ok(!logs.some((l) => /disconnected us|reconnect/i.test(l)), logs.join('\n'));
  });

  it('requests carry an MQTT 5 Response Topic and the replies go to it, calls at QoS 0 and presence at QoS 1', async () => {
    const own = `${prefix}-reply`;
    const { client } = await calcPair(
      () => createMqttTransport({ url: BROKERS.mqtt.url, prefix: own }),
      nodes,
    );
    const mqtt = await import('mqtt');
    const raw = await mqtt.connectAsync(BROKERS.mqtt.url, { protocolVersion: 5, reconnectPeriod: 0 });
    const requests: (string | undefined)[] = [];
    const replies: string[] = [];
    // QoS of each kind of message as it arrives here (subscribed at 1: a message keeps the QoS it was published with).
    const qos = { request: new Set<number>(), reply: new Set<number>(), presence: new Set<number>() };
    try {
      raw.on('message', (topic, _payload, packet) => {
        if (topic.startsWith(`${own}/node/`)) {
          requests.push(packet.properties?.responseTopic);
          qos.request.add(packet.qos);
        } else if (topic.startsWith(`${own}/reply/`)) {
          replies.push(topic);
          qos.reply.add(packet.qos);
        } else if (topic === `${own}/presence`) qos.presence.add(packet.qos);
      });
      await raw.subscribeAsync([`${own}/node/+`, `${own}/reply/+`, `${own}/presence`], { qos: 1 });
      const sums = await Promise.all([1, 2, 3].map((a) => client.client(calc).add({ a, b: 1 })));
      assert.deepEqual(
        sums.map((s) => s.sum),
        [2, 3, 4],
      );
      await waitFor(() => replies.length > 0, 2000, 'the replies to be seen');
      // A heartbeat (every 2 s by default) shows the presence topic's QoS.
      await waitFor(() => qos.presence.size > 0, 5000, 'a heartbeat to be seen');
    } finally {
      await raw.endAsync();
    }
    assert.deepEqual([...qos.request], [0], 'requests travel at QoS 0');
    assert.deepEqual([...qos.reply], [0], 'replies travel at QoS 0');
    assert.deepEqual([...qos.presence], [1], 'presence travels at QoS 1');
    assert.ok(requests.length > 0);
    const replyTopic = requests[0];
    assert.match(String(replyTopic), new RegExp(`^${own}/reply/parley_[0-9a-f]+$`));
    for (const r of requests) assert.equal(r, replyTopic, 'every request names the same reply topic');
    for (const r of replies) assert.equal(r, replyTopic, 'replies go to the Response Topic');
  });

  it('reconnects after the connection drops, resubscribes, and serves again', async () => {
    const own = `${prefix}-cut`;
    // A proxy whose connections the test cuts, as a network failure would.
    const proxy = await cuttableProxy(BROKERS.mqtt.port);
    const { port } = proxy;
    try {
      const { server, client, logs } = await servedPair(own, `mqtt://127.0.0.1:${port}`);
      assert.deepEqual(await client.client(calc).add({ a: 1, b: 2 }), { sum: 3 });

      proxy.cut();
      await waitFor(() => logs.some((l) => l.includes('reconnected')), 5000, 'the reconnect');
      assert.ok(
        logs.some((l) => l.includes('lost the connection')),
        logs.join('\n'),
      );
      // The resubscription races the first call after the reconnect: try a few times.
      let out: { sum: number } | undefined;
      for (let i = 0; i < 10 && out === undefined; i++) {
        out = await client
          .client(calc)
          .add({ a: 2, b: 3 }, { timeout: 300 })
          .catch(() => undefined);
      }
      assert.deepEqual(out, { sum: 5 });
      assert.equal(client.registry.endpoints('calc')[0]?.nodeId, server.id);
    } finally {
      await Promise.allSettled(nodes.splice(0).map((n) => n.stop()));
      await proxy.close();
    }
  });
});

describe('mqtt connection: Nagle', { skip }, () => {
  // With Nagle's algorithm on (mqtt.js's default socket), a packet written right after a PUBACK
  // waits for the broker's delayed ACK. Measured when calls still went at QoS 1: 86–94 ms a call
  // one at a time, 46 ms with Nagle off here, 3.7 ms with Mosquitto's `set_tcp_nodelay true` too.
  // The broker adapter's publishes and acks are QoS 1.
  it('turns it off on the socket of every connection, the first and each reconnect', async () => {
    const proxy = await cuttableProxy(BROKERS.mqtt.port);
    const turnedOff = new Set<Socket>();
    const original = Socket.prototype.setNoDelay;
    Socket.prototype.setNoDelay = function (this: Socket, noDelay?: boolean) {
      if (noDelay === true) turnedOff.add(this);
      return original.call(this, noDelay);
    };
    const logs: string[] = [];
    let client: Awaited<ReturnType<typeof connectMqtt>>['client'] | undefined;
    try {
      ({ client } = await connectMqtt(`mqtt://127.0.0.1:${proxy.port}`, (m) => logs.push(m)));
      const first = client.stream as unknown as Socket;
      assert.ok(turnedOff.has(first), 'the first connection has Nagle off');
      proxy.cut();
      await waitFor(() => logs.some((l) => l.includes('reconnected')), 5000, 'the reconnect');
      const second = client.stream as unknown as Socket;
      assert.notEqual(second, first, 'a reconnect opens a new socket');
      assert.ok(turnedOff.has(second), 'the reconnected socket has Nagle off too');
    } finally {
      Socket.prototype.setNoDelay = original;
      await client?.endAsync(true);
      await proxy.close();
    }
  });
});

describe('mqtt transport: the server’s maximum packet size', {
  skip: skip || needBinary(MOSQUITTO, '-h'),
}, () => {
  const LIMIT = 4096;
  const notes = defineContract({
    name: 'notes',
    version: '1.0.0',
    actions: {},
    events: { 'note.made': { schema: z.object({ text: z.string() }), version: 1 } },
  });
  const { nodes, use } = privateServerScope();

  it('frames and batches are kept within it: over it fails at once, the rest all arrive', async () => {
    const server = use(
      await privateMosquitto('mqtt-transport-small', () => ['persistence false', `max_packet_size ${LIMIT}`]),
    );
    await server.start();
    const url = `mqtt://127.0.0.1:${server.port}`;
    const own = `${prefix}-size`;
    const got: string[] = [];
    const logs: string[] = [];
    const log = (m: string) => void logs.push(m);
    const calleeTransport = createMqttTransport({ url, prefix: own, log });
    const callee = testNode({
      transport: calleeTransport,
      services: [
        calcService({}, [subscribe(notes, 'note.made', (p) => void got.push(p.text), { ephemeral: true })]),
      ],
      stopTimeout: 200,
    });
    // The default maxPayload (1 MiB − 1 KiB) is far above what this server takes.
    const callerTransport = createMqttTransport({ url, prefix: own, log });
    const caller = testNode({ transport: callerTransport });
    nodes.push(callee, caller);
    await callee.start();
    await caller.start();
    await waitFor(() => caller.registry.endpoints('calc').length > 0, 5000, 'discovery');
    const lowered = logs
      .map((l) =>
        /^the server takes messages up to (\d+) bytes: maxPayload lowered from 1047552 to (\d+)$/.exec(l),
      )
      .filter((m) => m !== null);
    assert.equal(lowered.length, 2, logs.join('\n'));
    const max = callerTransport.maxPayload;
    assert.equal(calleeTransport.maxPayload, max);
    assert.equal(Number(lowered[0]?.[2]), max);
    assert.ok(max > LIMIT / 2 && max + 262 + 1024 <= LIMIT, `maxPayload ${max}`);

    // Over it: refused at once, before anything is sent. Before, the notification (QoS 1) cost the
    // connection and came back on every reconnect, and the call waited for its deadline.
    await assert.rejects(async () => caller.notify(notes, 'note.made', { text: 'x'.repeat(LIMIT) }), {
      code: 'RESOURCE_EXHAUSTED',
    });
    await assert.rejects(caller.client(calc).echo({ text: 'y'.repeat(LIMIT) }, { timeout: 60_000 }), {
      code: 'RESOURCE_EXHAUSTED',
    });
    // Many small ones in one turn: batched within the server's limit. Before, 16 calls of 300
    // characters left in one message over it, which the transport dropped: every one of them
    // failed at its deadline; and so were the ten notifications.
    const texts = Array.from({ length: 16 }, (_, i) => `${i}`.padEnd(300, 'z'));
    const replies = await Promise.all(
      texts.map((text) => caller.client(calc).echo({ text }, { timeout: 5000 })),
    );
    assert.deepEqual(
      replies.map((r) => r.text),
      texts,
    );
    const notes10 = Array.from({ length: 10 }, (_, i) => `${i}`.padEnd(400, 'n'));
    for (const text of notes10) await caller.notify(notes, 'note.made', { text });
    await waitFor(() => got.length >= 10, 5000, 'ten notes');
    assert.deepEqual(got, notes10);
    assert.deepEqual(
      logs.filter((l) => /dropped/.test(l)),
      [],
    );
  });
  it('a restart with another limit is followed: down at once, and back up', async () => {
    const server = use(await privateMosquitto('mqtt-transport-resize', () => ['persistence false']));
    const url = `mqtt://127.0.0.1:${server.port}`;
    await serverLimitRestartCase(
      server,
      (limit) =>
        reconfigureMosquitto(server, ['persistence false', ...(limit ? [`max_packet_size ${limit}`] : [])]),
      (log) => createMqttTransport({ url, prefix: `${prefix}-resize`, log }),
      LIMIT,
      1024 * 1024 - 1024,
      nodes,
    );
  });
});
