/**
 * @module gateway/routes
 * The route table, planned from contracts before anything listens: only `public` actions, at
 * their `http` route (`'GET /orders/:id'`, under the base path) or by convention at
 * `POST <base>/<service>/<action>`. Mistakes a request would only reveal later — a path parameter
 * the input lacks, a GET whose input cannot be written as a query, two actions on one route — fail
 * here, at start-up.
 *
 * Inputs: POST, PUT and PATCH take a JSON object body; GET and DELETE take the query string. In
 * both, path parameters are merged in. Query and path values are strings, coerced by the
 * property's JSON Schema type when it is `number`, `integer` or `boolean` (and for arrays of
 * those, from repeated keys: `?sku=a&sku=b`); a value that does not convert is left as a string
 * for validation to reject with its field path.
 */
import type { AnyContract } from '../contract/contract.ts';
import { resolveLocalRef } from '../contract/json-schema.ts';
import { ParleyError } from '../errors.ts';
import type { GatewayRoute } from './options.ts';

export type Scalar = 'string' | 'number' | 'integer' | 'boolean';
/** How a query or path value converts: a scalar, or an array of one. */
export type ValueKind = Scalar | { array: Scalar };

export interface PlannedRoute extends GatewayRoute {
  readonly contract: AnyContract;
  /** Fastify pattern (same as `path`): `:name` segments are parameters. */
  readonly params: readonly string[];
  /** Where the input comes from. */
  readonly input: 'body' | 'query' | 'upload';
  /** Conversion of query and path values, by property. */
  readonly kinds: ReadonlyMap<string, ValueKind>;
  /** The input's JSON Schema (for OpenAPI). */
  readonly inputSchema: Record<string, unknown>;
}

const METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']);
const LITERAL = /^[A-Za-z0-9_.~-]+$/;
const PARAM = /^:([A-Za-z_][A-Za-z0-9_]*)$/;

export interface PlanOptions {
  contracts: readonly AnyContract[];
  basePath: string;
  /** JSON Schema of each action's input, by `service.action`. */
  inputSchemas: ReadonlyMap<string, Record<string, unknown>>;
}

export function planRoutes({ contracts, basePath, inputSchemas }: PlanOptions): PlannedRoute[] {
  const routes: PlannedRoute[] = [];
  const taken = new Map<string, string>();
  for (const contract of contracts) {
    for (const [action, def] of Object.entries(contract.actions) as [
      string,
      AnyContract['actions'][string],
    ][]) {
      if (def.public !== true) continue;
      const where = `${contract.name}.${action}`;
      const fail = (why: string): never => {
        throw new ParleyError('INVALID_ARGUMENT', `gateway: ${where}: ${why}`);
      };
      const [method, relative] = splitRoute(def.http ?? `POST /${contract.name}/${action}`, fail);
      const path = `${basePath}${relative === '/' ? '' : relative}`;
      const params = relative
        .split('/')
        .slice(1)
        .map((segment) => {
          const m = PARAM.exec(segment);
          if (m === null && !LITERAL.test(segment)) fail(`route segment "${segment}" is not allowed`);
          return m?.[1];
        })
        .filter((p): p is string => p !== undefined);
      const inputSchema = inputSchemas.get(where) ?? {};
      const kinds = valueKinds(inputSchema);
      for (const p of params)
        if (!kinds.has(p)) fail(`path parameter :${p} is not a simple property of the input`);
      const bodyless = method === 'GET' || method === 'DELETE';
      if (def.stream === 'input' && method !== 'POST' && method !== 'PUT')
        fail('an upload route must be POST or PUT');
      if (bodyless && def.stream !== 'input') {
        const props = Object.keys(propertiesOf(inputSchema));
        const complex = props.filter((p) => !kinds.has(p));
        if (complex.length > 0)
          fail(`${method} input properties must be scalars or arrays of scalars: ${complex.join(', ')}`);
      }
      const key = `${method} ${path.replace(/:[^/]+/g, ':')}`;
      const other = taken.get(key);
      if (other !== undefined) fail(`route ${method} ${path} is already ${other}'s`);
      taken.set(key, where);
      routes.push({
        service: contract.name,
        action,
        method,
        path,
        def,
        contract,
        params,
        input: def.stream === 'input' ? 'upload' : bodyless ? 'query' : 'body',
        kinds,
        inputSchema,
      });
    }
  }
  return routes;
}

