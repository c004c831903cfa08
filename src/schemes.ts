/**
 * @module schemes
 * Factories by URL scheme, shared by the broker and transport registries (`embedded:`,
 * `parley://`, `nats://`, …): schemes are case-insensitive and end with a colon.
 */
import { ParleyError } from './errors.ts';

export class Schemes<F> {
  private readonly factories = new Map<string, F>();

  /** `kind` names what is looked up, for the error: `broker`, `transport`. */
  constructor(private readonly kind: string) {}

  set(scheme: string, factory: F): void {
    const s = scheme.toLowerCase();
    this.factories.set(s.endsWith(':') ? s : `${s}:`, factory);
  }

  /** Throws what `lookup` throws for a URL whose scheme has no factory here. */
  check(url: string): void {
    this.lookup(url);
  }

  /** The factory for `url`'s scheme; INVALID_ARGUMENT naming the known schemes when none. */
  lookup(url: string): F {
    const scheme = /^[a-z][a-z0-9+.-]*:/i.exec(url)?.[0]?.toLowerCase();
    const factory = scheme === undefined ? undefined : this.factories.get(scheme);
    if (factory === undefined) {
      throw new ParleyError(
        'INVALID_ARGUMENT',
        `no ${this.kind} for ${url}; known schemes: ${[...this.factories.keys()].join(', ')}`,
      );
    }
    return factory;
  }
}

/** `?prefix=` of a broker URL, as adapter options: apps sharing one server keep apart. */
export function prefixOf(url: string): { prefix?: string } {
  const prefix = new URL(url).searchParams.get('prefix');
  return prefix === null || prefix === '' ? {} : { prefix };
}
