/**
 * @module contract/validate
 * Run-time validation at the receiving edge. A failure is INVALID_ARGUMENT whose details list
 * every offending field path, so a caller can point at the field without parsing text.
 */
import type { z } from 'zod';
import { ParleyError } from '../errors.ts';
import type { Schema } from './contract.ts';

export interface FieldViolation {
  /** Dotted path into the value, `items.0.sku`; empty for the value itself. */
  path: string;
  message: string;
  code: string;
}

export function validate<S extends Schema>(schema: S, value: unknown, what: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data as z.output<S>;
  const violations = violationsOf(result.error);
  throw new ParleyError('INVALID_ARGUMENT', `${what} is invalid at ${whereOf(violations)}`, {
    details: { violations },
  });
}

/**
 * An action's output parsed by its schema (unknown keys stripped). One the schema refuses is the
 * service's bug, not the caller's: INTERNAL, naming the fields for the log (clients of the gateway
 * see INTERNAL opaque).
 */
export function validOutput<S extends Schema>(schema: S, value: unknown, what: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data as z.output<S>;
  throw new ParleyError(
    'INTERNAL',
    `${what} returned an invalid output at ${whereOf(violationsOf(result.error))}`,
  );
}

function violationsOf(error: z.ZodError): FieldViolation[] {
  return error.issues.map((issue) => ({
    path: issue.path.map(String).join('.'),
    message: issue.message,
    code: issue.code,
  }));
}

const whereOf = (violations: FieldViolation[]) => violations.map((v) => v.path || '(root)').join(', ');
