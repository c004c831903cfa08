/**
 * Multipart uploads the service stops reading before the file ends: the gateway still reads (and
 * drops) the rest of the body, so the connection answers its next request and does not hold the
 * gateway's close.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, describe, it } from 'node:test';
import {
  createGateway,
  createMemoryNetwork,
  defineContract,
  implement,
  ParleyError,
  UploadChunk,
  z,
} from '../src/index.ts';
import { testNode, waitFor } from './helpers.ts';

const files = defineContract({
  name: 'files',
  version: '1.0.0',
  actions: {
    /** Refuses the file once it has seen its first piece, without reading on. */
    picky: {
      input: UploadChunk,
      output: z.object({ bytes: z.number() }),
      public: true,
      stream: 'input',
      http: 'POST /picky',
    },
  },
});

const boundary = 'parley-upload-boundary';

/** One chunk of a `Transfer-Encoding: chunked` body. */
const chunked = (data: Buffer | string) => {
  const bytes = Buffer.from(data);
  return Buffer.concat([Buffer.from(`${bytes.length.toString(16)}\r\n`), bytes, Buffer.from('\r\n')]);
};

for (const inProcess of [true, false]) {
  describe(`gateway upload the service stops reading, ${inProcess ? 'in process' : 'over the memory transport'}`, async () => {
    let pieces = 0;
    const net = createMemoryNetwork();
    const service = testNode({
      transport: net.transport(),
      services: [
        implement(files, {
          actions: {
            picky: async (chunks) => {
              for await (const chunk of chunks) {
                void chunk;
                pieces++;
                throw new ParleyError('FAILED_PRECONDITION', 'not this file');
              }
              return { bytes: 0 };
            },
          },
        }),
      ],
    });
    const edge = inProcess ? service : testNode({ transport: net.transport() });
    await service.start();
    if (edge !== service) await edge.start();
    await waitFor(() => edge.registry.endpoints('files').length > 0, 5000, 'files in the registry');
    const gateway = createGateway({ node: edge, contracts: [files], closeTimeout: 5000 });
    after(async () => {
      await gateway.close();
      if (edge !== service) await edge.stop();
      await service.stop();
    });
    const { url } = await gateway.listen();

    it('reads the rest of the body, answers the next request on the connection, and closes at once', async () => {
      const socket = connect({ host: '127.0.0.1', port: Number(new URL(url).port) });
      after(() => void socket.destroy());
      socket.on('error', () => undefined);
      let got = '';
      socket.on('data', (d: Buffer) => {
        got += d.toString('latin1');
      });
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.write(
        'POST /api/picky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n' +
          `Content-Type: multipart/form-data; boundary=${boundary}\r\n\r\n`,
      );
      socket.write(
        chunked(
          `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n` +
            'Content-Type: application/octet-stream\r\n\r\n',
        ),
      );
      // 8 MiB: far more than the socket and stream buffers between the client and the service.
      const piece = chunked(Buffer.alloc(64 * 1024, 'x'));
      for (let i = 0; i < 128; i++) socket.write(piece);
      socket.write(chunked(`\r\n--${boundary}--\r\n`));
      socket.write('0\r\n\r\n');
      // The same connection, once the upload's body has been read.
      socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      await waitFor(() => /^HTTP\/1\.1 400 /.test(got), 5000, 'the refusal');
      assert.equal(pieces > 0, true, 'the service saw the file');
      await waitFor(() => got.includes('{"status":"ok"}'), 5000, 'the answer to the next request');
      const answers = got.match(/HTTP\/1\.1 \d+/g);
      assert.deepEqual(answers, ['HTTP/1.1 400', 'HTTP/1.1 200']);
      // The connection is idle again: the close does not wait for it.
      const started = Date.now();
      await gateway.close();
      assert.ok(Date.now() - started < 2500, `closed in ${Date.now() - started} ms`);
    });
  });
}
