/**
 * @module gateway/push
 * Server push for the gateway: `GET /events` (Server-Sent Events) and `GET /ws` (WebSocket).
 * `createPush` gives a Parley service with ephemeral subscriptions to the configured events (the
 * gateway's node hosts it), and `register` adds the two routes to the gateway's Fastify instance.
 *
 * Guarantee (DESIGN.md): at most once per connection, in arrival order per connection; resumable
 * with `Last-Event-ID` where the broker keeps history (`follow`: the events are read from its log,
 * on any gateway instance, as far back as its retention), else while the event is in this
 * gateway's history ring; past that a `reset` event tells the client to refetch its state. The
 * client reconnects.
 *
 * ```ts
 * const push = createPush({
 *   sources: [pushSource(notifications, 'notifications.order-status', { audience: (e) => e.customer })],
 * });
 * const node = createNode({ services: [push.service], ... });
 * await push.register(fastify, { principalOf: (request) => auth.principalOf(request) });
 * // on shutdown: await push.close(); await fastify.close();
 * ```
 */
import websocket from '@fastify/websocket';
import type { FastifyInstance } from 'fastify';
import type { BrokerHistory } from '../../broker/broker.ts';
import { defineContract } from '../../contract/contract.ts';
import { systemClock } from '../../runtime/clock.ts';
import { implement, type Service, subscribe } from '../../runtime/service.ts';
import { type Admitted, admit, type PushHooks, Refused, sendRefusal } from './admission.ts';
import { Fanout, type PushStats } from './fanout.ts';
import { Feed } from './feed.ts';
import { type PushLogger, type PushOptions, type PushSource, resolveOptions } from './options.ts';
import { sseWire } from './sse-wire.ts';
import { wsWire } from './ws-wire.ts';

/** The largest message a push WebSocket client may send (it is read by nobody). */
const CLIENT_MESSAGE_LIMIT = 4096;

export interface Push {
  /** Host it on the gateway's node: its ephemeral subscriptions feed every connection. */
  readonly service: Service;
  /**
   * Adds `GET /events` and `GET /ws`. Uses @fastify/websocket when the instance already has it,
   * else registers it inside its own scope (so register it before this, or not at all).
   */
  register(fastify: FastifyInstance, hooks: PushHooks): Promise<void>;
  /**
   * Takes the sources' events from the broker's log (`broker.history`) instead of notifications;
   * call it before `register`. Event ids become log positions, which mean the same on every
   * gateway instance and after a restart: a client reconnecting anywhere with `Last-Event-ID` is
   * given what it missed, read from the broker, as far back as its retention keeps (else a
   * `reset`). The services then publish these events durably (`ctx.publish`); notifications of
   * the same types are no longer pushed.
   */
  follow(history: BrokerHistory): Promise<void>;
  /** Sends `bye` to every connection and ends them; new connections get 503 from then on. */
  close(): Promise<void>;
  stats(): PushStats;
}

/** Close code for "try again later" (RFC 6455 registry): the connection limit was hit during the upgrade. */
const TRY_AGAIN_LATER = 1013;

