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
  const violations: FieldViolation[] = result.error.issues.map((issue) => ({
    path: issue.path.map(String).join('.'),
    message: issue.message,
    code: issue.code,
  }));
  const where = violations.map((v) => v.path || '(root)').join(', ');
  throw new ParleyError('INVALID_ARGUMENT', `${what} is invalid at ${where}`, {
    details: { violations },
  });
}
