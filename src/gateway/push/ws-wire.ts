/**
 * @module gateway/push/ws-wire
 * WebSocket framing: one JSON text message per event, `{ id, type, data }`; control messages
 * `{ type: 'reset' | 'bye' | 'ready', id?, data? }`. Heartbeats are ping frames; a client that
 * did not answer the previous ping with a pong is dead and is terminated.
 */
import type { WebSocket } from 'ws';
import type { Wire } from './connection.ts';
import type { PushedEvent } from './history.ts';

/** Close code for a server going away (RFC 6455 §7.4.1). */
const GOING_AWAY = 1001;

export function wsWire(socket: WebSocket): Wire {
  let alive = true;
  socket.on('pong', () => {
    alive = true;
  });
  const send = (text: string) => {
    if (socket.readyState === socket.OPEN) socket.send(text);
  };
  return {
    protocol: 'ws',
    buffered: () => socket.bufferedAmount,
    // The payload is already JSON: spliced in, not parsed and serialised again per connection.
    event: (e: PushedEvent) =>
      send(`{"id":${JSON.stringify(e.id)},"type":${JSON.stringify(e.type)},"data":${e.data}}`),
    control: (type, data, id) => send(JSON.stringify({ type, ...(id === undefined ? {} : { id }), data })),
    mark: (id) => send(JSON.stringify({ type: 'ready', id })),
    heartbeat: () => {
      if (socket.readyState !== socket.OPEN) return;
      if (!alive) {
        socket.terminate();
        return;
      }
      alive = false;
      socket.ping();
    },
    end: () => socket.close(GOING_AWAY, 'server going away'),
    destroy: () => socket.terminate(),
    onClose: (listener) => void socket.on('close', listener),
  };
}
