/**
 * @module runtime/client
 * Typed client proxies: one method per action of a contract. Built once per contract as a plain
 * object (no Proxy), so a call is a direct function call.
 */
import type { ActionName, AnyContract, CallInputOf, CallResultOf } from '../contract/contract.ts';
import type { CallOptions } from './context.ts';

/**
 * One method per action: `(input, options?) => Promise<output>`; for an output stream it returns
 * an async iterable of chunks, for an input stream it takes an iterable of chunks.
 */
export type Client<C extends AnyContract> = {
  readonly [K in ActionName<C>]: (input: CallInputOf<C, K>, options?: CallOptions) => CallResultOf<C, K>;
};

export type Invoke = (action: string, input: unknown, options: CallOptions | undefined) => unknown;

export function createClient<C extends AnyContract>(contract: C, invoke: Invoke): Client<C> {
  const client: Record<string, (input: unknown, options?: CallOptions) => unknown> = {};
  for (const action of Object.keys(contract.actions)) {
    client[action] = (input, options) => invoke(action, input, options);
  }
  return Object.freeze(client) as Client<C>;
}
