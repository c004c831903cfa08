/**
 * @module gateway/gateway
 * The HTTP edge: Fastify with routes planned from contracts, checks every request passes before
 * its body is read (target, headers, declared length, CORS), errors as problem+json, a request id
 * on every response, OpenAPI and docs, health, metrics, an internal JSON endpoint, and a graceful
 * close.
 */
import type { AddressInfo } from 'node:net';
import multipart from '@fastify/multipart';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify';
import { contractJsonSchema } from '../contract/json-schema.ts';
import { ParleyError } from '../errors.ts';
import { createCors } from './cors.ts';
import { docsPage } from './docs-page.ts';
import {
  checkDeclaredLength,
  checkHeaderCount,
  checkTarget,
  clientErrorHandler,
  requestIdOf,
} from './hardening.ts';
import { registerHealth } from './health.ts';
import { registerInternal } from './internal.ts';
import { Invoker } from './invoke.ts';
import { registerGatewayMetrics } from './metrics.ts';
import { buildOpenApi } from './openapi.ts';
import type { GatewayOptions, GatewayRoute } from './options.ts';
import { HttpProblem, PROBLEM_TYPE, toProblem } from './problem.ts';
import { registerPublicRoutes } from './public-routes.ts';
import { planRoutes } from './routes.ts';

export interface Gateway {
  /** Starts listening; the URL has the actual port. Refused once `close()` was called. */
  listen(): Promise<{ url: string }>;
  /**
   * Stops accepting (once a `listen()` under way has finished), runs the `onClose` hooks (push
   * connections end here), lets in-flight requests finish for up to `closeTimeout` ms, then cuts
   * what is left and closes.
   */
  close(): Promise<void>;
  /** Adds work to do first on close, e.g. ending long-lived push connections. */
  onClose(hook: () => void | Promise<void>): void;
  /** The public routes, as planned from the contracts. */
  readonly routes: readonly GatewayRoute[];
  /** For modules that add routes (push) before `listen()`. */
  readonly fastify: FastifyInstance;
}

const MiB = 1024 * 1024;

