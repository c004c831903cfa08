/**
 * @module gateway/push/admission
 * Who may open a push connection and for what: the principal the gateway authenticated (or, in
 * the demo mode only, a `?customer=`), the event types asked for and allowed, and the limits.
 * Refusals are RFC 9457 problem documents, written here so that an upgrade request (which never
 * reaches the gateway's error handler once hijacked) gets the same answer as a plain one.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { type ErrorCode, ParleyError } from '../../errors.ts';
import type { Principal } from '../../runtime/principal.ts';
import { PROBLEM_TYPE, toProblem } from '../problem.ts';
import type { Fanout } from './fanout.ts';
import type { PushLogger, PushSource, Viewer } from './options.ts';

export interface PushHooks {
  /** The principal a request acts for, as the gateway authenticated it; undefined: nobody. */
  principalOf(request: FastifyRequest): Promise<Principal | undefined>;
}

export interface Admitted {
  readonly viewer: Viewer;
  readonly key: string;
  readonly types: ReadonlySet<string>;
  readonly lastEventId: string | undefined;
}

export class Refused extends Error {
  constructor(
    readonly code: ErrorCode,
    readonly detail: string,
  ) {
    super(detail);
  }
}

const MAX_TYPES = 32;
const MAX_ID = 200;
const CUSTOMER = /^[^\s\p{C}][^\p{C}]{0,99}$/u;

export interface AdmissionDeps {
  readonly hooks: PushHooks;
  readonly sources: ReadonlyMap<string, PushSource>;
  readonly fanout: Fanout;
  readonly allowAnonymousAudience: boolean;
  readonly logger: () => PushLogger;
}

/** Decides a push request; throws `Refused`. The last check (limits) runs after the last await. */
export async function admit(request: FastifyRequest, deps: AdmissionDeps): Promise<Admitted> {
  const query = (request.query ?? {}) as Record<string, unknown>;
  const principal = await principalOf(request, deps);
  const viewer = viewerOf(principal, query, deps.allowAnonymousAudience);
  const types = typesOf(query, viewer, deps.sources);
  const key =
    principal === undefined ? `anonymous:${viewer.subject ?? ''}` : `${principal.kind}:${principal.subject}`;
  const refusal = deps.fanout.refusal(key);
  if (refusal !== undefined) throw new Refused(refusal.code, refusal.message);
  return { viewer, key, types, lastEventId: lastEventIdOf(request, query) };
}

async function principalOf(request: FastifyRequest, deps: AdmissionDeps): Promise<Principal | undefined> {
  try {
    return await deps.hooks.principalOf(request);
  } catch (error) {
    if (error instanceof ParleyError && !error.unexpected) throw new Refused(error.code, error.message);
    deps.logger().warn({ err: error }, 'push: principalOf failed');
    throw new Refused('INTERNAL', 'could not authenticate the request');
  }
}

function viewerOf(
  principal: Principal | undefined,
  query: Record<string, unknown>,
  anonymous: boolean,
): Viewer {
  // An authenticated principal always wins: `?customer=` can never widen what it sees.
  if (principal !== undefined) return { principal, subject: principal.subject };
  if (!anonymous) throw new Refused('UNAUTHENTICATED', 'push needs an authenticated principal');
  const customer = query.customer;
  if (customer === undefined || customer === '') return { principal: undefined, subject: undefined };
  if (typeof customer !== 'string' || !CUSTOMER.test(customer)) {
    throw new Refused('INVALID_ARGUMENT', 'customer must be 1 to 100 printable characters');
  }
  return { principal: undefined, subject: customer };
}

function typesOf(
  query: Record<string, unknown>,
  viewer: Viewer,
  sources: ReadonlyMap<string, PushSource>,
): ReadonlySet<string> {
  const raw = query.types;
  if (typeof raw !== 'string' || raw === '') {
    throw new Refused('INVALID_ARGUMENT', 'types is required: a comma-separated list of event types');
  }
  const types = new Set(raw.split(',').map((t) => t.trim()));
  if (types.size > MAX_TYPES) throw new Refused('INVALID_ARGUMENT', `at most ${MAX_TYPES} types`);
  for (const type of types) {
    const source = sources.get(type);
    if (source === undefined)
      throw new Refused('INVALID_ARGUMENT', `unknown event type ${type.slice(0, 100)}`);
    if (!source.allow(viewer)) throw new Refused('PERMISSION_DENIED', `not allowed to receive ${type}`);
  }
  return types;
}

/** SSE sends `Last-Event-ID` as a header; a browser WebSocket cannot, so it may come as a query. */
function lastEventIdOf(request: FastifyRequest, query: Record<string, unknown>): string | undefined {
  const header = request.headers['last-event-id'];
  const id = typeof header === 'string' && header !== '' ? header : query.lastEventId;
  return typeof id === 'string' && id !== '' && id.length <= MAX_ID ? id : undefined;
}

/**
 * Sends a refusal as the gateway answers every error: an RFC 9457 problem with the Parley code,
 * the request id (in the body and as `x-request-id`) and the path; anything else as INTERNAL,
 * its detail withheld.
 */
export function sendRefusal(reply: FastifyReply, error: unknown): FastifyReply {
  const refused = error instanceof Refused ? error : new Refused('INTERNAL', 'push failed');
  const request = reply.request;
  const problem = toProblem({
    error: new ParleyError(refused.code, refused.detail),
    instance: (request.raw.url ?? '/').split('?')[0] ?? '/',
    requestId: request.id,
  });
  if (problem.code === 'UNAUTHENTICATED' && !reply.hasHeader('www-authenticate'))
    reply.header('www-authenticate', 'Bearer');
  return reply
    .code(problem.status)
    .header('x-request-id', request.id)
    .type(PROBLEM_TYPE)
    .send(JSON.stringify(problem));
}
