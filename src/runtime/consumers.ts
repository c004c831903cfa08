/**
 * @module runtime/consumers
 * A service's durable subscriptions as broker consumers: each delivery runs the handler through
 * the server (validation, context, deadline); a shared bulkhead may bound several consumers; a
 * handler stopped by an open circuit breaker puts its message back without spending an attempt.
 */
import type { Broker, Consumer, Delivery } from '../broker/broker.ts';
import { DEFAULT_LEASE_MS, MAX_DELAY_MS } from '../broker/check.ts';
import { ParleyError } from '../errors.ts';
import type { Clock } from './clock.ts';
import type { Server } from './serve.ts';
import type { Service, Subscription } from './service.ts';

export async function subscribeDurable(
  broker: Broker,
  server: Server,
  service: Service,
  clock: Clock,
  /** The node's `defaultTimeout`: a handler's budget when its subscription sets no `timeout`. */
  defaultTimeout: number,
): Promise<Consumer[]> {
  const consumers: Consumer[] = [];
  try {
    for (const sub of service.subscriptions) {
      const consumer = await subscribeOne(broker, server, service, sub, clock, defaultTimeout);
      if (consumer !== undefined) consumers.push(consumer);
    }
  } catch (error) {
    // A subscription the broker refused fails the node's start: the ones made before it close
    // too. Until 2026-12-03 they stayed subscribed, and a node that had failed to start went on
    // handling (and acking) their messages.
    await Promise.allSettled(consumers.map((c) => c.close()));
    throw error;
  }
  return consumers;
}

/** What a lease outlasts a handler's time budget by: room to settle the delivery once it ends. */
const LEASE_MARGIN_MS = 5_000;

/**
 * The lease of a subscription that sets none: the broker's default, or longer when its handler
 * may run longer (its `timeout`, else the node's `defaultTimeout`). Until 2026-12-03 a handler
 * given more time than 30 s had its message leased again while it ran, and ran twice at once.
 */
function leaseOf(lease: number | undefined, timeout: number): number | undefined {
  if (lease !== undefined || !(timeout + LEASE_MARGIN_MS > DEFAULT_LEASE_MS)) return lease;
  return Math.min(timeout + LEASE_MARGIN_MS, MAX_DELAY_MS);
}

async function subscribeOne(
  broker: Broker,
  server: Server,
  service: Service,
  sub: Subscription,
  clock: Clock,
  defaultTimeout: number,
): Promise<Consumer | undefined> {
  const { ephemeral, group, timeout, bulkhead, lease: given, ...rest } = sub.options;
  if (ephemeral) return undefined;
  const lease = leaseOf(given, typeof timeout === 'number' ? timeout : defaultTimeout);
  const spec = {
    topic: sub.event,
    group: group ?? service.contract.name,
    ...rest,
    ...(lease === undefined ? {} : { lease }),
  };
  const failed = (error: unknown): never => {
    throw pausedBy(error, clock.now());
  };
  // One `then` a delivery (not `then` + `catch`); it resolves with whatever the handler
  // returned: brokers only wait for it.
  const run = (delivery: Delivery) =>
    server
      .runEventHandler(sub, delivery.envelope, service.contract.name, delivery)
      .then(undefined, failed) as Promise<void>;
  // A bulkhead shared by several consumers bounds their handlers together. A delivery it has no
  // room for goes back to the broker for a while, attempt unspent: its handler never ran. Until
  // 2026-12-03 the refusal counted as the handler failing, and with consumers leasing more than
  // the bulkhead holds, messages were dead-lettered unhandled (8 of 10 in the review's case).
  const bounded =
    bulkhead === undefined
      ? run
      : (delivery: Delivery) => {
          let ran = false;
          return bulkhead
            .run(() => {
              ran = true;
              return run(delivery);
            })
            .catch((error: unknown) => {
              throw ran ? error : heldBack(error);
            });
        };
  return broker.subscribe(spec, bounded);
}

/**
 * A durable handler that failed because a dependency's breaker is open: the message waits until
 * the breaker may let calls through again (`details.deferMs`, a rule every broker follows),
 * without spending an attempt.
 */
function pausedBy(error: unknown, now: number): unknown {
  if (!(error instanceof ParleyError)) return error;
  // The node stopped while the handler ran: the message goes back as it was (until 2026-12-03 the
  // stop spent an attempt, and a message on its last one was dead-lettered though nothing failed).
  if (error.details?.stopping === true) return putBack(error, 0);
  if (error.details?.circuit !== 'open') return error;
  const retryAt = typeof error.details.retryAt === 'number' ? error.details.retryAt : now + 1000;
  return putBack(error, Math.max(100, retryAt - now), `paused: ${error.message}`);
}

/** How long a delivery a bulkhead had no room for waits before it is offered again. */
const HELD_BACK_MS = 100;

function heldBack(error: unknown): unknown {
  return error instanceof ParleyError ? putBack(error, HELD_BACK_MS) : error;
}

/** `error` with `details.deferMs`: every broker puts the message back after `ms`, attempt unspent. */
function putBack(error: ParleyError, ms: number, message = error.message): ParleyError {
  return new ParleyError(error.code, message, { details: { ...error.details, deferMs: ms } });
}
