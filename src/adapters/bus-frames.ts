/**
 * @module adapters/bus-frames
 * The bus transport's wire format, and the writer that packs one turn's frames into as few bus
 * messages as it can.
 *
 * A message is either one frame, `[u8 kind][u32 id][u8 from length][from][payload]`, or a batch
 * of frames from one sender to one subject, `[u8 BATCH][u32 count][u8 from length][from]` then
 * `count` × `[u8 kind][u32 id][u32 length][payload]`. Every bus here charges per message (the
 * client's parse and dispatch, the server's routing), so under load a batch of 50 replies costs
 * about what one did; a lone frame still leaves at once, so an idle caller waits for nobody.
 */

export const Kind = {
  REQUEST: 1,
  REPLY: 2,
  FAILURE: 3,
  CANCEL: 4,
  HELLO: 5,
  BYE: 6,
  WHO: 7,
  BROADCAST: 8,
  BATCH: 9,
} as const;

export interface BusMessage {
  kind: number;
  id: number;
  from: string;
  payload: Uint8Array;
}

const decoder = new TextDecoder();
/** The most frames one batch may hold (a sender packs far fewer; a larger count is garbage). */
const MAX_BATCH_COUNT = 65_536;

export function encodeFrame(kind: number, id: number, from: Uint8Array, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(6 + from.byteLength + payload.byteLength);
  out[0] = kind;
  new DataView(out.buffer).setUint32(1, id);
  out[5] = from.byteLength;
  out.set(from, 6);
  out.set(payload, 6 + from.byteLength);
  return out;
}

interface Entry {
  kind: number;
  id: number;
  payload: Uint8Array;
}

function encodeBatch(from: Uint8Array, entries: Entry[], bytes: number): Uint8Array {
  const out = new Uint8Array(6 + from.byteLength + bytes);
  const view = new DataView(out.buffer);
  out[0] = Kind.BATCH;
  view.setUint32(1, entries.length);
  out[5] = from.byteLength;
  out.set(from, 6);
  let at = 6 + from.byteLength;
  for (const e of entries) {
    out[at] = e.kind;
    view.setUint32(at + 1, e.id);
    view.setUint32(at + 5, e.payload.byteLength);
    out.set(e.payload, at + 9);
    at += 9 + e.payload.byteLength;
  }
  return out;
}

/** The frames in a message, or why it is not one (anyone can publish on a shared bus). */
export function decodeMessage(message: Uint8Array): BusMessage[] | string {
  if (message.byteLength < 6) return `a message of ${message.byteLength} bytes`;
  const kind = message[0] as number;
  if (kind < Kind.REQUEST || kind > Kind.BATCH) return `an unknown message kind ${kind}`;
  const fromLength = message[5] as number;
  if (message.byteLength < 6 + fromLength) return 'a message cut short';
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const from = decoder.decode(message.subarray(6, 6 + fromLength));
  if (kind !== Kind.BATCH) {
    return [{ kind, id: view.getUint32(1), from, payload: message.subarray(6 + fromLength) }];
  }
  const count = view.getUint32(1);
  if (count === 0 || count > MAX_BATCH_COUNT) return `a batch of ${count} frames`;
  const out: BusMessage[] = [];
  let at = 6 + fromLength;
  for (let i = 0; i < count; i++) {
    if (at + 9 > message.byteLength) return 'a batch cut short';
    const k = message[at] as number;
    if (k < Kind.REQUEST || k >= Kind.BATCH) return `an unknown message kind ${k} in a batch`;
    const length = view.getUint32(at + 5);
    if (at + 9 + length > message.byteLength) return 'a batch cut short';
    out.push({
      kind: k,
      id: view.getUint32(at + 1),
      from,
      payload: message.subarray(at + 9, at + 9 + length),
    });
    at += 9 + length;
  }
  if (at !== message.byteLength) return 'a batch with bytes after its last frame';
  return out;
}

interface Pending {
  entries: Entry[];
  bytes: number;
}

/**
 * Packs frames per subject over one turn of the event loop. Frames wait for the turn's end
 * (`setImmediate`) and leave as one batch per subject, in order; but when the last turn sent one
 * frame or none (the sender is not under load), the first frame of a turn is published at once, so a lone
 * request or reply is never held back. A batch
 * never grows past `maxBatchBytes`: a frame that would overflow it sends what is waiting first.
 * A batch of calls that reaches `maxBatchFrames` leaves at once, so that the receiver starts on
 * it while the sender makes the rest: two processes in a closed loop overlap instead of taking
 * turns.
 */
export class FrameWriter {
  private readonly pending = new Map<string, Pending>();
  private turn = false;
  /** The last turn sent more than one frame: traffic is flowing, so a turn's first frame waits too. */
  private busy = false;
  private frames = 0;
  private from: Uint8Array = new Uint8Array(0);

  constructor(
    private readonly publish: (subject: string, message: Uint8Array) => void,
    private maxBatchBytes: number,
    private readonly maxBatchFrames: number,
  ) {}

  /** Batches from now on hold frames of at most `bytes` in all (a server that takes less). */
  setMaxBatchBytes(bytes: number): void {
    this.maxBatchBytes = bytes;
  }

  /** The sender id written into every message from now on. */
  setSender(from: Uint8Array): void {
    this.from = from;
  }

  send(subject: string, kind: number, id: number, payload: Uint8Array): void {
    this.frames++;
    if (!this.turn) {
      this.turn = true;
      setImmediate(this.flush);
      if (!this.busy) {
        this.publish(subject, encodeFrame(kind, id, this.from, payload));
        return;
      }
    }
    const size = 9 + payload.byteLength;
    let p = this.pending.get(subject);
    if (p !== undefined && p.bytes + size > this.maxBatchBytes) {
      this.emit(subject, p);
      p = undefined;
    }
    if (p === undefined) {
      if (size > this.maxBatchBytes) {
        this.publish(subject, encodeFrame(kind, id, this.from, payload));
        return;
      }
      p = { entries: [], bytes: 0 };
      this.pending.set(subject, p);
    }
    p.entries.push({ kind, id, payload });
    p.bytes += size;
    // Notifications are one-way (no caller waits for the other side to start), so their batches
    // fill up to the byte limit instead.
    if (p.entries.length >= this.maxBatchFrames && kind !== Kind.BROADCAST) this.emit(subject, p);
  }

  /** Publishes everything waiting (the end of a turn, or before a close). */
  readonly flush = (): void => {
    this.turn = false;
    this.busy = this.frames > 1;
    this.frames = 0;
    for (const [subject, p] of this.pending) this.emit(subject, p);
  };

  /** Forgets everything waiting (a crash: nothing more is sent). */
  clear(): void {
    this.pending.clear();
  }

  private emit(subject: string, p: Pending): void {
    this.pending.delete(subject);
    const only = p.entries.length === 1 ? p.entries[0] : undefined;
    this.publish(
      subject,
      only !== undefined
        ? encodeFrame(only.kind, only.id, this.from, only.payload)
        : encodeBatch(this.from, p.entries, p.bytes),
    );
  }
}