export function createGateway(options: GatewayOptions): Gateway {
  const basePath = (options.basePath ?? '/api').replace(/\/+$/, '');
  if (basePath !== '' && !/^(\/[A-Za-z0-9_.~-]+)+$/.test(basePath)) {
    throw new ParleyError('INVALID_ARGUMENT', `gateway: basePath "${options.basePath}" is not a plain path`);
  }
  // A header's value is trimmed and its scheme's spaces are taken by the parser: until 2026-12-03 a
  // blank internal token (`[process.env.TOKEN ?? '']`) turned `/rpc` on with no token to present.
  for (const token of options.internal?.tokens ?? []) {
    if (token.trim() === '' || token.trim() !== token) {
      throw new ParleyError(
        'INVALID_ARGUMENT',
        'gateway: an internal token is blank or has spaces around it: no request could present it',
      );
    }
  }
  const bodyLimit = options.bodyLimit ?? MiB;
  const uploadLimit = options.uploadLimit ?? 10 * MiB;
  const maxHeaders = options.maxHeaders ?? 100;
  const maxUrlLength = options.maxUrlLength ?? 2048;
  const closeTimeout = options.closeTimeout ?? 10_000;
  const timeouts = requestTimeouts(options.requestTimeout);
  const host = options.host?.trim() || '127.0.0.1';

  const inputSchemas = new Map<string, Record<string, unknown>>();
  const outputSchemas = new Map<string, Record<string, unknown>>();
  for (const contract of options.contracts) {
    const js = contractJsonSchema(contract);
    for (const [action, s] of Object.entries(js.actions)) {
      inputSchemas.set(`${contract.name}.${action}`, s.input as Record<string, unknown>);
      outputSchemas.set(`${contract.name}.${action}`, s.output as Record<string, unknown>);
    }
  }
  const routes = planRoutes({ contracts: options.contracts, basePath, inputSchemas });
  const logger = options.logger ?? options.node.logger.child({ component: 'gateway' });

  const fastify = Fastify({
    // Typed as Fastify's logger interface, which pino's Logger implements.
    loggerInstance: logger as FastifyBaseLogger,
    // Per-request info lines would flood the log; failures are logged where they are answered.
    logController: new LogController({ disableRequestLogging: true }),
    // No child logger per request: making one (its bindings written as JSON) cost about 1 µs a
    // request, for the rare line Fastify itself logs. The gateway's own lines name the request id.
    // Fastify checks what a factory of our own returns on every request (≈0.35 µs in the gateway
    // bench's profile); a logger whose child() is itself would skip that, but would also make
    // `gateway.fastify.log.child(...)` and a plugin's `logLevel` lose what they ask for.
    childLoggerFactory: (parent) => parent,
    bodyLimit,
    genReqId: requestIdOf,
    // Given to Node at creation: set on the server afterwards (as Fastify does with its own
    // `requestTimeout`, 0 by default) it is never checked.
    http: { maxHeaderSize: options.maxHeaderBytes ?? 16 * 1024, ...timeouts },
    requestTimeout: timeouts.requestTimeout,
    // Refused by the onRequest hook below instead, so that the 503 is a problem like every other
    // answer (Fastify's own is plain JSON, without the request id: it skips every hook).
    return503OnClosing: false,
    // HEAD would run the action behind a GET route for no answer; it gets 405 instead.
    exposeHeadRoutes: false,
    forceCloseConnections: 'idle',
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    clientErrorHandler,
    frameworkErrors: (error, request, reply) => sendProblem(request, reply, error),
  });
  // Node drops headers past maxHeadersCount (2000 by default) without an error; checkHeaderCount
  // must see more than the limit to refuse it. Not lower: a dropped Host header reads as a 400.
  fastify.server.maxHeadersCount = Math.max(2000, maxHeaders + 1);
  // Bodies are JSON (or multipart on upload routes); text/plain would be a second way in.
  fastify.removeContentTypeParser('text/plain');
  if (routes.some((r) => r.input === 'upload')) {
    fastify.register(multipart, { limits: { fileSize: uploadLimit, files: 1 } });
  }

  if (options.metrics !== undefined) {
    // First, so its onRequest hook times the checks below too.
    const wanted = options.metricsEndpoint ?? 'internal';
    const tokens = options.internal?.tokens ?? [];
    registerGatewayMetrics({
      fastify,
      metrics: options.metrics,
      endpoint:
        wanted === 'internal'
          ? tokens.length === 0
            ? 'none'
            : { tokens, rateLimit: options.rateLimit }
          : wanted,
    });
  }

  let closing = false;
  /** The server is closing: requests that still arrive on open connections are refused. */
  let refusing = false;
  const cors =
    options.cors === undefined ? undefined : createCors(options.cors.origins, options.cors.headers);
  const allowed = methodsByPath(routes);
  // Callback hooks, not async ones: every request runs them, and a promise each is measurable.
  fastify.addHook('onRequest', (request, reply, done) => {
    try {
      // X-Request-Id is set in onSend, which every answer passes, the refusals below included.
      if (cors !== undefined) reply.headers(cors.simple(request.headers));
      if (refusing) throw new ParleyError('UNAVAILABLE', 'the gateway is shutting down');
      checkTarget(request.raw.url ?? '/', maxUrlLength);
      checkHeaderCount(request.raw, maxHeaders);
      checkDeclaredLength(request.raw, request.routeOptions.config?.parleyBodyLimit ?? bodyLimit);
    } catch (error) {
      done(error as Error);
      return;
    }
    done();
  });
  fastify.addHook('onSend', (request, reply, payload, done) => {
    // Also on answers the error paths build afresh.
    reply.header('x-request-id', request.id);
    reply.header('x-content-type-options', 'nosniff');
    // A connection whose request was in flight when close began would stay open (keep-alive) and
    // hold the close until its timeout: the answer tells the client this connection ends.
    if (closing) reply.header('connection', 'close');
    done(null, payload);
  });
  fastify.setErrorHandler((error: FastifyError, request, reply) => sendProblem(request, reply, error));
  fastify.setNotFoundHandler((request, reply) => {
    const path = (request.raw.url ?? '/').split('?')[0] ?? '/';
    const methods = allowed(path);
    if (methods.length > 0 && request.method !== 'OPTIONS') {
      const e = new HttpProblem(
        405,
        'UNIMPLEMENTED',
        `${request.method} is not allowed here; use ${methods.join(', ')}.`,
        {
          allow: methods.join(', '),
        },
      );
      return sendProblem(request, reply, e);
    }
    return sendProblem(request, reply, new ParleyError('NOT_FOUND', `no route ${request.method} ${path}`));
  });
  fastify.options('/*', async (request, reply) => {
    const methods = allowed((request.raw.url ?? '/').split('?')[0] ?? '/');
    if (methods.length === 0) throw new ParleyError('NOT_FOUND', 'no route here');
    const headers =
      cors !== undefined && request.headers['access-control-request-method'] !== undefined
        ? cors.preflight(request.headers, methods)
        : undefined;
    if (cors !== undefined && headers === undefined && request.headers.origin !== undefined) {
      throw new ParleyError('PERMISSION_DENIED', 'this origin may not call the API');
    }
    return reply
      .code(204)
      .headers({ allow: methods.join(', '), ...headers })
      .send();
  });

  const invoker = new Invoker(options.node, options.callTimeout ?? 10_000);
  registerPublicRoutes({ fastify, routes, invoker, options, bodyLimit, uploadLimit });
  registerInternal({
    fastify,
    contracts: options.contracts,
    tokens: options.internal?.tokens ?? [],
    invoker,
    bodyLimit,
    rateLimit: options.rateLimit,
  });
  registerHealth({ fastify, node: options.node, contracts: options.contracts, closing: () => closing });
  const securitySchemes =
    options.securitySchemes ??
    (options.authenticate === undefined ? undefined : { bearer: { type: 'http', scheme: 'bearer' } });
  const openapi = JSON.stringify(buildOpenApi({ routes, outputSchemas, securitySchemes }));
  fastify.get('/openapi.json', async (_request, reply) => reply.type('application/json').send(openapi));
  const docs = docsPage();
  fastify.get('/docs', async (_request, reply) =>
    reply.type('text/html; charset=utf-8').header('content-security-policy', docs.csp).send(docs.html),
  );

  const closeHooks: (() => void | Promise<void>)[] = [];
  let closed: Promise<void> | undefined;
  let listening: Promise<unknown> | undefined;
  return {
    routes,
    fastify,
    onClose: (hook) => void closeHooks.push(hook),
    async listen() {
      // Until 2026-12-03 a listen() after close() (a shutdown signal that came during start-up)
      // opened a server nothing would close, and kept the process alive.
      if (closed !== undefined) throw new ParleyError('FAILED_PRECONDITION', 'gateway: it is closed');
      listening = fastify.listen({ host, port: options.port ?? 0 });
      await listening;
      const { port } = fastify.server.address() as AddressInfo;
      return { url: `http://${host.includes(':') ? `[${host}]` : host}:${port}` };
    },
    close() {
      closed ??= (async () => {
        closing = true;
        // A listen() under way finishes first, so that the server it opens is the one closed.
        await listening?.catch(() => undefined);
        // One bound for all of it: the close hooks (push connections saying goodbye) and the drain.
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<'late'>((resolve) => {
          timer = setTimeout(() => resolve('late'), closeTimeout);
        });
        try {
          const hooks = Promise.allSettled(closeHooks.map(async (hook) => hook()));
          if ((await Promise.race([hooks.then(() => 'done' as const), late])) === 'late')
            logger.warn('gateway close timeout: close hooks still running; closing the server');
          refusing = true;
          const done = fastify.close();
          if ((await Promise.race([done.then(() => 'done' as const), late])) === 'late') {
            logger.warn('gateway close timeout: cutting the connections still open');
            fastify.server.closeAllConnections();
            await done;
          }
        } finally {
          // Also when Fastify's close fails (a plugin's onClose hook threw): until 2026-12-03 the
          // timer was left to run, and held the process for up to `closeTimeout` after it.
          clearTimeout(timer);
        }
      })();
      return closed;
    },
  };
}

