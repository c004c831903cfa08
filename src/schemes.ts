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

/**
 * `url` parsed, or INVALID_ARGUMENT naming its scheme and `kind` but not the URL, which may hold a
 * password. Until 2026-12-03 a malformed broker or transport URL (`redis://[::1`, a port over
 * 65535) failed with the URL parser's TypeError, an unexpected INTERNAL error.
 */
export function parseUrl(url: string, kind: string): URL {
  try {
    return new URL(url);
  } catch {
    throw new ParleyError(
      'INVALID_ARGUMENT',
      `not a valid ${url.slice(0, url.indexOf(':') + 1)} ${kind} URL`,
    );
  }
}

/** `?prefix=` of a broker or transport URL, as adapter options: apps sharing one server keep apart. */
export function prefixOf(url: URL): { prefix?: string } {
  const prefix = url.searchParams.get('prefix');
  return prefix === null || prefix === '' ? {} : { prefix };
}