export function createPush(options: PushOptions): Push {
  const resolved = resolveOptions(options);
  const clock = options.clock ?? systemClock;
  let logger: PushLogger = options.logger ?? { warn: () => undefined, info: () => undefined };
  const fanout = new Fanout(resolved, clock, () => logger);

  const sources = new Map<string, PushSource>();
  for (const source of options.sources) {
    if (sources.has(source.event)) throw new TypeError(`push source ${source.event} is listed twice`);
    sources.set(source.event, source);
  }
  const contract = defineContract({ name: resolved.serviceName, version: '1.0.0', actions: {}, events: {} });
  const service = implement(contract, {
    actions: {},
    on: [...sources.values()].map((source) =>
      subscribe(
        source.contract,
        source.event,
        (payload: unknown) => {
          if (fanout.following) return; // the log brings the events
          const audience = audienceOf(source, payload);
          if (audience !== DROP) fanout.publish(source.event, audience, payload);
        },
        { ephemeral: true },
      ),
    ),
  });

  const DROP = Symbol('drop');
  function audienceOf(source: PushSource, payload: unknown): string | undefined | typeof DROP {
    try {
      return source.audience(payload);
    } catch (error) {
      // Without an audience the event could reach the wrong people: it is not pushed.
      logger.warn({ err: error, type: source.event }, 'push: audience failed, event dropped');
      return DROP;
    }
  }

  let feed: Feed | undefined;
  const follow = async (history: BrokerHistory): Promise<void> => {
    if (feed !== undefined) throw new TypeError('push already follows a log');
    const f = new Feed({
      history,
      sources: [...sources.values()],
      clock,
      logger: () => logger,
      maxResumeEvents: resolved.maxResumeEvents,
      accept: (source, payload) => {
        const audience = audienceOf(source, payload);
        if (audience === DROP) return undefined;
        const data = fanout.serialise(source.event, payload);
        return data === undefined ? undefined : { type: source.event, audience, data };
      },
      publish: (event) => fanout.deliver(event),
    });
    await f.start();
    feed = f;
    fanout.useFeed(f);
  };

  const register = async (fastify: FastifyInstance, hooks: PushHooks): Promise<void> => {
    if (options.logger === undefined) logger = fastify.log;
    const deps = {
      hooks,
      sources,
      fanout,
      allowAnonymousAudience: resolved.allowAnonymousAudience,
      logger: () => logger,
    };
    // Admission of WebSocket upgrades, kept per request until the socket is open.
    const admitted = new WeakMap<object, Admitted>();
    await fastify.register(async (scope) => {
      // Clients send nothing on this socket (server push only): a message over 4 KiB closes it
      // (1009) instead of being buffered up to ws's default of 100 MiB; smaller ones are ignored.
      if (!scope.hasDecorator('websocketServer'))
        await scope.register(websocket, { options: { maxPayload: CLIENT_MESSAGE_LIMIT } });

      scope.get('/events', { exposeHeadRoute: false }, async (request, reply) => {
        let admission: Admitted;
        try {
          admission = await admit(request, deps);
        } catch (error) {
          return sendRefusal(reply, error);
        }
        // The limits again, in the same turn as the attach: requests whose authentication settled
        // together (all waiting on one JWKS fetch) each passed admit's check before any attached.
        const again = fanout.refusal(admission.key);
        if (again !== undefined) return sendRefusal(reply, new Refused(again.code, again.message));
        // From here on this module owns the response; headers other hooks set (CORS) go along,
        // with those the gateway sets on every answer (its onSend hook does not run for this one).
        reply.hijack();
        // The client left while it was being admitted: its connection's 'close' has fired
        // already, so one attached now would hold its slot (and push.close()) for ever.
        if (request.raw.socket === null || request.raw.socket.destroyed) {
          reply.raw.destroy();
          return;
        }
        const headers = {
          ...(reply.getHeaders() as Record<string, string | string[] | number>),
          'x-request-id': request.id,
          'x-content-type-options': 'nosniff',
        };
        fanout.attach(sseWire(reply.raw, resolved.retryMs, headers), admission);
      });

      scope.route({
        method: 'GET',
        url: '/ws',
        exposeHeadRoute: false,
        preHandler: async (request, reply) => {
          try {
            admitted.set(request, await admit(request, deps));
          } catch (error) {
            return sendRefusal(reply, error);
          }
        },
        handler: (_request, reply) =>
          sendRefusal(reply, new Refused('FAILED_PRECONDITION', 'use a WebSocket upgrade')),
        wsHandler: (socket, request) => {
          const admission = admitted.get(request);
          admitted.delete(request);
          // The upgrade took time: the limits are checked again, now, before the socket counts.
          if (admission === undefined || fanout.refusal(admission.key) !== undefined) {
            socket.close(TRY_AGAIN_LATER, 'push connection refused');
            return;
          }
          fanout.attach(wsWire(socket), admission);
        },
      });
    });
  };

  const close = async (): Promise<void> => {
    feed?.close();
    await fanout.close();
  };
  return { service, follow, register, close, stats: () => fanout.stats() };
}
