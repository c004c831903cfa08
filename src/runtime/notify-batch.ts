/**
 * @module runtime/notify-batch
 * Notifications travel in batches: the ones a node makes in one turn of the event loop leave as
 * one frame, a CloudEvents envelope of type {@link NOTIFICATION_BATCH} whose `source` and `time`
 * are those of its first notification and whose `data` lists the notifications as
 *
 *   [id, type, dataschema, data]            (the batch's source and time)
 *   [id, type, dataschema, data, {more}]    (`more`: the attributes it does not share with the batch)
 *   [id, 0, 0, data]                        (type and dataschema as the item before)
 *
 * A receiver makes each notification's envelope again and checks it like any envelope; a malformed
 * item is dropped with its reason and its neighbours are delivered. Sending one envelope per
 * notification cost each side a JSON encode or parse of ~300 bytes where the data was ~100: with
 * the shared attributes stated once, and a run of one type naming it once, a notification of
 * ~100 bytes of data costs ~145 bytes.
 * JSON only (the default codec): a node with another codec sends one envelope per notification,
 * and receivers take both.
 */
import { Buffer } from 'node:buffer';
import { encodeJsonText } from '../codec/json.ts';
import { assertEnvelope, type Envelope } from '../envelope/envelope.ts';
import { uuidv7 } from '../envelope/ids.ts';
import { ParleyError } from '../errors.ts';
import { attribute } from './envelopes.ts';
import { TurnQueue } from './turn-queue.ts';

/** The type of a batch envelope (`$`: no contract event can be named so). */
export const NOTIFICATION_BATCH = '$notifications';

/** A batch frame is closed at this size; a notification larger than it travels alone. */
const BATCH_BYTES = 60 * 1024;

/*
 * The attributes an item may state for itself ("more"), beyond id, type, dataschema and data:
 * source, time, subject, datacontenttype, traceparent, tracestate, correlationid, causationid
 * and principal. Every place that handles them reads each by name, in this order: a loop over
 * their names was nine keyed reads of varying names per notification, which V8 cannot cache.
 */

interface Item {
  env: Envelope;
  /** The data as JSON, made when the notification was sent (so its errors reach the sender). */
  data: string;
  /** About what it adds to a batch frame (for closing frames near {@link BATCH_BYTES}). */
  bytes: number;
  /** The most it can add, header included (so that no frame passes the transport's maximum). */
  bound: number;
}

/** The most a string adds to JSON text: every character escaped as `\uXXXX`, and the quotes. */
const jsonBound = (s: string | undefined) => (s === undefined ? 0 : 6 * s.length + 16);

/**
 * Gathers a turn's notifications and broadcasts them as batch frames at its end. `add` checks
 * what can fail at once: data that is not JSON (INVALID_ARGUMENT) and a notification that could
 * not fit a frame of `maxPayload` (RESOURCE_EXHAUSTED).
 */
export class NotificationBatcher {
  private readonly queue = new TurnQueue<Item>((items) => this.sendTurn(items));

  constructor(
    private readonly broadcast: (frame: Uint8Array) => void,
    /** The transport's largest frame, read per notification (a bus lowers it once connected). */
    private readonly maxPayload: () => number,
    /** A frame the transport refused to take (it is lost: notifications are at most once). */
    private readonly failed: (error: unknown) => void,
  ) {}

  add(env: Envelope): void {
    const data = encodeJsonText(env.data);
    // UTF-8 takes at most 3 bytes per UTF-16 unit: counting exactly is left to the rare large one.
    const dataBytes = 3 * data.length > BATCH_BYTES ? Buffer.byteLength(data) : 3 * data.length;
    // A frame holding it alone can be no larger than this: the header, its id and every attribute.
    const bound =
      dataBytes +
      128 +
      jsonBound(env.type) +
      jsonBound(env.dataschema) +
      // The source twice: the batch's header states it, and an item may state its own.
      2 * jsonBound(env.source) +
      jsonBound(env.time) +
      jsonBound(env.subject) +
      jsonBound(env.datacontenttype) +
      jsonBound(env.traceparent) +
      jsonBound(env.tracestate) +
      jsonBound(env.correlationid) +
      jsonBound(env.causationid) +
      jsonBound(env.principal);
    const max = this.maxPayload();
    if (bound > max) {
      throw new ParleyError(
        'RESOURCE_EXHAUSTED',
        `notification of up to ${bound} bytes exceeds the maximum of ${max}`,
      );
    }
    const bytes = data.length + 64 + env.type.length + (env.dataschema?.length ?? 0);
    this.queue.add({ env, data, bytes, bound });
  }

  /** Broadcasts what is waiting now (before the node stops). */
  flush(): void {
    this.queue.flush();
  }

  /** A turn's notifications, in frames closed near {@link BATCH_BYTES} and within `maxPayload`. */
  private sendTurn(items: Item[]): void {
    const max = this.maxPayload();
    let start = 0;
    let bytes = 0;
    let bound = 0;
    for (let i = 0; i < items.length; i++) {
      const item = items[i] as Item;
      if (i > start && (bytes + item.bytes > BATCH_BYTES || bound + item.bound > max)) {
        this.send(items, start, i);
        start = i;
        bytes = 0;
        bound = 0;
      }
      bytes += item.bytes;
      bound += item.bound;
    }
    this.send(items, start, items.length);
  }

  private send(items: Item[], from: number, to: number): void {
    try {
      this.broadcast(batchFrame(items, from, to));
    } catch (error) {
      this.failed(error);
    }
  }
}

