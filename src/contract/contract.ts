/**
 * @module contract
 * A contract names a service, its actions (input, output, declared errors) and its events
 * (payload schema and version). It types callers and handlers at compile time, validates at the
 * receiving edge at run time, and is the source for generated API documents.
 */
import type { z } from 'zod';
import type { ErrorCode } from '../errors.ts';
import { isErrorCode, ParleyError } from '../errors.ts';

/** A schema: any zod 4 type. */
export type Schema = z.ZodType;

/** Declared domain errors of an action: reason → the code it travels with. */
export type ErrorDecls = Record<string, ErrorCode>;

/**
 * Who may call an action from outside: anyone, any authenticated caller, or callers holding one
 * of `roles` and all of `scopes` (both given: both must hold).
 */
export type AccessRule =
  | { public: true }
  | { authenticated: true }
  | { roles: readonly string[]; scopes?: readonly string[] }
  | { roles?: readonly string[]; scopes: readonly string[] };

export interface ActionDef<
  I extends Schema = Schema,
  O extends Schema = Schema,
  E extends ErrorDecls = ErrorDecls,
> {
  input: I;
  output: O;
  /** Safe to run twice with the same input; only such actions are retried automatically. */
  idempotent?: boolean;
  /** Domain errors this action may fail with, e.g. `{ OUT_OF_STOCK: 'FAILED_PRECONDITION' }`. */
  errors?: E;
  /** Default time budget for a call, in milliseconds, when the caller sets none. */
  timeout?: number;
  /** HTTP route for the gateway, e.g. `POST /orders`. */
  http?: string;
  /** Exposed by the gateway to outside callers. */
  public?: boolean;
  /**
   * Who may call it through the gateway (checked there, after authentication). Default: anyone
   * (`{ public: true }`) unless the gateway sets another default.
   */
  access?: AccessRule;
  /**
   * A streaming action. `output`: the handler returns an (async) iterable and the caller gets an
   * async iterable of `output` chunks. `input`: the caller passes an (async) iterable of `input`
   * chunks and the handler reads one; it returns one `output`. Chunks are validated one by one.
   */
  stream?: 'output' | 'input';
  description?: string;
}

export interface EventDef<S extends Schema = Schema> {
  schema: S;
  /** Payload version, a positive integer; consumers upcast older versions. */
  version: number;
  description?: string;
}

export type ActionDefs = Record<string, ActionDef<Schema, Schema, ErrorDecls>>;
export type EventDefs = Record<string, EventDef>;

export interface Contract<
  N extends string = string,
  A extends ActionDefs = ActionDefs,
  E extends EventDefs = EventDefs,
> {
  readonly kind: 'parley.contract';
  readonly name: N;
  readonly version: string;
  readonly actions: A;
  readonly events: E;
  readonly description: string | undefined;
}

// biome-ignore lint/suspicious/noExplicitAny: a contract of any shape, used only as a constraint.
export type AnyContract = Contract<string, any, any>;

export type ActionName<C extends AnyContract> = keyof C['actions'] & string;
export type EventName<C extends AnyContract> = keyof C['events'] & string;

/** What a caller passes: the schema's input type (before defaults and transforms). */
export type InputOf<C extends AnyContract, K extends ActionName<C>> = z.input<C['actions'][K]['input']>;
/** What a handler receives: the validated, parsed input. */
export type ParsedInputOf<C extends AnyContract, K extends ActionName<C>> = z.output<
  C['actions'][K]['input']
>;
/** What a handler returns and the caller receives. */
export type OutputOf<C extends AnyContract, K extends ActionName<C>> = z.output<C['actions'][K]['output']>;
/** The streaming mode of an action: `output`, `input`, or `none`. */
export type StreamOf<C extends AnyContract, K extends ActionName<C>> = C['actions'][K] extends {
  stream: infer S extends 'output' | 'input';
}
  ? S
  : 'none';
