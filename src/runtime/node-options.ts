/**
 * @module runtime/node-options
 * What `createNode` accepts, with the defaults the node applies.
 */
import type { Logger } from 'pino';
import type { Broker } from '../broker/broker.ts';
import type { Outbox } from '../broker/outbox.ts';
import type { Codec } from '../codec/codec.ts';
import { createJsonCodec } from '../codec/json.ts';
import { createMsgpackCodec } from '../codec/msgpack.ts';
import type { Transport } from '../transport/transport.ts';
import type { Balancer, BalancerOptions } from './balancer.ts';
import type { Clock } from './clock.ts';
import type { Middleware } from './pipeline.ts';
import type { Service } from './service.ts';

export interface NodeOptions {
  /** Unique node id; default `<host>-<pid>-<random>`. */
  id?: string;
  /** Default: a private memory network (this node alone). */
  transport?: Transport;
  /** Needed for `publish` and durable subscriptions. */
  broker?: Broker;
  /**
   * Transactional outbox (one per service database): `ctx.publish` inside a transaction of an
   * outbox's `db` writes there; a relay per outbox publishes.
   */
  outbox?: Outbox | readonly Outbox[];
  services?: readonly Service[];
  /** Default `json`. */
  codec?: Codec | 'json' | 'msgpack';
  /** Outermost first. */
  middleware?: readonly Middleware[];
  clock?: Clock;
  /** A pino logger; default one at `PARLEY_LOG_LEVEL` (or `logLevel`, or `info`). */
  logger?: Logger;
  logLevel?: string;
  /** Deadline of a call that sets none and whose action declares none, ms. Default 10 000. */
  defaultTimeout?: number;
  /** How long `stop()` waits for in-flight work before cancelling it, ms. Default 10 000. */
  stopTimeout?: number;
  /** Validate inputs at the receiving edge (default true). Turn off only between trusted services. */
  validateInput?: boolean;
  /** Check handlers' outputs against the contract (default false; on in tests is wise). */
  validateOutput?: boolean;
  balancer?: Balancer | BalancerOptions;
  labels?: Record<string, string>;
}

export function resolveCodec(codec: NodeOptions['codec']): Codec {
  if (codec === undefined || codec === 'json') return createJsonCodec();
  if (codec === 'msgpack') return createMsgpackCodec();
  return codec;
}
