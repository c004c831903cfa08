/**
 * @module runtime/principal
 * Who a call acts for: the end user or API client that an edge (the gateway) authenticated. It
 * is set once, at the edge, as `CallOptions.principal`, travels in the envelope's `principal`
 * extension attribute (JSON), reaches the callee as `ctx.caller.principal`, and goes on with
 * every call and event made from that handler. Nodes trust each other's envelopes: a principal is
 * as trustworthy as the transport it came over (protect the bus, see the README's security notes).
 */
import { ParleyError } from '../errors.ts';

export interface Principal {
  /** How it was authenticated: `user` (a token), `apiKey`, `service` (an internal credential). */
  readonly kind: string;
  /** The token's `sub`, or the API key's owner. */
  readonly subject: string;
  readonly roles: readonly string[];
  readonly scopes: readonly string[];
  /** The verified claims the edge chose to pass on. */
  readonly claims?: Readonly<Record<string, unknown>>;
}

/** Largest principal carried in an envelope, as JSON. */
export const MAX_PRINCIPAL_BYTES = 8 * 1024;

const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string');

/** Wire forms of frozen principals, made once each (see `encodePrincipal`). */
const encoded = new WeakMap<Principal, string>();

/**
 * The wire form of a principal; INVALID_ARGUMENT when it is not one or is too large. A frozen
 * principal (the gateway's are) is encoded once: the gateway's check when it authenticates, the
 * call it then makes and that call's retries share one text.
 */
export function encodePrincipal(p: Principal): string {
  const known = typeof p === 'object' && p !== null ? encoded.get(p) : undefined;
  if (known !== undefined) return known;
  if (
    typeof p?.kind !== 'string' ||
    typeof p.subject !== 'string' ||
    !strings(p.roles) ||
    !strings(p.scopes)
  ) {
    throw new ParleyError('INVALID_ARGUMENT', 'principal needs kind, subject, roles and scopes');
  }
  const wire = JSON.stringify({
    kind: p.kind,
    subject: p.subject,
    roles: p.roles,
    scopes: p.scopes,
    ...(p.claims === undefined ? {} : { claims: p.claims }),
  });
  const bytes = Buffer.byteLength(wire);
  if (bytes > MAX_PRINCIPAL_BYTES) {
    throw new ParleyError('INVALID_ARGUMENT', `principal over ${MAX_PRINCIPAL_BYTES} bytes`, {
      details: { reason: 'too_large', bytes },
    });
  }
  if (Object.isFrozen(p)) encoded.set(p, wire);
  return wire;
}

/** A principal read back from an envelope; undefined for anything that is not one. */
export function decodePrincipal(wire: string | undefined): Principal | undefined {
  if (wire === undefined || wire.length > MAX_PRINCIPAL_BYTES) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(wire);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o.kind !== 'string' || typeof o.subject !== 'string' || !strings(o.roles) || !strings(o.scopes))
    return undefined;
  const claims =
    typeof o.claims === 'object' && o.claims !== null && !Array.isArray(o.claims)
      ? (o.claims as Record<string, unknown>)
      : undefined;
  return Object.freeze({
    kind: o.kind,
    subject: o.subject,
    roles: Object.freeze([...o.roles]),
    scopes: Object.freeze([...o.scopes]),
    ...(claims === undefined ? {} : { claims: Object.freeze({ ...claims }) }),
  });
}