/** What a caller passes for action K: the input, or for an input stream an iterable of inputs. */
export type CallInputOf<C extends AnyContract, K extends ActionName<C>> =
  StreamOf<C, K> extends 'input' ? AsyncIterable<InputOf<C, K>> | Iterable<InputOf<C, K>> : InputOf<C, K>;
/** What a caller gets back: a promise of the output, or for an output stream an async iterable. */
export type CallResultOf<C extends AnyContract, K extends ActionName<C>> =
  StreamOf<C, K> extends 'output' ? AsyncIterable<OutputOf<C, K>> : Promise<OutputOf<C, K>>;
/** Reasons of the declared errors of an action. */
export type ErrorReasonOf<C extends AnyContract, K extends ActionName<C>> = C['actions'][K] extends {
  errors: infer D;
}
  ? keyof D & string
  : never;
export type PayloadOf<C extends AnyContract, K extends EventName<C>> = z.output<C['events'][K]['schema']>;
export type PayloadInputOf<C extends AnyContract, K extends EventName<C>> = z.input<C['events'][K]['schema']>;

const SERVICE_NAME = /^[a-z][a-z0-9-]*$/;
const ACTION_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const EVENT_NAME = /^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)+$/;

export interface ContractInit<N extends string, A extends ActionDefs, E extends EventDefs> {
  name: N;
  version: string;
  actions: A;
  events?: E;
  description?: string;
}

/**
 * Defines a contract. Names are checked now, so a typo fails at start-up rather than on the first
 * call: services are lower-kebab (`orders`), actions identifiers (`place`), events dotted
 * (`order.placed`).
 */
export function defineContract<
  const N extends string,
  const A extends ActionDefs,
  // biome-ignore lint/complexity/noBannedTypes: `{}` is the precise type of "no events".
  const E extends EventDefs = {},
>(init: ContractInit<N, A, E>): Contract<N, A, E> {
  if (!SERVICE_NAME.test(init.name)) {
    throw new ParleyError('INVALID_ARGUMENT', `contract name "${init.name}" must match ${SERVICE_NAME}`);
  }
  for (const [name, action] of Object.entries(init.actions)) {
    if (!ACTION_NAME.test(name)) {
      throw new ParleyError(
        'INVALID_ARGUMENT',
        `${init.name}: action name "${name}" must match ${ACTION_NAME}`,
      );
    }
    if (!isSchema(action.input) || !isSchema(action.output)) {
      throw new ParleyError('INVALID_ARGUMENT', `${init.name}.${name}: input and output must be zod schemas`);
    }
    for (const [reason, code] of Object.entries(action.errors ?? {})) {
      if (!isErrorCode(code)) {
        throw new ParleyError(
          'INVALID_ARGUMENT',
          `${init.name}.${name}: error ${reason} has unknown code ${code}`,
        );
      }
    }
    if (action.stream !== undefined && action.stream !== 'output' && action.stream !== 'input') {
      throw new ParleyError('INVALID_ARGUMENT', `${init.name}.${name}: stream must be 'output' or 'input'`);
    }
    if (action.timeout !== undefined && !(action.timeout > 0)) {
      throw new ParleyError(
        'INVALID_ARGUMENT',
        `${init.name}.${name}: timeout must be a positive number of ms`,
      );
    }
  }
  const events = (init.events ?? {}) as E;
  for (const [name, event] of Object.entries(events)) {
    if (!EVENT_NAME.test(name)) {
      throw new ParleyError(
        'INVALID_ARGUMENT',
        `${init.name}: event name "${name}" must match ${EVENT_NAME}`,
      );
    }
    if (!isSchema(event.schema) || !Number.isInteger(event.version) || event.version < 1) {
      throw new ParleyError(
        'INVALID_ARGUMENT',
        `${init.name}: event ${name} needs a schema and a version ≥ 1`,
      );
    }
  }
  return Object.freeze({
    kind: 'parley.contract',
    name: init.name,
    version: init.version,
    actions: init.actions,
    events,
    description: init.description,
  });
}

function isSchema(value: unknown): value is Schema {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { safeParse?: unknown }).safeParse === 'function'
  );
}
