/**
 * The NATS transport passes the transport conformance suite against the machine's NATS server,
 * packs a burst of calls into batches, shrugs off malformed batches published on its inbox, and
 * keeps its frames within a server's smaller `max_payload`.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { decodeMessage, Kind } from '../src/adapters/bus-frames.ts';
import { safeId } from '../src/adapters/bus-transport.ts';
import { createNatsTransport } from '../src/adapters/nats/nats-transport.ts';
import type { ParleyNode } from '../src/index.ts';
import {
  BROKERS,
  busConformance,
  calcPair,
  needBroker,
  serverLimitCase,
  serverLimitRestartCase,
} from './brokers.ts';
import { calc, waitFor } from './helpers.ts';
import {
  NATS_SERVER,
  needBinary,
  privateNats,
  privateServerScope,
  reconfigureNats,
} from './private-server.ts';

const skip = await needBroker('nats');
const prefix = `parley-test-${process.pid}`;

busConformance('nats', skip, (options) => createNatsTransport({ url: BROKERS.nats.url, ...options }), prefix);

describe('nats transport: batches', { skip }, () => {
  const nodes: ParleyNode[] = [];
  after(async () => {
    await Promise.allSettled(nodes.map((n) => n.stop()));
  });

  it('a burst of calls travels in batches, and malformed batches are dropped with a reason', async () => {
    const own = `${prefix}-batch`;
    const logs: string[] = [];
    const { server, client } = await calcPair(
      (log) => createNatsTransport({ url: BROKERS.nats.url, prefix: own, ...(log ? { log } : {}) }),
      nodes,
      (m) => logs.push(m),
    );

    const { connect } = await import('@nats-io/transport-node');
    const nc = await connect({ servers: `127.0.0.1:${BROKERS.nats.port}` });
    try {
      const inbox = `${own}.node.${safeId(server.id)}`;
      const seen: number[] = [];
      nc.subscribe(inbox, {
        callback: (_err, msg) => {
          const frames = decodeMessage(msg.data);
          if (Array.isArray(frames)) seen.push(frames.length);
        },
      });
      await nc.flush();
      // 100 calls made in one turn: the first leaves alone, the rest in batches.
      const sums = await Promise.all(
        Array.from({ length: 100 }, (_, i) => client.client(calc).add({ a: i, b: 1 })),
      );
      assert.deepEqual(
        sums.map((s) => s.sum),
        Array.from({ length: 100 }, (_, i) => i + 1),
      );
      await nc.flush();
      assert.equal(
        seen.reduce((a, b) => a + b, 0),
        100,
      );
      assert.ok(seen.length < 20, `100 requests took ${seen.length} messages`);
      assert.ok(Math.max(...seen) > 1);

      const head = (count: number) => [Kind.BATCH, 0, 0, 0, count, 1, 120];
      const garbage = [
        [...head(0)],
        [...head(2), Kind.REQUEST, 0, 0, 0, 1, 0, 0, 0, 1, 65], // one frame of two
        [...head(1), Kind.REQUEST, 0, 0, 0, 1, 0, 0, 0, 9, 65], // a length past the end
        [...head(1), Kind.BATCH, 0, 0, 0, 1, 0, 0, 0, 0], // a batch inside a batch
      ];
      for (const g of garbage) nc.publish(inbox, Uint8Array.from(g));
      await nc.flush();
    } finally {
      await nc.close();
    }
    await waitFor(() => logs.filter((l) => l.startsWith('dropped')).length >= 4, 5000, 'the drops');
    assert.deepEqual(
      logs.filter((l) => l.startsWith('dropped')),
      [
        'dropped a batch of 0 frames on inbox',
        'dropped a batch cut short on inbox',
        'dropped a batch cut short on inbox',
        'dropped an unknown message kind 9 in a batch on inbox',
      ],
    );
    assert.deepEqual(await client.client(calc).add({ a: 2, b: 3 }), { sum: 5 });
  });
});

describe('nats transport: a server with a small max_payload', {
  skip: skip || needBinary(NATS_SERVER, '--version'),
}, () => {
  const LIMIT = 4096;
  const { nodes, use } = privateServerScope();

  it('lowers maxPayload to it: a call over it fails at once, a burst of small ones all get through', async () => {
    const server = use(await privateNats('nats-transport-small', [`max_payload: ${LIMIT}`]));
    await server.start();
    const url = `nats://127.0.0.1:${server.port}`;
    await serverLimitCase(
      (log) => createNatsTransport({ url, prefix, log }),
      LIMIT,
      1024 * 1024 - 1024,
      nodes,
      400,
    );
  });

  it('a restart with another limit is followed: down at once, and back up', async () => {
    const server = use(await privateNats('nats-transport-resize', []));
    const url = `nats://127.0.0.1:${server.port}`;
    await serverLimitRestartCase(
      server,
      (limit) => reconfigureNats(server, limit ? [`max_payload: ${limit}`] : []),
      (log) => createNatsTransport({ url, prefix: `${prefix}-resize`, log }),
      LIMIT,
      1024 * 1024 - 1024,
      nodes,
    );
  });
});
