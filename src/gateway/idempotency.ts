/**
 * @module gateway/idempotency
 * The `Idempotency-Key` request header (IETF httpapi draft, the header Stripe made common): a
 * client that must retry a POST sends the same key again, and the call reaches the service with
 * that key as its `idempotencyKey`. From there the runtime's rules apply: a call with a key may
 * fail over and be retried like an `idempotent` one, and the handler reads `ctx.idempotencyKey`
 * to answer a repeat with the first result instead of doing the work twice.
 *
 * The key a service sees is scoped to who sent it, `<kind>:<subject>/<key>` (each part
 * URI-encoded) or `anonymous/<key>`, so one client cannot reach another's result by sending its
 * key. Anonymous clients share one scope: their keys must be unguessable (a random UUID).
 */
import type { Principal } from '../runtime/principal.ts';
import { HttpProblem } from './problem.ts';

/** The longest key accepted, in characters. */
export const MAX_IDEMPOTENCY_KEY = 255;

/** A bare token: visible ASCII but the quote and backslash (Stripe-style keys, UUIDs). */
const TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
/** The inside of a Structured Field string: printable ASCII, `\"` and `\\` escapes only. */
const SF_STRING = /^"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"$/;

function refuse(why: string): never {
  throw new HttpProblem(400, 'INVALID_ARGUMENT', `Idempotency-Key is refused: ${why}.`);
}

/**
 * The key a request carries: a Structured Field string (`"…"`, as the draft writes it) or a bare
 * token; undefined when the header is absent. A repeated header (Node joins it with `, `), an
 * empty key, one over {@link MAX_IDEMPOTENCY_KEY} characters or other characters: 400.
 */
export function idempotencyKeyOf(header: string | string[] | undefined): string | undefined {
  if (header === undefined) return undefined;
  if (Array.isArray(header)) refuse('send it once');
  const value = header.trim();
  let key: string;
  if (value.startsWith('"')) {
    const m = SF_STRING.exec(value);
    if (m === null) refuse('send one quoted string of printable ASCII, or one token');
    key = (m[1] as string).replace(/\\(["\\])/g, '$1');
  } else {
    if (!TOKEN.test(value)) refuse('send one quoted string of printable ASCII, or one token');
    key = value;
  }
  if (key.length === 0) refuse('it is empty');
  if (key.length > MAX_IDEMPOTENCY_KEY) refuse(`it is longer than ${MAX_IDEMPOTENCY_KEY} characters`);
  return key;
}

/** The key as the service sees it: scoped to the principal that sent it. */
export function scopedIdempotencyKey(key: string, principal: Principal | undefined): string {
  if (principal === undefined) return `anonymous/${key}`;
  return `${encodeURIComponent(principal.kind)}:${encodeURIComponent(principal.subject)}/${key}`;
}