function sendProblem(request: FastifyRequest, reply: FastifyReply, error: unknown): FastifyReply {
  const problem = toProblem({
    error,
    instance: (request.raw.url ?? '/').split('?')[0] ?? '/',
    requestId: request.id,
  });
  if (problem.status >= 500) request.log.error({ err: error, requestId: request.id }, 'request failed');
  // Router errors (a malformed URL) are answered before any hook has run.
  reply.header('x-request-id', request.id);
  if (error instanceof HttpProblem) reply.headers(error.headers);
  if (problem.code === 'UNAUTHENTICATED' && !reply.hasHeader('www-authenticate')) {
    reply.header('www-authenticate', 'Bearer');
  }
  return reply.code(problem.status).type(PROBLEM_TYPE).send(JSON.stringify(problem));
}

/** The methods routes answer on a concrete path, for 405 `Allow` and CORS preflight. */
function methodsByPath(routes: readonly GatewayRoute[]): (path: string) => string[] {
  const compiled = routes.map((r) => ({
    method: r.method,
    pattern: new RegExp(
      `^${r.path
        .split('/')
        .map((s) => (s.startsWith(':') ? '[^/]+' : s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
        .join('/')}$`,
    ),
  }));
  return (path) => [...new Set(compiled.filter((c) => c.pattern.test(path)).map((c) => c.method))];
}

/**
 * Node's request timers for `requestTimeout` (see `GatewayOptions`): the head within 60 s at most,
 * and the check for both run often enough that a short limit holds. Until 2026-12-03 Fastify's
 * default was kept, no limit: a client that sent a head and part of a body held its connection
 * for as long as it liked.
 */
function requestTimeouts(given: number | undefined) {
  const requestTimeout = given ?? 300_000;
  if (!Number.isSafeInteger(requestTimeout) || requestTimeout < 0) {
    throw new ParleyError(
      'INVALID_ARGUMENT',
      'gateway: requestTimeout must be a whole number of ms, 0 or more',
    );
  }
  const headersTimeout = requestTimeout === 0 ? 60_000 : Math.min(60_000, requestTimeout);
  const connectionsCheckingInterval = Math.min(30_000, Math.max(10, Math.ceil(headersTimeout / 4)));
  return { requestTimeout, headersTimeout, connectionsCheckingInterval };
}
