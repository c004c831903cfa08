/**
 * The TCP transport reads a socket read's frames in groups (`READ_GROUP`): the answers to the
 * first group leave before the rest is read, so a caller that sent many requests at once gets
 * work back while the node reads on.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net, { createConnection } from 'node:net';
import { it } from 'node:test';
import { createHub, createTcpTransport } from '../src/index.ts';
import {
  encodeFrame,
  FrameReader,
  FrameType,
  PROTOCOL_VERSION,
  READ_GROUP,
} from '../src/transport/tcp/frames.ts';
import { waitFor } from './helpers.ts';

it('a node answers the first group of one socket read before it reads the rest', async (t) => {
  const hub = await createHub();
  const transport = createTcpTransport({ hub: hub.url });
  const events: string[] = [];
  await transport.start(
    { id: 'server', status: 'up', codec: 'json', services: [] },
    {
      onRequest: async (frame) => {
        events.push(`handle ${frame[0]}`);
        return Buffer.from([frame[0] as number]);
      },
      onBroadcast() {},
      onNodeUp() {},
      onNodeDown() {},
    },
  );
  const address = hub.snapshot().nodes.find((n) => n.info.id === 'server')?.address ?? '';
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  // Writes on the node's side of the connection, in order with the handler's calls.
  const write = net.Socket.prototype.write;
  net.Socket.prototype.write = function (this: net.Socket, ...args: unknown[]) {
    if (this.localPort === port) events.push('write');
    return (write as (...a: unknown[]) => boolean).apply(this, args);
  } as typeof write;
  const socket = createConnection({ host: '127.0.0.1', port });
  t.after(async () => {
    net.Socket.prototype.write = write;
    socket.destroy();
    await transport.stop();
    await hub.close();
  });
  await once(socket, 'connect');
  const n = READ_GROUP + 8;
  const replies: number[] = [];
  const reader = new FrameReader(1024, (f) => void replies.push(f.id), assert.fail);
  socket.on('data', (chunk: Buffer) => reader.push(chunk));
  // The hello and every request in one write: one socket read on the node's side.
  socket.write(
    Buffer.concat([
      encodeFrame(FrameType.Hello, 0, Buffer.from(JSON.stringify({ version: PROTOCOL_VERSION }))),
      ...Array.from({ length: n }, (_, i) => encodeFrame(FrameType.Request, i + 1, Buffer.from([i + 1]))),
    ]),
  );
  await waitFor(() => replies.length === n, 5000, 'every reply');
  assert.deepEqual(
    [...replies].sort((a, b) => a - b),
    Array.from({ length: n }, (_, i) => i + 1),
  );
  // The hello is the first frame of the group; its other frames were handled, and their answers
  // written, before any later request was read.
  assert.ok(events.includes('write'), "the node's writes were recorded");
  const handledBeforeWrite = events.slice(0, events.indexOf('write'));
  assert.ok(handledBeforeWrite.length > 0, events.join(', '));
  assert.ok(handledBeforeWrite.length <= READ_GROUP - 1, events.join(', '));
  assert.equal(events.filter((e) => e.startsWith('handle')).length, n);
});
