/**
 * @module runtime/consumers
 * A service's durable subscriptions as broker consumers: each delivery runs the handler through
 * the server (validation, context, deadline); a shared bulkhead may bound several consumers; a
 * handler stopped by an open circuit breaker puts its message back without spending an attempt.
 */
import type { Broker, Consumer, Delivery } from '../broker/broker.ts';
import { ParleyError } from '../errors.ts';
import type { Clock } from './clock.ts';
import type { Server } from './serve.ts';
import type { Service } from './service.ts';

export async function subscribeDurable(
  broker: Broker,
  server: Server,
  service: Service,
  clock: Clock,
): Promise<Consumer[]> {
  const consumers: Consumer[] = [];
  for (const sub of service.subscriptions) {
    const { ephemeral, group, timeout: _timeout, bulkhead, ...rest } = sub.options;
    if (ephemeral) continue;
    const spec = { topic: sub.event, group: group ?? service.contract.name, ...rest };
    const failed = (error: unknown): never => {
      throw pausedBy(error, clock.now());
    };
    // One `then` a delivery (not `then` + `catch`); it resolves with whatever the handler
    // returned: brokers only wait for it.
    const run = (delivery: Delivery) =>
      server
        .runEventHandler(sub, delivery.envelope, service.contract.name, delivery)
        .then(undefined, failed) as Promise<void>;
    consumers.push(
      await broker.subscribe(spec, (delivery) =>
        // A bulkhead shared by several consumers bounds their handlers together.
        bulkhead === undefined ? run(delivery) : bulkhead.run(() => run(delivery)),
      ),
    );
  }
  return consumers;
}

/**
 * A durable handler that failed because a dependency's breaker is open: the message waits until
 * the breaker may let calls through again (`details.deferMs`, a rule every broker follows),
 * without spending an attempt.
 */
function pausedBy(error: unknown, now: number): unknown {
  if (!(error instanceof ParleyError) || error.details?.circuit !== 'open') return error;
  const retryAt = typeof error.details.retryAt === 'number' ? error.details.retryAt : now + 1000;
  return new ParleyError('UNAVAILABLE', `paused: ${error.message}`, {
    details: { ...error.details, deferMs: Math.max(100, retryAt - now) },
  });
}
