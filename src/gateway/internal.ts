/**
 * @module gateway/internal
 * `POST /rpc/<service>.<action>`: every action of every contract, public or not, as JSON over
 * HTTP, for trusted callers written in other languages. Off unless tokens are configured; a
 * caller presents one as `Authorization: Bearer <token>`. Tokens are compared as SHA-256 digests
 * with `timingSafeEqual`, against every configured token, so neither the comparison nor the loop
 * tells how much of a guess was right; a refused token spends from the gateway's rate limit, as
 * a refused credential does on a public route. The call acts for the principal `{ kind: 'service',
 * subject: 'internal' }`. An input-stream action takes a JSON array of chunks; an output stream
 * answers NDJSON, as on public routes.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { AnyContract } from '../contract/contract.ts';
import { ParleyError } from '../errors.ts';
import type { Principal } from '../runtime/principal.ts';
import { bearerCheck } from './auth/secrets.ts';
import { idempotencyKeyOf, scopedIdempotencyKey } from './idempotency.ts';
import { disconnectSignal, type Invoker, sendResult } from './invoke.ts';
import type { GatewayOptions, GatewayRoute } from './options.ts';
import { HttpProblem } from './problem.ts';
import { gatewayRequest } from './public-routes.ts';

const SERVICE_PRINCIPAL: Principal = Object.freeze({
  kind: 'service',
  subject: 'internal',
  roles: Object.freeze([]) as readonly string[],
  scopes: Object.freeze([]) as readonly string[],
});

/**
 * What a refused service token is charged to in the gateway's rate limit: one route whatever the
 * target (and whichever endpoint took the token: `/metrics` takes the same ones), so spreading
 * guesses over actions buys nothing; no principal, so the bucket is the client's (by default its
 * address), as for any refused credential on a public route.
 */
const REFUSED_TOKEN_ROUTE: GatewayRoute = Object.freeze({
  service: 'rpc',
  action: 'token',
  method: 'POST',
  path: '/rpc/:target',
  def: Object.freeze({ input: z.unknown(), output: z.unknown() }),
});

/**
 * An `onRequest` hook that refuses a request without one of `tokens`. Only refusals spend from
 * `rateLimit`: a caller holding a token is trusted, and is not held to limits made for the public.
 */
export function internalTokenGuard(
  tokens: readonly string[],
  rateLimit: GatewayOptions['rateLimit'],
  message = 'a valid service token is required',
): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
  const allowed = bearerCheck(tokens);
  return async (request, reply) => {
    if (allowed(request.headers.authorization)) return;
    if (rateLimit !== undefined) {
      const decision = await rateLimit(gatewayRequest(request), REFUSED_TOKEN_ROUTE, undefined);
      reply.headers(decision.headers);
      if (decision.refused !== undefined) throw decision.refused;
    }
    reply.header('www-authenticate', 'Bearer realm="parley-internal"');
    throw new ParleyError('UNAUTHENTICATED', message);
  };
}

export interface InternalInit {
  fastify: FastifyInstance;
  contracts: readonly AnyContract[];
  tokens: readonly string[];
  invoker: Invoker;
  bodyLimit: number;
  /** The gateway's rate limit, which refused tokens spend from. */
  rateLimit?: GatewayOptions['rateLimit'];
}

export function registerInternal({
  fastify,
  contracts,
  tokens,
  invoker,
  bodyLimit,
  rateLimit,
}: InternalInit): void {
  if (tokens.length === 0) return;
  const byName = new Map(contracts.map((c) => [c.name, c]));
  fastify.route({
    method: 'POST',
    url: '/rpc/:target',
    bodyLimit,
    onRequest: internalTokenGuard(tokens, rateLimit),
    handler: async (request, reply) => {
      const target = (request.params as { target: string }).target;
      const dot = target.indexOf('.');
      const contract = dot === -1 ? undefined : byName.get(target.slice(0, dot));
      const action = target.slice(dot + 1);
      const def =
        contract !== undefined && Object.hasOwn(contract.actions, action)
          ? contract.actions[action]
          : undefined;
      if (contract === undefined || def === undefined) {
        throw new ParleyError('NOT_FOUND', `no action ${target}; use <service>.<action>`);
      }
      // isMultipart exists where an upload route registered the multipart parser, which reads no
      // body: until 2026-12-03 a form sent here was dropped unread and the action called with none.
      if (typeof request.isMultipart === 'function' && request.isMultipart()) {
        throw new HttpProblem(415, 'INVALID_ARGUMENT', 'Send the body as application/json.');
      }
      // No body is no input; a JSON `null` is a value, validated as sent (until 2026-12-03 it was
      // taken as `{}`, or as no chunks, so a caller's `null` called the action as if it had none).
      const body = request.body === undefined ? (def.stream === 'input' ? [] : {}) : request.body;
      if (def.stream === 'input' && !Array.isArray(body)) {
        throw new ParleyError('INVALID_ARGUMENT', 'an input-stream action takes a JSON array of chunks');
      }
      const key = idempotencyKeyOf(request.headers['idempotency-key']);
      const result = invoker.call({
        contract,
        action,
        def,
        input: body,
        principal: SERVICE_PRINCIPAL,
        signal: disconnectSignal(reply),
        idempotencyKey: key === undefined ? undefined : scopedIdempotencyKey(key, SERVICE_PRINCIPAL),
      });
      return sendResult(reply, result, {
        stream: def.stream === 'output',
        instance: request.url.split('?')[0] ?? '/',
        requestId: request.id,
      });
    },
  });
}
