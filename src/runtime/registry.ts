/**
 * @module runtime/registry
 * Which nodes offer which services, local and remote, kept from discovery. Draining nodes stay
 * known but receive no new calls.
 */
import type { NodeInfo } from '../transport/transport.ts';

export interface Endpoint {
  readonly nodeId: string;
  readonly local: boolean;
}

export class Registry {
  private readonly nodes = new Map<string, NodeInfo>();
  private readonly byService = new Map<string, Endpoint[]>();
  private readonly listeners = new Set<(change: RegistryChange) => void>();

  constructor(private readonly selfId: string) {}

  upsert(info: NodeInfo): void {
    const known = this.nodes.has(info.id);
    this.nodes.set(info.id, info);
    this.rebuild();
    this.emit({ kind: known ? 'changed' : 'up', node: info });
  }

  remove(nodeId: string): void {
    const info = this.nodes.get(nodeId);
    if (info === undefined) return;
    this.nodes.delete(nodeId);
    this.rebuild();
    this.emit({ kind: 'down', node: info });
  }

  /** Endpoints that take calls for `service`, local first. The array is shared: do not mutate. */
  endpoints(service: string): readonly Endpoint[] {
    return this.byService.get(service) ?? EMPTY;
  }

  node(nodeId: string): NodeInfo | undefined {
    return this.nodes.get(nodeId);
  }

  list(): NodeInfo[] {
    return [...this.nodes.values()];
  }

  onChange(listener: (change: RegistryChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private rebuild(): void {
    this.byService.clear();
    for (const info of this.nodes.values()) {
      if (info.status !== 'up') continue;
      const local = info.id === this.selfId;
      for (const s of info.services) {
        let list = this.byService.get(s.name);
        if (list === undefined) {
          list = [];
          this.byService.set(s.name, list);
        }
        if (local) list.unshift({ nodeId: info.id, local });
        else list.push({ nodeId: info.id, local });
      }
    }
  }

  private emit(change: RegistryChange): void {
    for (const l of this.listeners) l(change);
  }
}

export interface RegistryChange {
  kind: 'up' | 'changed' | 'down';
  node: NodeInfo;
}

const EMPTY: readonly Endpoint[] = Object.freeze([]);
