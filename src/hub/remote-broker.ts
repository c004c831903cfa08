/**
 * @module hub/remote-broker
 * A {@link Broker} that is the hub's embedded broker, over TCP: `PARLEY_BROKER=parley://host:port`.
 * Publishes and dead-letter operations are calls; a consumer lives on the hub, which pushes each
 * delivery here and waits for the handler's outcome, so leases, retries, per-key order and
 * `maxInFlight` are the embedded broker's own. If the connection drops, calls in flight fail with
 * UNAVAILABLE and the hub nacks what was held; the client reconnects with backoff and subscribes
 * its consumers again.
 */
import type {
  Broker,
  BrokerHistory,
  BrokerPublishOptions,
  Consumer,
  ConsumerHandler,
  ConsumerSpec,
  DeadLetter,
  DeadLetterFilter,
  DeadLetterStore,
  HistoryPage,
  HistoryReadOptions,
  PublishReceipt,
} from '../broker/broker.ts';
import { checkLease, checkLetterRoom } from '../broker/check.ts';
import { failure, runHandler } from '../broker/outcome.ts';
import { encodeJsonText } from '../codec/json.ts';
import { assertEnvelope, type Envelope } from '../envelope/envelope.ts';
import { ParleyError } from '../errors.ts';
import { backoffDelay } from '../resilience/backoff.ts';
import { IdTable } from '../transport/id-table.ts';
import { frameTooLarge } from '../transport/pending.ts';
import {
  FrameReader,
  FrameType,
  FrameWriter,
  jsonObjectOf,
  PROTOCOL_VERSION,
  parseHubUrl,
} from '../transport/tcp/frames.ts';
import { connect, type ParleyTlsOptions } from '../transport/tcp/sockets.ts';
import { DEFAULT_MAX_PAYLOAD } from '../transport/transport.ts';

export interface RemoteBrokerOptions {
  token?: string;
  tls?: ParleyTlsOptions;
  maxPayload?: number;
  log?: (message: string) => void;
  /** How long a connection waits for the hub's welcome, ms. Default 10 000. */
  welcomeTimeout?: number;
  /** Draws the reconnect backoff's jitter (0 ≤ x < 1). Default Math.random; tests fix it. */
  random?: () => number;
}

interface Call {
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

interface LocalConsumer {
  /** Its id on the hub, chosen here. */
  id: number;
  spec: ConsumerSpec;
  handler: ConsumerHandler;
  /** Subscribed on the current connection. */
  attached: boolean;
  running: number;
  closing: (() => void) | undefined;
  closed: boolean;
}

/** Connects to the hub's broker; resolves once the hub has welcomed this client. */
export async function createRemoteBroker(url: string, options: RemoteBrokerOptions = {}): Promise<Broker> {
  const broker = new RemoteBroker(url, options);
  await broker.connect();
  return broker;
}

class RemoteBroker implements Broker {
  private readonly target: { host: string; port: number };
  private writer: FrameWriter | undefined;
  private socket: ReturnType<typeof connect>['socket'] | undefined;
  private readonly calls = new IdTable<Call>();
  private readonly consumers = new Set<LocalConsumer>();
  private seq = 0;
  private consumerSeq = 0;
  private closed = false;
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  readonly deadLetters: DeadLetterStore;
  private readonly reader: BrokerHistory;
  /** The hub said its broker keeps history (in its welcome). */
  private hubHasHistory = false;
  /** This client's largest frame (`maxPayload`). */
  private readonly ownMax: number;
  /** The largest frame sent: `ownMax`, or the hub's when it said a smaller one. */
  private maxFrame: number;

  constructor(
    private readonly url: string,
    private readonly options: RemoteBrokerOptions,
  ) {
    this.target = parseHubUrl(url);
    this.ownMax = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.maxFrame = this.ownMax;
    const call = <T>(op: string, args: unknown) => this.call(op, args) as Promise<T>;
    this.deadLetters = {
      list: (filter?: DeadLetterFilter, limit?: number) => call<DeadLetter[]>('dlq.list', { filter, limit }),
      get: async (id: number) => (await call<DeadLetter | null>('dlq.get', { id })) ?? undefined,
      replay: (filter?: DeadLetterFilter) => call<number>('dlq.replay', { filter }),
      purge: (filter?: DeadLetterFilter) => call<number>('dlq.purge', { filter }),
    };
    this.reader = {
      latest: (topic: string) => call<string>('history.latest', { topic }),
      read: (topic: string, after: string, options: HistoryReadOptions = {}) =>
        call<HistoryPage>('history.read', { topic, after, ...options }),
    };
  }

  get history(): BrokerHistory | undefined {
    return this.hubHasHistory ? this.reader : undefined;
  }

