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
