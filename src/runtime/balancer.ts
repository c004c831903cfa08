/**
 * @module runtime/balancer
 * Picks the endpoint for a call. Local first (the in-process fast path), then: calls with a `key`
 * go to the same instance by rendezvous hashing, which moves only the keys of a node that comes or
 * goes; the rest go round robin. Endpoints a call already tried are avoided while others remain.
 */
import type { OutboundCall } from './pipeline.ts';
import type { Endpoint } from './registry.ts';

export type Balancer = (endpoints: readonly Endpoint[], call: OutboundCall) => Endpoint | undefined;

export interface BalancerOptions {
  /** Prefer an instance in this process (default true). */
  preferLocal?: boolean;
}

export function createBalancer(options: BalancerOptions = {}): Balancer {
  const preferLocal = options.preferLocal ?? true;
  const counters = new Map<string, number>();
  return (endpoints, call) => {
    if (endpoints.length === 0) return undefined;
    const first = endpoints[0] as Endpoint;
    if (endpoints.length === 1) return first;
    let candidates = endpoints;
    if (call.tried.length > 0) {
      const fresh = endpoints.filter((e) => !call.tried.includes(e.nodeId));
      if (fresh.length > 0) candidates = fresh;
    }
    // The registry puts the local endpoint first.
    if (preferLocal && (candidates[0] as Endpoint).local) return candidates[0];
    const key = call.options.key;
    if (key !== undefined) return rendezvous(candidates, `${call.service}\u0000${key}`);
    const n = counters.get(call.service) ?? 0;
    counters.set(call.service, (n + 1) % 1_000_000_007);
    return candidates[n % candidates.length];
  };
}

function rendezvous(endpoints: readonly Endpoint[], key: string): Endpoint | undefined {
  let best: Endpoint | undefined;
  let bestScore = -1;
  for (const e of endpoints) {
    const score = fnv1a(`${e.nodeId}\u0000${key}`);
    if (score > bestScore) {
      bestScore = score;
      best = e;
    }
  }
  return best;
}

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // Final avalanche so nearby inputs spread.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}
