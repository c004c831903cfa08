/**
 * @module contract/json-schema
 * JSON Schema (draft 2020-12) for every action and event of a contract: the source for OpenAPI,
 * AsyncAPI and the gateway's request validation.
 */
import { z } from 'zod';
import type { AnyContract } from './contract.ts';

export interface ContractJsonSchema {
  name: string;
  version: string;
  actions: Record<
    string,
    { input: unknown; output: unknown; idempotent: boolean; errors: Record<string, string> }
  >;
  events: Record<string, { version: number; schema: unknown }>;
}

export function contractJsonSchema(contract: AnyContract): ContractJsonSchema {
  const actions: ContractJsonSchema['actions'] = {};
  for (const [name, def] of Object.entries(contract.actions) as [string, AnyContract['actions'][string]][]) {
    actions[name] = {
      input: z.toJSONSchema(def.input, { io: 'input', unrepresentable: 'any' }),
      output: z.toJSONSchema(def.output, { io: 'output', unrepresentable: 'any' }),
      idempotent: def.idempotent === true,
      errors: { ...(def.errors ?? {}) },
    };
  }
  const events: ContractJsonSchema['events'] = {};
  for (const [name, def] of Object.entries(contract.events) as [string, AnyContract['events'][string]][]) {
    events[name] = { version: def.version, schema: z.toJSONSchema(def.schema, { unrepresentable: 'any' }) };
  }
  return { name: contract.name, version: contract.version, actions, events };
}

type JsonObject = Record<string, unknown>;

/**
 * The `$defs` name a local `$ref` (`#/$defs/<name>`) points to, or undefined for any other ref.
 * Zod writes a registered schema's id as a JSON-pointer segment (`~1` for `/`, `~0` for `~`) and
 * leaves other characters raw; a ref written by hand may also be percent-encoded, as a URI
 * fragment is. The raw name wins when both read as a def.
 */
export function localDefName(ref: string, defs: JsonObject): string | undefined {
  if (!ref.startsWith('#/$defs/')) return undefined;
  const segment = ref.slice('#/$defs/'.length);
  if (segment.includes('/')) return undefined;
  const unpoint = (s: string) => s.replaceAll('~1', '/').replaceAll('~0', '~');
  const raw = unpoint(segment);
  if (Object.hasOwn(defs, raw)) return raw;
  let pointer: string;
  try {
    pointer = decodeURIComponent(segment);
  } catch {
    return undefined;
  }
  const decoded = unpoint(pointer);
  return !pointer.includes('/') && Object.hasOwn(defs, decoded) ? decoded : undefined;
}

/**
 * `schema` with local `$ref`s followed into `root.$defs` (a chain of them too, cycles cut), so a
 * property made from a registered schema (`.meta({ id })`) can be read for its type.
 */
export function resolveLocalRef(root: JsonObject, schema: JsonObject): JsonObject {
  const defs = root.$defs;
  if (typeof defs !== 'object' || defs === null) return schema;
  let current = schema;
  for (let hops = 0; hops < 16 && typeof current.$ref === 'string'; hops++) {
    const name = localDefName(current.$ref, defs as JsonObject);
    const target = name === undefined ? undefined : (defs as JsonObject)[name];
    if (typeof target !== 'object' || target === null) break;
    current = target as JsonObject;
  }
  return current;
}
