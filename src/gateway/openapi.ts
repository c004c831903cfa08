/**
 * @module gateway/openapi
 * The OpenAPI 3.1 document of the public routes, generated from the contracts' JSON Schemas
 * (OpenAPI 3.1 schemas are JSON Schema 2020-12, so they are used as they are). Each action's
 * `$defs` are hoisted into `components.schemas` and their `$ref`s rewritten: in an OpenAPI
 * document `#` is the document, not the schema. The internal `/rpc` endpoint is not described:
 * it is not for the public.
 */
import { localDefName } from '../contract/json-schema.ts';
import { ERROR_CODES, type ErrorCode, errorCodes } from '../errors.ts';
import { MAX_IDEMPOTENCY_KEY } from './idempotency.ts';
import type { GatewayOptions } from './options.ts';
import { PROBLEM_TYPE } from './problem.ts';
import { type PlannedRoute, propertiesOf } from './routes.ts';

type Json = Record<string, unknown>;

export interface OpenApiInit {
  routes: readonly PlannedRoute[];
  outputSchemas: ReadonlyMap<string, Json>;
  title?: string;
  securitySchemes?: GatewayOptions['securitySchemes'];
}

const PROBLEM_SCHEMA: Json = {
  type: 'object',
  description: 'RFC 9457 problem details, with the Parley error code.',
  required: ['type', 'title', 'status', 'code', 'requestId'],
  properties: {
    type: { type: 'string', format: 'uri' },
    title: { type: 'string' },
    status: { type: 'integer' },
    detail: { type: 'string' },
    instance: { type: 'string' },
    code: { type: 'string', enum: errorCodes },
    requestId: { type: 'string' },
    reason: { type: 'string', description: "The action's declared error reason." },
    retryable: { type: 'boolean' },
    errors: {
      type: 'array',
      description: 'Field violations of an invalid input.',
      items: {
        type: 'object',
        required: ['path', 'message'],
        properties: { path: { type: 'string' }, message: { type: 'string' }, code: { type: 'string' } },
      },
    },
  },
};

const problemResponse = (description: string): Json => ({
  description,
  content: { [PROBLEM_TYPE]: { schema: { $ref: '#/components/schemas/Problem' } } },
});

export function buildOpenApi(init: OpenApiInit): Json {
  const schemas: Record<string, Json> = { Problem: PROBLEM_SCHEMA };
  const paths: Record<string, Record<string, Json>> = {};
  for (const route of init.routes) {
    const id = `${route.service}.${route.action}`;
    const openPath = route.path.replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, '{$1}');
    const input = hoist(route.inputSchema, `${id}.input`, schemas);
    hoist(init.outputSchemas.get(id) ?? {}, `${id}.output`, schemas);
    const op: Json = {
      operationId: id,
      tags: [route.service],
      summary: route.def.description ?? `${route.service}.${route.action}`,
      parameters: parameters(route, input),
      responses: responses(route),
    };
    if (route.input === 'body') {
      op.requestBody = { required: false, content: { 'application/json': { schema: refTo(`${id}.input`) } } };
    } else if (route.input === 'upload') {
      op.requestBody = {
        required: true,
        description: 'One file part; sent to the action as it arrives.',
        content: {
          'multipart/form-data': {
            schema: {
              type: 'object',
              required: ['file'],
              properties: { file: { type: 'string', contentMediaType: 'application/octet-stream' } },
            },
          },
        },
      };
    }
    paths[openPath] ??= {};
    (paths[openPath] as Record<string, Json>)[route.method.toLowerCase()] = op;
  }
  const doc: Json = {
    openapi: '3.1.0',
    info: {
      title: init.title ?? 'Parley gateway',
      version:
        [...new Set(init.routes.map((r) => `${r.contract.name}@${r.contract.version}`))].join(', ') || '0',
    },
    paths,
    components: { schemas, responses: { Problem: problemResponse('An error, as problem details.') } },
  };
  if (init.securitySchemes !== undefined) {
    (doc.components as Json).securitySchemes = init.securitySchemes;
    // Every scheme, or none: routes decide in `authorize` whether anonymous calls pass.
    doc.security = [...Object.keys(init.securitySchemes).map((name) => ({ [name]: [] })), {}];
  }
  return doc;
}

const refTo = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });

