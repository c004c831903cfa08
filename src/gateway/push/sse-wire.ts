/**
 * @module gateway/push/sse-wire
 * Server-Sent Events framing on a hijacked Fastify reply. Every event carries its id so the
 * browser's EventSource sends it back as `Last-Event-ID` when it reconnects; id-only blocks (no
 * `data`, so no event fires) move that cursor forward for a client that saw nothing for itself.
 */
import type { ServerResponse } from 'node:http';
import type { Wire } from './connection.ts';
import type { PushedEvent } from './history.ts';

export function sseWire(
  res: ServerResponse,
  retryMs: number,
  headers: Record<string, string | string[] | number> = {},
): Wire {
  res.writeHead(200, {
    ...headers,
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    // Reverse proxies (nginx) buffer responses unless told otherwise.
    'x-accel-buffering': 'no',
  });
  res.write(`retry: ${retryMs}\n\n`);
  // Write errors (the client went away) surface as 'close'; without a listener they would throw.
  res.on('error', () => res.destroy());
  const write = (chunk: string) => {
    if (!res.destroyed && !res.writableEnded) res.write(chunk);
  };
  return {
    protocol: 'sse',
    buffered: () => res.writableLength,
    event: (e: PushedEvent) => write(`id: ${e.id}\nevent: ${e.type}\ndata: ${e.data}\n\n`),
    control: (type, data, id) =>
      write(`${id === undefined ? '' : `id: ${id}\n`}event: ${type}\ndata: ${JSON.stringify(data)}\n\n`),
    mark: (id) => write(`id: ${id}\n\n`),
    heartbeat: (id) => write(`: heartbeat\nid: ${id}\n\n`),
    end: () => {
      if (!res.writableEnded) res.end();
    },
    destroy: () => res.destroy(),
    onClose: (listener) => void res.on('close', listener),
  };
}
