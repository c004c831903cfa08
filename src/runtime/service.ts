/**
 * @module runtime/service
 * A service is an implementation of a contract: one handler per action, plus subscriptions to
 * events (its own or other services'). The types make a missing handler, a wrong input or a wrong
 * return type a compile error.
 */

import type { BackoffOptions } from '../broker/broker.ts';
import type {
  ActionName,
  AnyContract,
  EventName,
  OutputOf,
  ParsedInputOf,
  PayloadOf,
  StreamOf,
} from '../contract/contract.ts';
import { ParleyError } from '../errors.ts';
import type { ActionContext, Context } from './context.ts';

/**
 * A handler: input in, output out. For an output stream it returns an (async) iterable of output
 * chunks (an `async function*` is the usual way); for an input stream it reads an async iterable
 * of validated input chunks.
 */
export type ActionHandler<C extends AnyContract, K extends ActionName<C>> =
  StreamOf<C, K> extends 'output'
    ? (
        input: ParsedInputOf<C, K>,
        ctx: ActionContext<C, K>,
      ) => AsyncIterable<OutputOf<C, K>> | Iterable<OutputOf<C, K>>
    : StreamOf<C, K> extends 'input'
      ? (
          input: AsyncIterable<ParsedInputOf<C, K>>,
          ctx: ActionContext<C, K>,
        ) => Promise<OutputOf<C, K>> | OutputOf<C, K>
      : (input: ParsedInputOf<C, K>, ctx: ActionContext<C, K>) => Promise<OutputOf<C, K>> | OutputOf<C, K>;

export type ActionHandlers<C extends AnyContract> = { [K in ActionName<C>]: ActionHandler<C, K> };

export type EventHandler<C extends AnyContract, K extends EventName<C>> = (
  payload: PayloadOf<C, K>,
  ctx: Context,
) => Promise<void> | void;

export interface SubscribeOptions {
  /**
   * Consumer group for durable delivery: each group gets one copy of every event, consumers in a
   * group compete. Defaults to the implementing service's name.
   */
  group?: string;
  /** Ephemeral: every live instance gets notifications sent with `notify`; nothing is stored. */
  ephemeral?: boolean;
  /** Handler runs before a durable message goes to dead-letter. Default 5. */
  maxAttempts?: number;
  /** Retry delays for durable messages: exponential with full jitter. */
  backoff?: BackoffOptions;
  /** How long a durable delivery is reserved for this consumer, ms. Default 30 000. */
  lease?: number;
  /** Durable deliveries this consumer holds at once (backpressure). Default 64. */
  maxInFlight?: number;
  /** Where a new consumer group starts: every retained message, or new ones (default). */
  startFrom?: 'beginning' | 'now';
  /** Time budget of one handler run, ms. */
  timeout?: number;
  /** Shared by several consumers: bounds how many of their handlers run at once. */
  bulkhead?: { run<T>(work: () => Promise<T>): Promise<T> };
}

export interface Subscription {
  readonly kind: 'parley.subscription';
  readonly contract: AnyContract;
  readonly event: string;
  readonly options: SubscribeOptions;
  // biome-ignore lint/suspicious/noExplicitAny: the payload type was checked where the subscription was made.
  readonly handler: (payload: any, ctx: Context) => Promise<void> | void;
}

/** Subscribes to `event` of `contract`; the handler's payload type comes from the contract. */
export function subscribe<C extends AnyContract, K extends EventName<C>>(
  contract: C,
  event: K,
  handler: EventHandler<C, K>,
  options: SubscribeOptions = {},
): Subscription {
  if (!Object.hasOwn(contract.events, event)) {
    throw new ParleyError('INVALID_ARGUMENT', `contract ${contract.name} has no event ${event}`);
  }
  return Object.freeze({ kind: 'parley.subscription', contract, event, options, handler });
}

export interface ServiceImpl<C extends AnyContract> {
  actions: ActionHandlers<C>;
  on?: readonly Subscription[];
}

export interface Service<C extends AnyContract = AnyContract> {
  readonly kind: 'parley.service';
  readonly contract: C;
  readonly actions: ActionHandlers<C>;
  readonly subscriptions: readonly Subscription[];
}

export function implement<C extends AnyContract>(contract: C, impl: ServiceImpl<C>): Service<C> {
  for (const name of Object.keys(contract.actions)) {
    if (typeof (impl.actions as Record<string, unknown>)[name] !== 'function') {
      throw new ParleyError('INVALID_ARGUMENT', `${contract.name}: no handler for action ${name}`);
    }
  }
  for (const name of Object.keys(impl.actions)) {
    if (!Object.hasOwn(contract.actions, name)) {
      throw new ParleyError(
        'INVALID_ARGUMENT',
        `${contract.name}: handler ${name} is not an action of the contract`,
      );
    }
  }
  return Object.freeze({
    kind: 'parley.service',
    contract,
    actions: impl.actions,
    subscriptions: impl.on ?? [],
  });
}