  private log(message: string): void {
    (this.options.log ?? ((m: string) => process.stderr.write(`parley broker: ${m}\n`)))(message);
  }

  connect(): Promise<void> {
    const {
      socket,
      ready,
      welcomed: gotWelcome,
    } = connect(this.target, this.options.tls, {
      log: (m) => this.log(m),
      ms: this.options.welcomeTimeout,
    });
    socket.setNoDelay(true);
    const writer = new FrameWriter(socket);
    this.socket = socket;
    return new Promise<void>((resolve, reject) => {
      let welcomed = false;
      const reader = new FrameReader(
        this.ownMax,
        (frame) => {
          if (frame.type === FrameType.Welcome && !welcomed) {
            gotWelcome();
            welcomed = true;
            const welcome = jsonObjectOf(frame.payload);
            this.hubHasHistory = welcome?.history === true;
            // The hub's largest frame, when it says (older hubs do not): the smaller one counts.
            const hubMax = welcome?.maxPayload;
            this.maxFrame =
              typeof hubMax === 'number' && Number.isSafeInteger(hubMax) && hubMax > 0
                ? Math.min(hubMax, this.ownMax)
                : this.ownMax;
            this.writer = writer;
            resolve();
            // After a reconnect: the consumers subscribe again on the new connection. One that
            // cannot (the connection went again) is tried on the next: an unhandled rejection here
            // ended the process. The reconnect backs off until they all are.
            const again = [...this.consumers].filter((c) => !c.closed).map((c) => this.attach(c));
            Promise.all(again).then(
              () => {
                this.attempt = 0;
              },
              (error: unknown) => {
                this.log(`subscribing again failed (${ParleyError.from(error).message}): reconnecting`);
                socket.destroy();
              },
            );
          } else if (frame.type === FrameType.BrokerResult) {
            const c = this.calls.take(frame.id);
            if (c === undefined) return;
            const result = jsonObjectOf(frame.payload);
            if (result === undefined) c.reject(new ParleyError('INTERNAL', 'unreadable broker result'));
            else if (result.ok === true) c.resolve(result.value);
            else c.reject(ParleyError.fromWire(result.error));
          } else if (frame.type === FrameType.Deliver) {
            this.deliver(writer, frame.id, frame.payload);
          }
        },
        (reason) => {
          this.log(`hub sent ${reason}: closing`);
          socket.destroy();
        },
      );
      socket.on('data', (chunk: Buffer) => reader.push(chunk));
      socket.on(ready, () => {
        const hello = { version: PROTOCOL_VERSION, token: this.options.token, role: 'broker' };
        writer.send(FrameType.Hello, 0, Buffer.from(JSON.stringify(hello)));
      });
      socket.on('error', () => socket.destroy());
      socket.on('close', () => {
        if (this.writer === writer) this.writer = undefined;
        for (const c of this.consumers) c.attached = false;
        const calls = this.calls.values();
        this.calls.clear();
        for (const c of calls) {
          c.reject(new ParleyError('UNAVAILABLE', `broker ${this.url}: connection lost`));
        }
        if (!welcomed) {
          reject(
            new ParleyError('UNAVAILABLE', `broker ${this.url} is not reachable or refused this client`),
          );
          return;
        }
        if (!this.closed) this.scheduleReconnect();
      });
    });
  }

  private scheduleReconnect(): void {
    this.attempt++;
    if (this.attempt === 1) this.log(`lost the hub's broker at ${this.url}: reconnecting`);
    const delay = backoffDelay({ initial: 100, max: 5000, multiplier: 2 }, this.attempt, this.options.random);
    this.reconnectTimer = setTimeout(() => {
      if (this.closed) return;
      this.connect().then(
        () => this.log(`reconnected to the hub's broker at ${this.url}`),
        () => this.scheduleReconnect(),
      );
    }, delay);
  }

  /**
   * Sends a call. Its frame must fit the hub's largest frame: sent, a larger one would cost the
   * connection, and every call and delivery in flight on it (UNAVAILABLE, which an outbox retries
   * for ever). A publish (`letterRoom`) must also leave room for what its delivery and its dead
   * letter add around the envelope.
   */
  private call(op: string, args: unknown, letterRoom = false): Promise<unknown> {
    const writer = this.writer;
    if (this.closed) return Promise.reject(new ParleyError('UNAVAILABLE', 'broker is closed'));
    if (writer === undefined) {
      return Promise.reject(new ParleyError('UNAVAILABLE', `broker ${this.url}: not connected`));
    }
    let frame: Buffer;
    try {
      frame = Buffer.from(encodeJsonText({ op, args }));
      if (letterRoom) checkLetterRoom(frame.byteLength, this.maxFrame, 'the hub', 'its largest frame');
      else if (frame.byteLength > this.maxFrame) throw frameTooLarge(frame.byteLength, this.maxFrame);
    } catch (error) {
      return Promise.reject(error);
    }
    this.seq = this.seq >= 0xffffffff ? 1 : this.seq + 1;
    const id = this.seq;
    return new Promise((resolve, reject) => {
      this.calls.set(id, { resolve, reject });
      writer.send(FrameType.BrokerCall, id, frame);
    });
  }