function splitRoute(http: string, fail: (why: string) => never): [string, string] {
  const m = /^([A-Z]+) (\/\S*)$/.exec(http);
  if (m === null || !METHODS.has(m[1] as string)) fail(`http "${http}" must be "<METHOD> /path"`);
  const [, method, path] = m as RegExpExecArray;
  return [method as string, (path as string).replace(/\/+$/, '') || '/'];
}

export function propertiesOf(schema: Record<string, unknown>): Record<string, Record<string, unknown>> {
  const props = schema.properties;
  return typeof props === 'object' && props !== null
    ? (props as Record<string, Record<string, unknown>>)
    : {};
}

/**
 * Properties whose values a query string or path can carry, and how they convert. A property
 * made from a registered schema (`.meta({ id })`) is a `$ref` into the input's `$defs`: until
 * 2026-12-03 it was not followed, and a GET taking a registered enum could not start.
 */
function valueKinds(schema: Record<string, unknown>): Map<string, ValueKind> {
  const kinds = new Map<string, ValueKind>();
  for (const [name, declared] of Object.entries(propertiesOf(schema))) {
    const prop = resolveLocalRef(schema, declared);
    const scalar = scalarOf(prop);
    if (scalar !== undefined) kinds.set(name, scalar);
    else if (prop.type === 'array' && typeof prop.items === 'object' && prop.items !== null) {
      const item = scalarOf(resolveLocalRef(schema, prop.items as Record<string, unknown>));
      if (item !== undefined) kinds.set(name, { array: item });
    }
  }
  return kinds;
}

function scalarOf(prop: Record<string, unknown>): Scalar | undefined {
  const t = prop.type;
  if (t === 'string' || t === 'number' || t === 'integer' || t === 'boolean') return t;
  if (Array.isArray(prop.enum) && prop.enum.every((v) => typeof v === 'string')) return 'string';
  return undefined;
}

const NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/;

function convert(value: string, kind: Scalar): unknown {
  if ((kind === 'number' || kind === 'integer') && NUMBER.test(value)) return Number(value);
  if (kind === 'boolean' && (value === 'true' || value === 'false')) return value === 'true';
  return value;
}

/** Keys no input may have: they are how prototype pollution gets in. */
const POISON = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * The input of a GET/DELETE: the query's values converted by kind. A scalar given twice is an
 * error rather than a guess which one counts.
 */
export function inputFromQuery(
  query: Record<string, string | string[] | undefined>,
  kinds: ReadonlyMap<string, ValueKind>,
): Record<string, unknown> {
  const input: Record<string, unknown> = {};
  for (const [name, raw] of Object.entries(query)) {
    if (raw === undefined) continue;
    if (POISON.has(name)) throw invalid(name, 'this parameter name is not allowed');
    const kind = kinds.get(name);
    const values = Array.isArray(raw) ? raw : [raw];
    if (kind !== undefined && typeof kind === 'object') {
      input[name] = values.map((v) => convert(v, kind.array));
    } else if (values.length > 1) {
      throw invalid(name, 'given more than once');
    } else {
      input[name] = kind === undefined ? values[0] : convert(values[0] as string, kind);
    }
  }
  return input;
}

/**
 * Merges path parameters into an input; a body that says otherwise for one is refused. Without
 * parameters the input comes back as it is (it is the request's own parsed body: nothing shares it).
 */
export function withParams(
  input: Record<string, unknown>,
  params: Record<string, string>,
  kinds: ReadonlyMap<string, ValueKind>,
): Record<string, unknown> {
  let merged: Record<string, unknown> | undefined;
  for (const [name, raw] of Object.entries(params)) {
    const kind = kinds.get(name);
    const value = typeof kind === 'string' ? convert(raw, kind) : raw;
    if (Object.hasOwn(input, name) && input[name] !== value) throw invalid(name, 'differs from the path');
    merged ??= { ...input };
    merged[name] = value;
  }
  return merged ?? input;
}

function invalid(path: string, message: string): ParleyError {
  return new ParleyError('INVALID_ARGUMENT', `input is invalid at ${path}`, {
    details: { violations: [{ path, message, code: 'invalid_parameter' }] },
  });
}
