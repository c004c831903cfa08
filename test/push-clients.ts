/**
 * Test clients for the gateway's push routes: an SSE reader over node:http that parses the stream
 * as the EventSource spec does (ids, event names, data, comments), and a WebSocket reader. Both
 * record everything they get and wait with bounds.
 */
import { request } from 'node:http';
import { WebSocket } from 'ws';
import { waitFor } from './helpers.ts';

export interface SseMessage {
  /** `message` when the block had no `event:` line. */
  event: string;
  data: string;
  /** The id field of the block, if any. */
  id: string | undefined;
}

export interface SseClient {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Dispatched events (blocks with data). */
  events: SseMessage[];
  /** Comment lines (heartbeats), without the colon. */
  comments: string[];
  /** The EventSource's last event id, as the spec tracks it (id-only blocks count). */
  lastEventId: string;
  /** The body text of a refused request. */
  body: string;
  ended: boolean;
  waitForEvents(n: number, what?: string): Promise<SseMessage[]>;
  waitForEnd(): Promise<void>;
  close(): void;
}

export function openSse(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { accept: 'text/event-stream', ...headers } }, (res) => {
      const client: SseClient = {
        status: res.statusCode ?? 0,
        headers: res.headers,
        events: [],
        comments: [],
        lastEventId: '',
        body: '',
        ended: false,
        waitForEvents: async (n, what = `${n} events`) => {
          await waitFor(() => client.events.length >= n, 5000, what);
          return client.events;
        },
        waitForEnd: () => waitFor(() => client.ended, 5000, 'the stream to end'),
        close: () => req.destroy(),
      };
      res.setEncoding('utf8');
      let buffer = '';
      let block: { event: string; data: string[]; id: string | undefined } = {
        event: '',
        data: [],
        id: undefined,
      };
      res.on('data', (chunk: string) => {
        if (client.status !== 200) {
          client.body += chunk;
          return;
        }
        buffer += chunk;
        for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          if (line === '') {
            if (block.id !== undefined) client.lastEventId = block.id;
            if (block.data.length > 0) {
              client.events.push({
                event: block.event || 'message',
                data: block.data.join('\n'),
                id: block.id,
              });
            }
            block = { event: '', data: [], id: undefined };
          } else if (line.startsWith(':')) {
            client.comments.push(line.slice(1).trim());
          } else {
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (field === 'event') block.event = value;
            else if (field === 'data') block.data.push(value);
            else if (field === 'id') block.id = value;
          }
        }
      });
      const end = () => {
        client.ended = true;
      };
      res.on('end', end);
      res.on('close', end);
      res.on('error', end);
      resolve(client);
    });
    req.on('error', reject);
    req.end();
  });
}

export interface WsMessage {
  type: string;
  id?: string;
  data?: unknown;
}

export interface WsClient {
  socket: WebSocket;
  messages: WsMessage[];
  closeCode: number | undefined;
  pings: number;
  waitForMessages(n: number, what?: string): Promise<WsMessage[]>;
  waitForClose(): Promise<void>;
}

/** Opens a WebSocket; rejects with the HTTP status when the upgrade is refused. */
export function openWs(
  url: string,
  headers: Record<string, string> = {},
  options: { autoPong?: boolean } = {},
): Promise<WsClient> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers, autoPong: options.autoPong ?? true });
    const client: WsClient = {
      socket,
      messages: [],
      closeCode: undefined,
      pings: 0,
      waitForMessages: async (n, what = `${n} messages`) => {
        await waitFor(() => client.messages.length >= n, 5000, what);
        return client.messages;
      },
      waitForClose: () => waitFor(() => client.closeCode !== undefined, 5000, 'the socket to close'),
    };
    socket.on('message', (raw) => client.messages.push(JSON.parse(String(raw)) as WsMessage));
    socket.on('ping', () => void client.pings++);
    socket.on('close', (code) => {
      client.closeCode = code;
    });
    socket.on('open', () => resolve(client));
    socket.on('unexpected-response', (_req, res) => {
      reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode }));
      socket.terminate();
    });
    socket.on('error', (error) => reject(error));
  });
}
