/**
 * @module transport/memory
 * Several nodes in one process, talking as if over a network: frames are bytes made by each
 * node's codec, delivery is asynchronous, payload limits apply, and faults (drop, delay,
 * duplicate, reorder, partition, crash) can be injected deterministically from a seed. Public API:
 * it is how users test their services without a broker.
 */
import { ParleyError } from '../errors.ts';
import type { Clock } from '../runtime/clock.ts';
import { systemClock } from '../runtime/clock.ts';
import { type FaultOptions, LinkFaults } from './faults.ts';
import { IdTable } from './id-table.ts';
import { awaitReply, frameTooLarge, RequestAbort, worthTelling } from './pending.ts';
import type { NodeInfo, RequestOptions, Transport, TransportHandler } from './transport.ts';
import { DEFAULT_MAX_PAYLOAD } from './transport.ts';

export interface MemoryNetworkOptions {
  clock?: Clock;
  faults?: FaultOptions;
  /** How long a reordered frame waits for a successor before it is delivered anyway (ms). */
  reorderWindow?: number;
}

/** One line per frame decision, for tests that check what the network did. */
export interface DeliveryRecord {
  from: string;
  to: string;
  kind: 'request' | 'reply' | 'broadcast';
  outcome: 'delivered' | 'dropped' | 'partitioned';
  copies: number;
  delay: number;
  reordered: boolean;
}

export interface MemoryNetwork {
  /** A transport that joins this network when its node starts. */
  transport(options?: { maxPayload?: number }): Transport;
  /** Replaces the fault settings; links restart their sequences from the seed. */
  setFaults(faults: FaultOptions | undefined): void;
  /** Frames between the two groups are lost, both ways, until `heal()`. */
  partition(a: readonly string[], b: readonly string[]): void;
  heal(): void;
  /** Kills a node abruptly: peers see it gone, requests to and from it fail with UNAVAILABLE. */
  crash(nodeId: string): void;
  /** Node ids currently joined. */
  nodes(): string[];
  /** Decisions so far (kept only while `record` is on). */
  readonly records: DeliveryRecord[];
  record: boolean;
}

interface Pending {
  to: string;
  resolve(frame: Uint8Array): void;
  reject(error: unknown): void;
}

interface Link {
  faults: LinkFaults | undefined;
  held: (() => void) | undefined;
  heldTimer: { cancel(): void } | undefined;
}

type Kind = DeliveryRecord['kind'];

