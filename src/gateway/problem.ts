/**
 * @module gateway/problem
 * Every error the gateway answers is an RFC 9457 problem (`application/problem+json`) carrying the
 * Parley code, so HTTP clients branch on `code` exactly as Parley callers do. Errors nobody
 * decided on (INTERNAL, UNKNOWN, DATA_LOSS, or anything not a ParleyError) lose their message and
 * details here: the log keeps them, the client gets a request id to quote.
 */
import { ERROR_CODES, type ErrorCode, httpStatusOf, ParleyError } from '../errors.ts';

export const PROBLEM_TYPE = 'application/problem+json';

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance: string;
  code: ErrorCode;
  requestId: string;
  /** The contract's declared reason, e.g. `UNKNOWN_SKU`. */
  reason?: string;
  /** Field violations of an invalid input. */
  errors?: { path: string; message: string; code: string }[];
  retryable: boolean;
}

const TITLES: Record<ErrorCode, string> = {
  CANCELLED: 'Cancelled',
  UNKNOWN: 'Unknown error',
  INVALID_ARGUMENT: 'Invalid argument',
  DEADLINE_EXCEEDED: 'Deadline exceeded',
  NOT_FOUND: 'Not found',
  ALREADY_EXISTS: 'Already exists',
  PERMISSION_DENIED: 'Permission denied',
  RESOURCE_EXHAUSTED: 'Resource exhausted',
  FAILED_PRECONDITION: 'Failed precondition',
  ABORTED: 'Aborted',
  OUT_OF_RANGE: 'Out of range',
  UNIMPLEMENTED: 'Unimplemented',
  INTERNAL: 'Internal error',
  UNAVAILABLE: 'Unavailable',
  DATA_LOSS: 'Internal error',
  UNAUTHENTICATED: 'Unauthenticated',
};

/** Codes whose message may carry internals: never shown to clients. */
const OPAQUE: ReadonlySet<ErrorCode> = new Set(['INTERNAL', 'UNKNOWN', 'DATA_LOSS']);

/** The problem `type` URI of a code: stable, documented in the OpenAPI document. */
export function problemType(code: ErrorCode): string {
  return `urn:parley:problem:${code.toLowerCase().replaceAll('_', '-')}`;
}

/**
 * An error the gateway decided on with an HTTP status the code alone does not give (413, 414, 415,
 * 431, 405). Kept apart from ParleyError so services cannot pick arbitrary statuses.
 */
export class HttpProblem extends Error {
  override readonly name = 'HttpProblem';
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export interface ProblemInit {
  error: unknown;
  instance: string;
  requestId: string;
}

/** The problem for anything thrown while serving a request. */
export function toProblem({ error, instance, requestId }: ProblemInit): Problem {
  if (error instanceof HttpProblem) {
    const problem = base({
      code: error.code,
      status: error.status,
      detail: error.message,
      instance,
      requestId,
    });
    // The same request will be refused again: these are about its shape, not about load.
    problem.retryable = false;
    return problem;
  }
  const fastifyStatus = frameworkStatus(error);
  if (fastifyStatus !== undefined) {
    const code: ErrorCode =
      fastifyStatus === 413 || fastifyStatus === 431 ? 'RESOURCE_EXHAUSTED' : 'INVALID_ARGUMENT';
    const problem = base({
      code,
      status: fastifyStatus,
      detail: frameworkDetail(error, fastifyStatus),
      instance,
      requestId,
    });
    problem.retryable = false;
    return problem;
  }
  const e = ParleyError.from(error);
  if (OPAQUE.has(e.code) || e.unexpected) {
    return base({
      code: e.unexpected ? 'INTERNAL' : e.code,
      status: 500,
      detail: 'The server failed to handle the request; quote the request id when reporting it.',
      instance,
      requestId,
    });
  }
  const problem = base({
    code: e.code,
    status: httpStatusOf(e.code),
    detail: e.message,
    instance,
    requestId,
  });
  problem.retryable = e.retryable;
  if (e.reason !== undefined) problem.reason = e.reason;
  const violations = e.details?.violations;
  if (Array.isArray(violations)) problem.errors = violations.flatMap(violation);
  return problem;
}

function base(p: {
  code: ErrorCode;
  status: number;
  detail: string;
  instance: string;
  requestId: string;
}): Problem {
  return {
    type: problemType(p.code),
    title: TITLES[p.code],
    status: p.status,
    detail: p.detail,
    instance: p.instance,
    code: p.code,
    requestId: p.requestId,
    retryable: ERROR_CODES[p.code].retryable,
  };
}

function violation(v: unknown): { path: string; message: string; code: string }[] {
  if (typeof v !== 'object' || v === null) return [];
  const o = v as Record<string, unknown>;
  return [{ path: String(o.path ?? ''), message: String(o.message ?? ''), code: String(o.code ?? '') }];
}

/**
 * Fastify's own client errors (bad JSON, body too large, unsupported media type, poisoned keys)
 * carry a 4xx `statusCode` and an `FST_` code or are a SyntaxError from JSON.parse.
 */
function frameworkStatus(error: unknown): number | undefined {
  if (!(error instanceof Error) || error instanceof ParleyError) return undefined;
  const { statusCode, code } = error as { statusCode?: unknown; code?: unknown };
  if (typeof statusCode !== 'number' || statusCode < 400 || statusCode >= 500) return undefined;
  if ((typeof code === 'string' && code.startsWith('FST_')) || error instanceof SyntaxError)
    return statusCode;
  return undefined;
}

function frameworkDetail(error: unknown, status: number): string {
  const code = (error as { code?: unknown }).code;
  if (error instanceof SyntaxError || code === 'FST_ERR_CTP_INVALID_JSON_BODY')
    return 'The body is not valid JSON.';
  if (status === 413) return 'The body is larger than this route accepts.';
  if (status === 415) return 'Unsupported content type; send application/json.';
  // Fastify's messages for the rest are fixed texts with no request data (e.g. poisoned keys).
  return error instanceof Error ? error.message : 'Bad request';
}