  publish(envelope: Envelope, options: BrokerPublishOptions = {}): Promise<PublishReceipt> {
    return this.call('publish', { envelope, options }, true) as Promise<PublishReceipt>;
  }

  async subscribe(spec: ConsumerSpec, handler: ConsumerHandler): Promise<Consumer> {
    const local: LocalConsumer = {
      id: ++this.consumerSeq,
      spec,
      handler,
      attached: false,
      running: 0,
      closing: undefined,
      closed: false,
    };
    // Known before the hub can deliver to it.
    this.consumers.add(local);
    try {
      await this.attach(local);
    } catch (error) {
      this.consumers.delete(local);
      throw error;
    }
    return {
      close: async () => {
        if (local.closed) return;
        local.closed = true;
        this.consumers.delete(local);
        if (local.attached) await this.call('unsubscribe', { consumer: local.id }).catch(() => undefined);
        if (local.running > 0) await new Promise<void>((resolve) => (local.closing = resolve));
      },
    };
  }

  private async attach(local: LocalConsumer): Promise<void> {
    await this.call('subscribe', { consumer: local.id, spec: local.spec });
    local.attached = true;
  }

  private deliver(writer: FrameWriter, id: number, payload: Buffer): void {
    const settle = (outcome: unknown) =>
      writer.send(FrameType.Settle, id, Buffer.from(JSON.stringify(outcome)));
    const body = jsonObjectOf(payload);
    // Unreadable: handed back at once, retryable (the hub delivers it again, or dead-letters it
    // once its attempts are spent). An envelope that is not one is refused for good below.
    if (body === undefined) {
      settle({ ok: false, error: new ParleyError('UNAVAILABLE', 'unreadable delivery').toWire() });
      return;
    }
    const local = [...this.consumers].find((c) => c.id === body.consumer);
    if (local === undefined) {
      settle({ ok: false, error: new ParleyError('UNAVAILABLE', 'consumer is closed').toWire() });
      return;
    }
    let envelope: Envelope;
    try {
      envelope = assertEnvelope(body.envelope);
    } catch (error) {
      settle({ ok: false, error: ParleyError.from(error, 'INVALID_ARGUMENT').toWire() });
      return;
    }
    local.running++;
    const delivery = {
      envelope,
      attempt: typeof body.attempt === 'number' && body.attempt >= 1 ? Math.floor(body.attempt) : 1,
      extendLease: async (ms: number) => {
        checkLease(ms);
        // Delivery ids count again from 1 on each connection: one of an older connection would
        // name (and extend) another delivery on the current one.
        if (this.writer !== writer)
          throw new ParleyError(
            'FAILED_PRECONDITION',
            'the delivery was lost with its connection to the hub',
          );
        await this.call('extendLease', { delivery: id, ms });
      },
    };
    // A handler that throws is a failure; one that returns no promise is done when it returns
    // (until 2026-12-03 the `.then` of its undefined threw here, and the delivery never settled).
    runHandler(local.handler, delivery)
      .then(
        () => settle({ ok: true }),
        (error: unknown) => {
          const e = ParleyError.from(error);
          const wire = e.toWire();
          // Nobody decided an unexpected error is permanent: the broker retries it, as locally.
          if (e.unexpected) wire.retryable = true;
          // What a broker reads of a failure (its text cut, of its details only `deferMs`): a
          // settle frame stays small whatever the handler threw. Over the hub's largest frame it
          // would cost the connection, and the message would come back "the broker client went away".
          const { details, ...kept } = wire;
          const deferMs = details?.deferMs;
          settle({
            ok: false,
            error: {
              ...kept,
              message: failure(e).message,
              ...(deferMs === undefined ? {} : { details: { deferMs } }),
            },
          });
        },
      )
      .finally(() => {
        local.running--;
        if (local.running === 0) local.closing?.();
      });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await Promise.allSettled(
      [...this.consumers].map(async (c) => {
        c.closed = true;
        if (c.attached) await this.call('unsubscribe', { consumer: c.id }).catch(() => undefined);
      }),
    );
    this.consumers.clear();
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    this.socket?.end();
  }
}