function parameters(route: PlannedRoute, input: Json): Json[] {
  const props = propertiesOf(input);
  const required = new Set(Array.isArray(input.required) ? (input.required as string[]) : []);
  const params: Json[] = route.params.map((name) => ({
    name,
    in: 'path',
    required: true,
    schema: props[name] ?? { type: 'string' },
  }));
  if (route.input === 'query') {
    for (const [name, schema] of Object.entries(props)) {
      if (route.params.includes(name)) continue;
      const p: Json = { name, in: 'query', required: required.has(name), schema };
      // The kind, not the schema: a registered array schema is a $ref here.
      if (typeof route.kinds.get(name) === 'object') {
        p.style = 'form';
        p.explode = true;
      }
      params.push(p);
    }
  }
  if (route.method !== 'GET') {
    params.push({
      name: 'Idempotency-Key',
      in: 'header',
      required: false,
      description:
        'Send the same key when retrying this request; the service answers a repeat with the first result. ' +
        `A token or a quoted string of at most ${MAX_IDEMPOTENCY_KEY} printable ASCII characters ` +
        '(counted once `\\"` and `\\\\` are unescaped).',
      // The header as sent: until 2026-12-03 this was MAX + 2, shorter than a quoted key the
      // gateway accepts, in which every character may be escaped.
      schema: { type: 'string', minLength: 1, maxLength: 2 * MAX_IDEMPOTENCY_KEY + 2 },
    });
  }
  return params;
}

function responses(route: PlannedRoute): Json {
  const id = `${route.service}.${route.action}`;
  const ok: Json =
    route.def.stream === 'output'
      ? {
          description:
            'A stream of chunks, one JSON value per line; a failure ends it with {"error": Problem}.',
          content: { 'application/x-ndjson': { schema: refTo(`${id}.output`) } },
        }
      : { description: 'The result.', content: { 'application/json': { schema: refTo(`${id}.output`) } } };
  const out: Json = { '200': ok, '400': problemResponse('The input is invalid (see `errors`).') };
  const declared = Object.entries((route.def.errors ?? {}) as Record<string, ErrorCode>);
  for (const [reason, code] of declared) {
    const status = String(ERROR_CODES[code].http);
    const existing = out[status] as Json | undefined;
    const text = `${code}, reason ${reason}`;
    out[status] = problemResponse(existing === undefined ? text : `${String(existing.description)}; ${text}`);
  }
  out.default = { $ref: '#/components/responses/Problem' };
  return out;
}

/** What OpenAPI 3.1 does not allow in a `components.schemas` key. */
const NOT_IN_COMPONENT_NAME = /[^a-zA-Z0-9._-]/g;

/**
 * Puts `schema` at `components.schemas[name]` with its `$defs` beside it (`name.def`), `$ref`s
 * rewritten to match, `$schema` dropped. Returns the stored schema.
 *
 * A def is named by its Zod id (`.meta({ id: 'Postal Address' })`), which may hold characters a
 * component name may not: until 2026-12-03 they were copied as they were and made the document
 * invalid. Such characters become `_`, and a number is added where two ids then read the same.
 */
function hoist(schema: Json, name: string, schemas: Record<string, Json>): Json {
  const defs = (schema.$defs ?? {}) as Record<string, Json>;
  const componentOf = new Map<string, string>();
  for (const defName of Object.keys(defs)) {
    const safe = `${name}.${defName.replace(NOT_IN_COMPONENT_NAME, '_')}`;
    let unique = safe;
    for (let n = 2; Object.hasOwn(schemas, unique); n++) unique = `${safe}_${n}`;
    componentOf.set(defName, unique);
    // Taken at once, so the next def's name is checked against it.
    schemas[unique] = {};
  }
  const refOf = (ref: string): string => {
    if (ref === '#') return `#/components/schemas/${name}`;
    const defName = localDefName(ref, defs);
    const component = defName === undefined ? undefined : componentOf.get(defName);
    return component === undefined ? ref : `#/components/schemas/${component}`;
  };
  const rewrite = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(rewrite);
    if (typeof value !== 'object' || value === null) return value;
    const out: Json = {};
    for (const [k, v] of Object.entries(value)) {
      if (k === '$schema' || k === '$defs' || k === '$id') continue;
      if (k === '$ref' && typeof v === 'string') {
        out[k] = refOf(v);
      } else {
        // defineProperty: a key such as `__proto__` in a schema is copied as data, never as a prototype.
        Object.defineProperty(out, k, {
          value: rewrite(v),
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
    }
    return out;
  };
  for (const [defName, def] of Object.entries(defs))
    schemas[componentOf.get(defName) as string] = rewrite(def) as Json;
  const stored = rewrite(schema) as Json;
  schemas[name] = stored;
  return stored;
}
