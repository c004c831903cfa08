/**
 * @module gateway/internal
 * `POST /rpc/<service>.<action>`: every action of every contract, public or not, as JSON over
 * HTTP, for trusted callers written in other languages. Off unless tokens are configured; a
 * caller presents one as `Authorization: Bearer <token>`. Tokens are compared as SHA-256 digests
 * with `timingSafeEqual`, against every configured token, so neither the comparison nor the loop
 * tells how much of a guess was right. The call acts for the principal `{ kind: 'service',
 * subject: 'internal' }`. An input-stream action takes a JSON array of chunks; an output stream
 * answers NDJSON, as on public routes.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AnyContract } from '../contract/contract.ts';
import { ParleyError } from '../errors.ts';
import type { Principal } from '../runtime/principal.ts';
import { bearerCheck } from './auth/secrets.ts';
import { idempotencyKeyOf, scopedIdempotencyKey } from './idempotency.ts';
import { disconnectSignal, type Invoker, sendResult } from './invoke.ts';

const SERVICE_PRINCIPAL: Principal = Object.freeze({
  kind: 'service',
  subject: 'internal',
  roles: Object.freeze([]) as readonly string[],
  scopes: Object.freeze([]) as readonly string[],
});

/** True when the request carries one of the tokens. */
export function createTokenCheck(tokens: readonly string[]): (request: FastifyRequest) => boolean {
  const check = bearerCheck(tokens);
  return (request) => check(request.headers.authorization);
}

export interface InternalInit {
  fastify: FastifyInstance;
  contracts: readonly AnyContract[];
  tokens: readonly string[];
  invoker: Invoker;
  bodyLimit: number;
}

export function registerInternal({ fastify, contracts, tokens, invoker, bodyLimit }: InternalInit): void {
  if (tokens.length === 0) return;
  const allowed = createTokenCheck(tokens);
  const byName = new Map(contracts.map((c) => [c.name, c]));
  fastify.route({
    method: 'POST',
    url: '/rpc/:target',
    bodyLimit,
    onRequest: async (request, reply) => {
      if (!allowed(request)) {
        reply.header('www-authenticate', 'Bearer realm="parley-internal"');
        throw new ParleyError('UNAUTHENTICATED', 'a valid service token is required');
      }
    },
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
      const body = request.body ?? (def.stream === 'input' ? [] : {});
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
