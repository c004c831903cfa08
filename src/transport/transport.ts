/**
 * @module transport
 * The seam between a node and the network, for adapter authors. A transport moves opaque byte
 * frames; it knows nothing of contracts, codecs or envelopes. It does three things:
 *
 * 1. **request/reply** to one named node: `request()` out, `handler.onRequest()` in;
 * 2. **broadcast** of ephemeral notifications to every other live node, at most once;
 * 3. **discovery**: it carries each node's {@link NodeInfo} to the others and reports nodes that
 *    come, change or go through `onNodeUp` / `onNodeDown`.
 *
 * Rules every transport follows (the conformance suite in `test/conformance/transport.ts` checks
 * them):
 * - A frame larger than `maxPayload` is refused with RESOURCE_EXHAUSTED on the side that would
 *   send it; nothing is delivered.
 * - `request()` rejects with UNAVAILABLE when the target is unknown, unreachable, or goes away
 *   before replying; it never hangs past that. Deadlines are the node's job: it aborts `signal`.
 * - When `signal` aborts, the transport forgets the request (a late reply is dropped) and rejects
 *   with the signal's reason.
 * - `handler.onRequest` may reject only with a ParleyError whose code should reach the caller.
 * - `stop()` is graceful: replies already handed over are delivered first. After it resolves, no
 *   handler is called again and every pending `request()` has settled.
 */

/** What a node tells the others about itself. JSON-safe. */
export interface NodeInfo {
  id: string;
  /** `up` takes calls; `draining` finishes what it has and takes nothing new. */
  status: 'up' | 'draining';
  codec: string;
  services: ServiceInfo[];
  /** Free-form labels (zone, version, host). */
  labels?: Record<string, string>;
}

export interface ServiceInfo {
  name: string;
  version: string;
  actions: string[];
  /** Event types this node listens to for notifications. */
  notifications: string[];
}

export interface TransportHandler {
  /**
   * A request arrived. `signal`, from transports that can tell, aborts when the caller gives up
   * (it cancelled, or its connection closed): the handler's `ctx.signal` follows it.
   */
  onRequest(frame: Uint8Array, from: string, signal?: RequestSignal): Promise<Uint8Array>;
  onBroadcast(frame: Uint8Array, from: string): void;
  onNodeUp(info: NodeInfo): void;
  onNodeDown(nodeId: string): void;
}

/**
 * What a transport needs of an abort signal. An `AbortSignal` is one; the node passes a lighter
 * object of its own on every remote call, so a transport must use only these members.
 */
export interface RequestSignal {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

export interface RequestOptions {
  /** Aborted by the node at the deadline or on cancellation. */
  signal?: RequestSignal;
}

export interface Transport {
  /**
   * Largest frame, in bytes, this transport sends or accepts. Read when needed, not kept: a
   * transport may lower it in `start`, to what its server takes.
   */
  readonly maxPayload: number;
  /** Joins the network as `self`. Known peers are reported through `handler.onNodeUp`. */
  start(self: NodeInfo, handler: TransportHandler): Promise<void>;
  /** Tells every peer this node's new info (services added, status changed). */
  announce(self: NodeInfo): Promise<void>;
  request(nodeId: string, frame: Uint8Array, options?: RequestOptions): Promise<Uint8Array>;
  /** Sends to every other live node; no reply, no retry, no error if nobody listens. */
  broadcast(frame: Uint8Array): void;
  /** Leaves the network: peers see `onNodeDown`, pending requests settle, handlers stop. */
  stop(): Promise<void>;
}

/** Default largest frame: 1 MiB. */
export const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
