/**
 * @module transport/tcp/frames
 * The wire format of the TCP transport and the hub: length-prefixed frames.
 *
 *   [u32 BE length of the rest][u8 type][u32 BE id][payload]
 *
 * A length above the configured maximum is rejected from the 4-byte header, before anything is
 * allocated for the frame; an unknown type closes the connection. Writes are queued and flushed
 * once per turn of the event loop, so many small frames leave in one `write`.
 */
import type { Socket } from 'node:net';
import { ParleyError } from '../../errors.ts';

export const FrameType = {
  /** Node → node: a request (id = correlation). */
  Request: 1,
  /** Node → node: a reply frame. */
  Reply: 2,
  /** Node → node: the transport failed the request (payload: wire error JSON). */
  Failure: 3,
  /** Node → node: the caller gave up on request `id`. */
  Cancel: 4,
  /** Node → hub → every other node: a notification. */
  Broadcast: 5,
  /**
   * Node → hub: join or update (payload: JSON { version, token?, info, address }).
   * Node → node: the first frame of a connection (payload: JSON { version, token? }).
   */
  Hello: 10,
  /** Hub → node: a node is up or changed (payload: JSON { info, address }). */
  NodeUp: 11,
  /** Hub → node: a node is gone (payload: JSON { id }). */
  NodeDown: 12,
  /** Node → hub: still alive. */
  Ping: 13,
  /** Anyone → hub: who is there? (id = correlation). Hub → asker: JSON { nodes, broker }. */
  Members: 14,
  /** Hub → node: the snapshot of other nodes is complete (payload: JSON { broker? }). */
  Welcome: 15,
  /** Broker client → hub: an operation on the hub's broker (JSON { op, args }; id = correlation). */
  BrokerCall: 16,
  /** Hub → broker client: its result (JSON { ok, value } or { ok: false, error }). */
  BrokerResult: 17,
  /** Hub → broker client: a delivery to one of its consumers (id = delivery). */
  Deliver: 18,
  /** Broker client → hub: delivery `id` handled (JSON { ok } or { ok: false, error }). */
  Settle: 19,
} as const;

export type FrameType = (typeof FrameType)[keyof typeof FrameType];

const KNOWN = new Set<number>(Object.values(FrameType));
const HEADER = 9;

export const PROTOCOL_VERSION = 1;

export interface Frame {
  type: FrameType;
  id: number;
  payload: Buffer;
}

/**
 * Splits a byte stream into frames; `onError` gets the reason when the stream is not ours.
 *
 * With a `group`, one callback hands over at most that many frames and leaves the rest of the
 * socket read for a `setImmediate` callback of its own, in order, before anything read later.
 * Node runs the microtasks between two callbacks, so what the first group's requests answered
 * leaves (the writer sends a full batch at once) while the next group is read, and the peer
 * works on it meanwhile. Without it, every request of a read ran before any answer left: two
 * processes in a closed loop took turns, as a trace of the bus transports showed (see
 * `adapters/read-queue.ts`).
 */
export class FrameReader {
  /** Bytes not read yet: an incomplete frame, or frames left for a later callback. */
  private rest: Buffer | undefined;
  private failed = false;
  /** A `setImmediate` will read on in `rest`. */
  private resuming = false;
  /** Held by the reader's owner (`hold`): frames wait in `rest` until `release`. */
  private held = false;

  constructor(
    private readonly maxPayload: number,
    private readonly onFrame: (frame: Frame) => void,
    private readonly onError: (reason: string) => void,
    private readonly group = Number.POSITIVE_INFINITY,
  ) {}

  push(chunk: Buffer): void {
    if (this.failed) return;
    if (this.rest !== undefined) {
      this.rest = Buffer.concat([this.rest, chunk]);
      // Frames of an earlier read are waiting: these are read after them.
      if (this.resuming || this.held) return;
    } else this.rest = chunk;
    if (!this.held) this.read();
  }

  /**
   * Hands over no more frames until `release`, even those of a read already taken from the
   * socket (pausing the socket alone stopped only the reads after it: a caller that sent 5,000
   * requests in one write had them all running past `maxConcurrent`).
   */
  hold(): void {
    this.held = true;
  }

  release(): void {
    if (!this.held) return;
    this.held = false;
    if (this.rest !== undefined && !this.resuming && !this.failed) {
      this.resuming = true;
      setImmediate(this.resume);
    }
  }

  /** Reads what `socket` receives, and stops when it closes. */
  attach(socket: Socket): void {
    socket.on('data', (chunk: Buffer) => this.push(chunk));
    socket.on('close', () => this.stop());
  }

  /** Reads nothing more; frames waiting for their turn are dropped (the connection is gone). */
  stop(): void {
    this.failed = true;
    this.rest = undefined;
  }

  private readonly resume = (): void => {
    this.resuming = false;
    if (!this.failed && !this.held && this.rest !== undefined) this.read();
  };

