/**
 * The TCP transport and the hub over TLS: the whole transport conformance suite, and refusals
 * (an untrusted server, plain TCP on a TLS port, a client certificate no one vouches for).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { after, describe, it } from 'node:test';
import {
  createHub,
  createTcpTransport,
  type Hub,
  ParleyError,
  queryHub,
  type TcpTransport,
} from '../src/index.ts';
import { transportConformance } from './conformance/transport.ts';
import { calc, calcService, testNode, waitFor } from './helpers.ts';

const pem = (name: string) => readFileSync(new URL(`fixtures/tls/${name}`, import.meta.url));
const tls = { ca: pem('ca.pem'), cert: pem('node.pem'), key: pem('node.key') };

let hub: Hub | undefined;
const hubLog: string[] = [];
const getHub = async () => {
  hub ??= await createHub({ maxPayload: 1024 * 1024, tls, log: (m) => void hubLog.push(m) });
  return hub;
};
after(async () => {
  await hub?.close();
});

transportConformance({
  name: 'tcp over TLS (via hub)',
  create: async ({ maxPayload }) => createTcpTransport({ hub: (await getHub()).url, maxPayload, tls }),
  crash: (transport) => (transport as TcpTransport).destroy(),
});

describe('TLS refusals', () => {
  it('a node that does not trust the hub certificate cannot join', async () => {
    const h = await getHub();
    const transport = createTcpTransport({ hub: h.url, tls: { ca: pem('other.pem') }, log: () => undefined });
    await assert.rejects(
      testNode({ id: 'doubter', transport }).start(),
      (e: unknown) => e instanceof ParleyError && e.code === 'UNAVAILABLE',
    );
    await assert.rejects(
      queryHub(h.url, { tls: { ca: pem('other.pem') } }),
      (e: unknown) => e instanceof ParleyError,
    );
  });

  it('plain TCP on the TLS port is closed and logged; the hub serves TLS clients on', async () => {
    const h = await getHub();
    const before = hubLog.length;
    const socket = createConnection({ host: '127.0.0.1', port: h.port });
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    socket.write(Buffer.from([0, 0, 0, 5, 10, 0, 0, 0, 0]));
    await once(socket, 'close');
    await waitFor(() => hubLog.slice(before).some((l) => /TLS handshake failed/.test(l)), 2000, 'logged');
    const snapshot = await queryHub(h.url, { tls });
    assert.ok(Array.isArray(snapshot.nodes));
  });

  it('mutual TLS: a client certificate the CA did not sign is refused; a signed one is let in', async () => {
    const log: string[] = [];
    const strict = await createHub({
      tls: { ...tls, requireClientCert: true },
      log: (m) => void log.push(m),
    });
    try {
      const stranger = createTcpTransport({
        hub: strict.url,
        tls: { ca: pem('ca.pem'), cert: pem('other.pem'), key: pem('other.key') },
        log: () => undefined,
      });
      await assert.rejects(testNode({ id: 'stranger', transport: stranger }).start());
      await waitFor(() => log.some((l) => /TLS handshake failed/.test(l)), 2000, 'the hub logs the refusal');

      const server = testNode({
        id: 's',
        transport: createTcpTransport({ hub: strict.url, tls: { ...tls, requireClientCert: true } }),
        services: [calcService()],
      });
      const caller = testNode({
        id: 'c',
        transport: createTcpTransport({ hub: strict.url, tls: { ...tls, requireClientCert: true } }),
      });
      await server.start();
      await caller.start();
      assert.deepEqual(await caller.client(calc).add({ a: 1, b: 2 }), { sum: 3 });
      await caller.stop();
      await server.stop();
    } finally {
      await strict.close();
    }
  });
});
