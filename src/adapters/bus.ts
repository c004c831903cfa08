/**
 * @module adapters/bus
 * The seam between the bus transport and a broker's client: what an adapter implements so that
 * `BusTransport` (discovery, calls, cancels, notifications, batching) runs on its broker.
 */

/** What an adapter provides: subjects in, subjects out. */
export interface Bus {
  /** Fire and forget; order per subject from one publisher is kept by every bus used here. */
  publish(subject: string, message: Uint8Array): void;
  /**
   * Resolves when the subscription is live; the returned function ends it. `replyTo` is the
   * reply address a request carried, on a bus with `replies`.
   */
  subscribe(subject: string, onMessage: (message: Uint8Array, replyTo?: string) => void): Promise<() => void>;
  /**
   * The bus's own request/response addressing, where it has one (RabbitMQ direct reply-to, the
   * MQTT 5 Response Topic). Requests (and cancels) are published with `request`, which marks them
   * with this connection's reply address; the callee's `subscribe` callback gets that address,
   * and replies go back with `reply` straight to it, arriving at `listen`'s callback. Without
   * it, replies go to the caller's inbox subject like everything else.
   */
  replies?: {
    request(subject: string, message: Uint8Array): void;
    reply(address: string, message: Uint8Array): void;
    /** Starts taking replies (before the first request is sent); the function stops it. */
    listen(onReply: (message: Uint8Array) => void): Promise<() => void>;
  };
  /**
   * The largest message the server takes, where it says (read at every request and reply, so a
   * getter may follow what the server said at its last reconnect; undefined while unknown keeps
   * the last value): the transport keeps its frames and batches within it.
   */
  readonly maxMessage?: number | undefined;
  /** Drains what was published, then disconnects. */
  close(): Promise<void>;
  /** Disconnects at once, without a word (a crash, for tests). */
  destroy(): void;
}

export interface BusTransportOptions {
  /** Subject prefix: nodes with different prefixes do not see each other. Default `parley`. */
  prefix?: string;
  /** Largest frame (request or reply) this transport sends or accepts. Default 1 MiB − 1 KiB. */
  maxPayload?: number;
  heartbeatMs?: number;
  heartbeatTimeoutMs?: number;
  log?: (message: string) => void;
}
