/**
 * @module gateway/public-routes
 * Registers the planned public routes. Per request, before the body is read: authenticate,
 * authorize, rate limit (route-level `onRequest`, so a refused client costs no parsing). Then the
 * input is built from body or query plus path parameters, validated, and the action called.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ParleyError } from '../errors.ts';
import { encodePrincipal, type Principal } from '../runtime/principal.ts';
import { authFailure } from './auth/failure.ts';
import { idempotencyKeyOf, scopedIdempotencyKey } from './idempotency.ts';
import { disconnectSignal, type Invoker, sendResult } from './invoke.ts';
import type { GatewayOptions, GatewayRequest } from './options.ts';
import { HttpProblem } from './problem.ts';
import { inputFromQuery, type PlannedRoute, withParams } from './routes.ts';
import { callWithUpload } from './upload.ts';

/** Room for multipart boundaries and part headers around an upload of the full limit. */
const UPLOAD_OVERHEAD = 64 * 1024;

export interface PublicRoutesInit {
  fastify: FastifyInstance;
  routes: readonly PlannedRoute[];
  invoker: Invoker;
  options: GatewayOptions;
  bodyLimit: number;
  uploadLimit: number;
}

/** The request path without the query: a problem's `instance`. */
const gatewayPath = (request: FastifyRequest) => request.url.split('?')[0] ?? '/';

/** The hook view of a Fastify request. */
export function gatewayRequest(request: FastifyRequest): GatewayRequest {
  const url = request.raw.url ?? '/';
  const q = url.indexOf('?');
  return {
    id: request.id,
    method: request.method,
    path: q === -1 ? url : url.slice(0, q),
    headers: request.headers,
    ip: request.socket.remoteAddress ?? '',
  };
}

/**
 * Refuses, where credentials are checked, a principal that could not travel in an envelope: the
 * call would fail later as INVALID_ARGUMENT (a 400, as if the request were malformed). Too large
 * (a token with more claims than fit): the credential is refused (401, `too_large`), and counted
 * by the rate limit as any refused credential. Not a principal at all: the `authenticate` hook's
 * bug (500).
 */
function carriable(principal: Principal): void {
  try {
    encodePrincipal(principal);
  } catch (error) {
    const e = ParleyError.from(error);
    if (e.details?.reason === 'too_large') throw authFailure('too_large');
    throw new ParleyError('INTERNAL', `authenticate returned an unusable principal: ${e.message}`);
  }
}

export function registerPublicRoutes(init: PublicRoutesInit): void {
  const { fastify, invoker, options } = init;
  // Per gateway, not per module: who each in-flight request acts for.
  const principals = new WeakMap<FastifyRequest, Principal>();

  for (const route of init.routes) {
    const admit = async (request: FastifyRequest, reply: FastifyReply) => {
      const view = gatewayRequest(request);
      let principal: Principal | undefined;
      let unauthenticated: unknown;
      try {
        principal = await options.authenticate?.(view);
        if (principal !== undefined) carriable(principal);
      } catch (error) {
        principal = undefined;
        unauthenticated = error;
      }
      // Refused credentials are counted too (in the bucket of the client, as anonymous): guessing
      // tokens or keys spends the same tokens as any request.
      if (options.rateLimit !== undefined) {
        const decision = await options.rateLimit(view, route, principal);
        reply.headers(decision.headers);
        if (decision.refused !== undefined) throw decision.refused;
      }
      if (unauthenticated !== undefined) throw unauthenticated;
      options.authorize?.(principal, route);
      if (principal !== undefined) principals.set(request, principal);
    };
    const admits =
      options.authenticate !== undefined ||
      options.authorize !== undefined ||
      options.rateLimit !== undefined;
    // A client that goes away cancels what it started when that can run long (a stream, an
    // upload); a plain call runs to its end or its deadline: an AbortController per request
    // cost more than the rest of the gateway's own work.
    const cancellable = route.input === 'upload' || route.def.stream !== undefined;
    fastify.route({
      method: route.method,
      url: route.path,
      config: {
        parleyBodyLimit: route.input === 'upload' ? init.uploadLimit + UPLOAD_OVERHEAD : init.bodyLimit,
      },
      bodyLimit: init.bodyLimit,
      ...(admits ? { onRequest: admit } : {}),
      handler: async (request, reply) => {
        const signal = cancellable ? disconnectSignal(reply) : undefined;
        // Only the admission hook sets one.
        const principal = admits ? principals.get(request) : undefined;
        // GET is safe to repeat as it is; on other methods a key makes a retry safe too.
        const key = route.method === 'GET' ? undefined : idempotencyKeyOf(request.headers['idempotency-key']);
        const idempotencyKey = key === undefined ? undefined : scopedIdempotencyKey(key, principal);
        let result: unknown;
        if (route.input === 'upload') {
          const common = {
            contract: route.contract,
            action: route.action,
            def: route.def,
            principal,
            idempotencyKey,
            signal: signal ?? disconnectSignal(reply),
          };
          result = await callWithUpload({ request, invoker, limit: init.uploadLimit, common });
        } else {
          const input = withParams(
            inputOf(route, request),
            request.params as Record<string, string>,
            route.kinds,
          );
          result = invoker.call({
            contract: route.contract,
            action: route.action,
            def: route.def,
            principal,
            signal,
            idempotencyKey,
            input,
          });
        }
        const stream = route.def.stream === 'output';
        return sendResult(reply, result, {
          stream,
          // Only a stream's late failure is written here; other problems name it in sendProblem.
          instance: stream ? gatewayPath(request) : '',
          requestId: request.id,
        });
      },
    });
  }
}

function inputOf(route: PlannedRoute, request: FastifyRequest): Record<string, unknown> {
  if (route.input === 'query') {
    return inputFromQuery(request.query as Record<string, string | string[] | undefined>, route.kinds);
  }
  // isMultipart exists only when an upload route registered the multipart parser (without it,
  // Fastify answers a multipart body with 415 before any handler runs).
  if (typeof request.isMultipart === 'function' && request.isMultipart())
    throw new HttpProblem(415, 'INVALID_ARGUMENT', 'Send the body as application/json.');
  const body = request.body;
  if (body === undefined) return {};
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ParleyError('INVALID_ARGUMENT', 'the body must be a JSON object', {
      details: { violations: [{ path: '', message: 'expected a JSON object', code: 'invalid_type' }] },
    });
  }
  return body as Record<string, unknown>;
}