function batchFrame(items: Item[], from: number, to: number): Uint8Array {
  const first = (items[from] as Item).env;
  let text = `{"specversion":"1.0","id":"${uuidv7(Date.now())}","source":${JSON.stringify(first.source)},"type":"${NOTIFICATION_BATCH}"`;
  if (first.time !== undefined) text += `,"time":${JSON.stringify(first.time)}`;
  text += ',"data":[';
  // A turn's notifications are mostly of one type: a run of one type and schema names them once.
  let type = '';
  let schema: string | undefined = '';
  let moreEnv: Envelope | undefined;
  let moreText = ']';
  for (let i = from; i < to; i++) {
    const { env, data } = items[i] as Item;
    if (i > from) text += ',';
    let typeAndSchema = '0,0';
    if (env.type !== type || env.dataschema !== schema || i === from) {
      type = env.type;
      schema = env.dataschema;
      typeAndSchema = `${JSON.stringify(type)},${JSON.stringify(schema ?? '')}`;
    }
    // Event ids are UUIDs this node made (`eventEnvelope`): nothing in them needs escaping.
    text += `["${env.id}",${typeAndSchema},${data}`;
    // Notifications sent by one handler share their trace attributes: a run of them makes the
    // text of what they do not share with the batch once.
    if (moreEnv === undefined || !sameMore(env, moreEnv)) {
      moreEnv = env;
      moreText = moreTextOf(env, first);
    }
    text += moreText;
  }
  return Buffer.from(`${text}]}`, 'utf8');
}

/**
 * What `env` does not share with the batch's first notification, as the end of its item: `]`, or
 * `,{…}]` with those attributes, each read by name.
 */
function moreTextOf(env: Envelope, first: Envelope): string {
  // In the order above; `attribute` escapes each value. Made once per run of items that share
  // these attributes (`sameMore`), not once per item.
  const text =
    attribute('source', env.source === first.source ? undefined : env.source) +
    attribute('time', env.time === first.time ? undefined : env.time) +
    attribute('subject', env.subject) +
    attribute('datacontenttype', env.datacontenttype) +
    attribute('traceparent', env.traceparent) +
    attribute('tracestate', env.tracestate) +
    attribute('correlationid', env.correlationid) +
    attribute('causationid', env.causationid) +
    attribute('principal', env.principal);
  return text === '' ? ']' : `,{${text.slice(1)}}]`;
}

/** Whether `a` and `b` have the same attributes beyond id, type, dataschema and data. */
function sameMore(a: Envelope, b: Envelope): boolean {
  return (
    a.source === b.source &&
    a.time === b.time &&
    a.subject === b.subject &&
    a.datacontenttype === b.datacontenttype &&
    a.traceparent === b.traceparent &&
    a.tracestate === b.tracestate &&
    a.correlationid === b.correlationid &&
    a.causationid === b.causationid &&
    a.principal === b.principal
  );
}

/**
 * The notifications a batch envelope carries, each checked as an envelope, in order. Items whose
 * type `wanted` refuses are skipped before anything is built for them (nobody here listens); a
 * malformed item is reported to `dropped` and skipped. A batch whose `data` is not a list is
 * INVALID_ARGUMENT.
 */
export function unbatch(
  batch: Envelope,
  wanted: (type: string) => boolean,
  dropped: (reason: string, index: number) => void,
): Envelope[] {
  const list = batch.data;
  if (!Array.isArray(list)) throw new ParleyError('INVALID_ARGUMENT', 'a notification batch without a list');
  const out: Envelope[] = [];
  // What `0` stands for: the type and dataschema of the last item that stated them.
  let lastType: string | undefined;
  let lastSchema: unknown;
  for (let i = 0; i < list.length; i++) {
    const item: unknown = list[i];
    if (!Array.isArray(item) || item.length < 4 || item.length > 5) {
      dropped('an item is not [id, type, dataschema, data, more?]', i);
      continue;
    }
    const [id, statedType, statedSchema, data, more] = item as unknown[];
    if (statedType === 0 && statedSchema === 0) {
      if (lastType === undefined) {
        dropped('an item that repeats the type of an item before it, with none before it', i);
        continue;
      }
    } else if (typeof statedType === 'string' && statedSchema !== 0) {
      lastType = statedType;
      lastSchema = statedSchema;
    } else {
      dropped(
        typeof statedType === 'string'
          ? 'an item whose dataschema is 0 but not its type'
          : 'an item without a type',
        i,
      );
      continue;
    }
    const type = lastType;
    const dataschema = lastSchema;
    if (!wanted(type)) continue;
    const env: Record<string, unknown> = {
      specversion: '1.0',
      id,
      source: batch.source,
      type,
      time: batch.time,
      dataschema: dataschema === '' ? undefined : dataschema,
      data,
    };
    if (more !== undefined) {
      if (typeof more !== 'object' || more === null || Array.isArray(more)) {
        dropped('an item whose attributes are not an object', i);
        continue;
      }
      // Only the attributes an item may state, each read by name; anything else in it is ignored.
      const m = more as Record<string, unknown>;
      if (m.source !== undefined) env.source = m.source;
      if (m.time !== undefined) env.time = m.time;
      if (m.subject !== undefined) env.subject = m.subject;
      if (m.datacontenttype !== undefined) env.datacontenttype = m.datacontenttype;
      if (m.traceparent !== undefined) env.traceparent = m.traceparent;
      if (m.tracestate !== undefined) env.tracestate = m.tracestate;
      if (m.correlationid !== undefined) env.correlationid = m.correlationid;
      if (m.causationid !== undefined) env.causationid = m.causationid;
      if (m.principal !== undefined) env.principal = m.principal;
    }
    try {
      out.push(assertEnvelope(env));
    } catch (error) {
      dropped((error as Error).message, i);
    }
  }
  return out;
}