export function createMemoryNetwork(options: MemoryNetworkOptions = {}): MemoryNetwork {
  const clock = options.clock ?? systemClock;
  const reorderWindow = options.reorderWindow ?? 5;
  const members = new Map<string, MemoryTransport>();
  const links = new Map<string, Link>();
  const cut = new Set<string>();
  let faults = options.faults;

  const linkOf = (from: string, to: string): Link => {
    const key = `${from}\u0000${to}`;
    let link = links.get(key);
    if (link === undefined) {
      link = {
        faults: faults === undefined ? undefined : new LinkFaults(faults, from, to),
        held: undefined,
        heldTimer: undefined,
      };
      links.set(key, link);
    }
    return link;
  };

  const network: MemoryNetwork = {
    records: [],
    record: false,
    transport: (opts = {}) => new MemoryTransport(network, opts.maxPayload ?? DEFAULT_MAX_PAYLOAD),
    setFaults(next) {
      faults = next;
      links.clear();
    },
    partition(a, b) {
      for (const x of a) {
        for (const y of b) {
          cut.add(`${x}\u0000${y}`);
          cut.add(`${y}\u0000${x}`);
        }
      }
    },
    heal() {
      cut.clear();
    },
    crash(nodeId) {
      members.get(nodeId)?.leave('crash');
    },
    nodes: () => [...members.keys()],
  };

  /**
   * Sends one frame over the link from → to, applying partitions and faults. False when the frame
   * is lost (dropped or partitioned); `deliver` may then never run.
   */
  const send = (from: string, to: string, kind: Kind, deliver: () => void): boolean => {
    const rec = (outcome: DeliveryRecord['outcome'], copies: number, delay: number, reordered: boolean) => {
      if (network.record) network.records.push({ from, to, kind, outcome, copies, delay, reordered });
    };
    if (cut.has(`${from}\u0000${to}`)) {
      rec('partitioned', 0, 0, false);
      return false;
    }
    const link = linkOf(from, to);
    const d = link.faults?.next();
    if (d?.drop) {
      rec('dropped', 0, 0, false);
      return false;
    }
    const copies = d?.duplicate ? 2 : 1;
    const delay = d?.delay ?? 0;
    const once = () => {
      for (let i = 0; i < copies; i++) deliver();
    };
    const dispatch = () => {
      if (delay > 0) clock.setTimeout(once, delay);
      else queueMicrotask(once);
    };
    rec('delivered', copies, delay, d?.reorder === true && link.held === undefined);
    if (d?.reorder && link.held === undefined) {
      link.held = dispatch;
      link.heldTimer = clock.setTimeout(() => releaseHeld(link), reorderWindow);
      return true;
    }
    dispatch();
    releaseHeld(link);
    return true;
  };

  const releaseHeld = (link: Link): void => {
    const held = link.held;
    if (held === undefined) return;
    link.held = undefined;
    link.heldTimer?.cancel();
    link.heldTimer = undefined;
    held();
  };

  class MemoryTransport implements Transport {
    private self: NodeInfo | undefined;
    private handler: TransportHandler | undefined;
    private readonly pending = new IdTable<Pending>();
    /** Requests this node is handling, by caller and id: a cancel aborts their handler's signal. */
    private readonly running = new Map<string, IdTable<RequestAbort>>();
    private seq = 0;
    /** Replies sent and not yet arrived; a graceful stop waits for them. */
    private repliesInFlight = 0;
    private repliesDone: (() => void) | undefined;

    constructor(
      readonly net: MemoryNetwork,
      readonly maxPayload: number,
    ) {}

    get id(): string | undefined {
      return this.self?.id;
    }

    async start(self: NodeInfo, handler: TransportHandler): Promise<void> {
      if (members.has(self.id)) {
        throw new ParleyError('ALREADY_EXISTS', `node id ${self.id} is already on this memory network`);
      }
      this.self = self;
      this.handler = handler;
      members.set(self.id, this);
      for (const peer of members.values()) {
        if (peer === this || peer.self === undefined) continue;
        handler.onNodeUp(peer.self);
        peer.handler?.onNodeUp(self);
      }
    }

    async announce(self: NodeInfo): Promise<void> {
      if (this.self === undefined) return;
      this.self = self;
      for (const peer of members.values()) if (peer !== this) peer.handler?.onNodeUp(self);
    }

    request(nodeId: string, frame: Uint8Array, options: RequestOptions = {}): Promise<Uint8Array> {
      const from = this.self?.id;
      if (from === undefined)
        return Promise.reject(new ParleyError('UNAVAILABLE', 'transport is not started'));
      if (frame.byteLength > this.maxPayload) {
        return Promise.reject(frameTooLarge(frame.byteLength, this.maxPayload));
      }
      const target = members.get(nodeId);
      if (target === undefined)
        return Promise.reject(new ParleyError('UNAVAILABLE', `node ${nodeId} is not reachable`));
      const id = ++this.seq;
      return awaitReply(
        options.signal,
        () => {
          // The caller gave up: forget it here, and tell the callee (over the same faulty link).
          if (this.pending.delete(id) && worthTelling(options.signal?.reason)) {
            send(from, nodeId, 'request', () => target.receiveCancel(from, id));
          }
        },
        (reply) => {
          this.pending.set(id, { to: nodeId, ...reply });
          send(from, nodeId, 'request', () => target.receiveRequest(from, frame, id));
        },
      );
    }

    broadcast(frame: Uint8Array): void {
      const from = this.self?.id;
      if (from === undefined || frame.byteLength > this.maxPayload) return;
      for (const peer of members.values()) {
        if (peer === this) continue;
        send(from, peer.self?.id ?? '', 'broadcast', () => peer.receiveBroadcast(from, frame));
      }
    }

    async stop(): Promise<void> {
      if (this.repliesInFlight > 0) {
        await new Promise<void>((resolve) => {
          this.repliesDone = resolve;
        });
      }
      this.leave('stop');
    }

    private replySettled(): void {
      if (--this.repliesInFlight === 0) this.repliesDone?.();
    }

    /** Removes this node from the network and settles everything that involves it. */
    leave(why: 'stop' | 'crash'): void {
      const self = this.self;
      if (self === undefined || members.get(self.id) !== this) return;
      members.delete(self.id);
      this.handler = undefined;
      const message = why === 'crash' ? `node ${self.id} crashed` : `node ${self.id} stopped`;
      for (const p of this.pending.values()) p.reject(new ParleyError('UNAVAILABLE', message));
      this.pending.clear();
      for (const peer of members.values()) {
        peer.failPendingTo(self.id, message);
        peer.abortFrom(self.id);
        peer.handler?.onNodeDown(self.id);
      }
    }

    failPendingTo(nodeId: string, message: string): void {
      for (const [id, p] of this.pending.list()) {
        if (p.to !== nodeId) continue;
        this.pending.delete(id);
        p.reject(new ParleyError('UNAVAILABLE', `${message} before replying`));
      }
    }

    receiveRequest(from: string, frame: Uint8Array, id: number): void {
      const handler = this.handler;
      const self = this.self;
      if (handler === undefined || self === undefined) return;
      const reply = (settle: (p: Pending) => void) => {
        const caller = members.get(from);
        // A reply from a node that has crashed meanwhile never arrives.
        if (members.get(self.id) !== this || caller === undefined) return;
        this.repliesInFlight++;
        let arrived = false;
        const scheduled = send(self.id, from, 'reply', () => {
          if (!arrived) {
            arrived = true;
            this.replySettled();
          }
          const p = caller.pending.take(id);
          if (p === undefined) return; // late, duplicate, or abandoned: dropped like on a real wire
          settle(p);
        });
        if (!scheduled) this.replySettled();
      };
      if (frame.byteLength > this.maxPayload) {
        const error = frameTooLarge(frame.byteLength, this.maxPayload).toWire();
        reply((p) => p.reject(ParleyError.fromWire(error)));
        return;
      }
      let calls = this.running.get(from);
      if (calls === undefined) {
        calls = new IdTable();
        this.running.set(from, calls);
      }
      const signal = new RequestAbort();
      calls.set(id, signal);
      handler.onRequest(frame, from, signal).then(
        (out) => {
          this.finished(from, id);
          if (out.byteLength > this.maxPayload) {
            const error = frameTooLarge(out.byteLength, this.maxPayload).toWire();
            reply((p) => p.reject(ParleyError.fromWire(error)));
          } else reply((p) => p.resolve(out));
        },
        (error: unknown) => {
          this.finished(from, id);
          // Only the wire form crosses, as it would over a socket.
          const wire = ParleyError.from(error).toWire();
          reply((p) => p.reject(ParleyError.fromWire(wire)));
        },
      );
    }

    receiveCancel(from: string, id: number): void {
      this.running.get(from)?.get(id)?.abort(new ParleyError('CANCELLED', 'the caller gave up on the call'));
    }

    /** A caller's table stays while it is a member (see `IdTable`); abortFrom drops it after. */
    private finished(from: string, id: number): void {
      const calls = this.running.get(from);
      if (calls === undefined) return;
      calls.delete(id);
      if (calls.size === 0 && !members.has(from)) this.running.delete(from);
    }

    /** The caller `nodeId` is gone: the handlers of its calls are told. */
    abortFrom(nodeId: string): void {
      const calls = this.running.get(nodeId);
      this.running.delete(nodeId);
      for (const signal of calls?.values() ?? []) {
        signal.abort(new ParleyError('CANCELLED', 'the caller disconnected'));
      }
    }

    receiveBroadcast(from: string, frame: Uint8Array): void {
      if (frame.byteLength > this.maxPayload) return;
      this.handler?.onBroadcast(frame, from);
    }
  }

  return network;
}