  private read(): void {
    const buf = this.rest as Buffer;
    this.rest = undefined;
    // Frames are read in place: one view per payload, no copy.
    let at = 0;
    let handed = 0;
    const end = buf.length;
    while (end - at >= 4) {
      const length = buf.readUInt32BE(at);
      if (length < HEADER - 4 || length - (HEADER - 4) > this.maxPayload) {
        this.fail(`frame of ${length} bytes is over the maximum of ${this.maxPayload}`);
        return;
      }
      if (end - at < 4 + length) break;
      if (this.held) break;
      if (handed === this.group) {
        this.resuming = true;
        setImmediate(this.resume);
        break;
      }
      const type = buf[at + 4] as number;
      if (!KNOWN.has(type)) {
        this.fail(`unknown frame type ${type}`);
        return;
      }
      const id = buf.readUInt32BE(at + 5);
      const payload = buf.subarray(at + HEADER, at + 4 + length);
      at += 4 + length;
      handed++;
      this.onFrame({ type: type as FrameType, id, payload });
      if (this.failed) return;
    }
    if (at < end) this.rest = at === 0 ? buf : buf.subarray(at);
  }

  private fail(reason: string): void {
    this.failed = true;
    this.rest = undefined;
    this.onError(reason);
  }
}

/**
 * A frame's payload as a JSON object (not null, not an array), or undefined when it is not one:
 * what a peer sends is read inside a socket handler, where a throw would end the process.
 */
export function jsonObjectOf(payload: Uint8Array): Record<string, unknown> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch {
    return undefined;
  }
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

export function encodeFrame(type: FrameType, id: number, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(HEADER + payload.byteLength);
  out.writeUInt32BE(HEADER - 4 + payload.byteLength, 0);
  out.writeUInt8(type, 4);
  out.writeUInt32BE(id >>> 0, 5);
  out.set(payload, HEADER);
  return out;
}

const EARLY_FLUSH = 16;

/**
 * Frames of one socket read handed over per callback on node-to-node connections (FrameReader's
 * `group`): two of the writer's early batches. Pinned pairs of `parley tcp` at c=64 against
 * reading a whole read at once: 32 → 1.13× over 19 pairs and 1.14× over 10; 16 → 0.98×; 8 → 0.79×.
 */
export const READ_GROUP = 32;

/**
 * Queues frames and writes them once per turn of the event loop (`setImmediate`), or as soon as
 * {@link EARLY_FLUSH} are waiting. Once per turn, not per tick: frames made by the callbacks of
 * many sockets in one poll phase (a gateway's HTTP requests, each on its own connection) share
 * one write, where a `nextTick` flush wrote one per request. Honours the socket's backpressure:
 * while the socket's buffer is full, frames wait here and go out in one write on `drain`.
 */
export class FrameWriter {
  private payloads: Uint8Array[] = [];
  private heads: number[] = [];
  private bytes = 0;
  private scheduled = false;
  private full = false;
  private readonly flushNow = () => {
    this.scheduled = false;
    this.flush();
  };

  constructor(private readonly socket: Socket) {
    socket.on('drain', () => {
      this.full = false;
      this.flush();
    });
  }

  send(type: FrameType, id: number, payload: Uint8Array): void {
    // Headers are written straight into the batch at flush: one buffer and one copy per batch.
    this.payloads.push(payload);
    this.heads.push(type, id >>> 0);
    this.bytes += HEADER + payload.byteLength;
    // A full batch leaves at once: the peer starts on it while this side makes the next one, so
    // two processes in a closed loop overlap instead of taking turns.
    if (this.payloads.length >= EARLY_FLUSH && !this.full) {
      this.flush();
      return;
    }
    if (this.scheduled || this.full) return;
    this.scheduled = true;
    setImmediate(this.flushNow);
  }

  /**
   * Whether the peer has not taken more than it should have: what waits here and in the socket
   * is over 4 × `maxPayload`, or 8 MiB. The node serving a caller stops reading it then, and the
   * hub drops broadcasts to a member (a peer that stops reading made either queue without end).
   */
  backlogOver(maxPayload: number): boolean {
    return this.bytes + this.socket.writableLength > Math.max(4 * maxPayload, 8 << 20);
  }

  private flush(): void {
    const n = this.payloads.length;
    if (n === 0 || this.socket.destroyed || this.full) return;
    const batch = Buffer.allocUnsafe(this.bytes);
    let at = 0;
    for (let i = 0; i < n; i++) {
      const payload = this.payloads[i] as Uint8Array;
      batch.writeUInt32BE(HEADER - 4 + payload.byteLength, at);
      batch[at + 4] = this.heads[2 * i] as number;
      batch.writeUInt32BE(this.heads[2 * i + 1] as number, at + 5);
      batch.set(payload, at + HEADER);
      at += HEADER + payload.byteLength;
    }
    this.payloads = [];
    this.heads = [];
    this.bytes = 0;
    // Before connect, net buffers the write itself; `false` means the buffer is over its mark.
    if (!this.socket.write(batch)) this.full = true;
  }
}

/** `parley://host:port` (IPv6 hosts in brackets) → host and port. */
export function parseHubUrl(url: string): { host: string; port: number } {
  const m = /^parley:\/\/([^:/[\]]+|\[[^\]]+\]):(\d+)\/?$/.exec(url);
  const port = Number(m?.[2]);
  // A port past 65535 failed later, in `connect`, as an unexpected RangeError (INTERNAL).
  if (m === null || port > 65_535)
    throw new ParleyError('INVALID_ARGUMENT', `hub URL must be parley://host:port, got ${url}`);
  return { host: (m[1] as string).replace(/^\[|\]$/g, ''), port };
}
