/**
 * @module errors
 * One error type for every path. Retry, breaker and dead-letter decisions read `code` and
 * `retryable`, never the message text. Codes are a closed set named after gRPC status codes,
 * each mapped once to an HTTP status and a gRPC status number.
 */

/** Every code, with its HTTP status, gRPC status, and whether a retry may succeed by default. */
export const ERROR_CODES = {
  CANCELLED: { http: 499, grpc: 1, retryable: false },
  UNKNOWN: { http: 500, grpc: 2, retryable: false },
  INVALID_ARGUMENT: { http: 400, grpc: 3, retryable: false },
  DEADLINE_EXCEEDED: { http: 504, grpc: 4, retryable: false },
  NOT_FOUND: { http: 404, grpc: 5, retryable: false },
  ALREADY_EXISTS: { http: 409, grpc: 6, retryable: false },
  PERMISSION_DENIED: { http: 403, grpc: 7, retryable: false },
  RESOURCE_EXHAUSTED: { http: 429, grpc: 8, retryable: true },
  FAILED_PRECONDITION: { http: 400, grpc: 9, retryable: false },
  ABORTED: { http: 409, grpc: 10, retryable: true },
  OUT_OF_RANGE: { http: 400, grpc: 11, retryable: false },
  UNIMPLEMENTED: { http: 501, grpc: 12, retryable: false },
  INTERNAL: { http: 500, grpc: 13, retryable: false },
  UNAVAILABLE: { http: 503, grpc: 14, retryable: true },
  DATA_LOSS: { http: 500, grpc: 15, retryable: false },
  UNAUTHENTICATED: { http: 401, grpc: 16, retryable: false },
} as const satisfies Record<string, { http: number; grpc: number; retryable: boolean }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export const errorCodes = Object.keys(ERROR_CODES) as ErrorCode[];

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
}

export function httpStatusOf(code: ErrorCode): number {
  return ERROR_CODES[code].http;
}

export function grpcStatusOf(code: ErrorCode): number {
  return ERROR_CODES[code].grpc;
}

export interface ParleyErrorOptions {
  /** Overrides the code's default retryability. */
  retryable?: boolean;
  /** Machine-readable reason, such as a declared contract error (`OUT_OF_STOCK`). */
  reason?: string;
  /** JSON-safe details; they cross the wire. */
  details?: Record<string, unknown>;
  cause?: unknown;
}

/** The form an error takes on the wire: codes and fields, never a stack. */
export interface WireError {
  code: ErrorCode;
  message: string;
  retryable: boolean;
  reason?: string;
  details?: Record<string, unknown>;
}

const brand = Symbol.for('parley.error');

export class ParleyError extends Error {
  override readonly name = 'ParleyError';
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly reason: string | undefined;
  readonly details: Record<string, unknown> | undefined;
  /**
   * True when `from()` made this error to wrap something that was not a ParleyError: nobody
   * decided it was permanent, so consumers retry it. Not sent over the wire.
   */
  readonly unexpected: boolean;

  constructor(code: ErrorCode, message: string, options: ParleyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    // An unknown code from a newer peer must not break us: degrade it to UNKNOWN.
    this.code = isErrorCode(code) ? code : 'UNKNOWN';
    this.retryable = options.retryable ?? ERROR_CODES[this.code].retryable;
    this.reason = options.reason;
    this.details = options.details;
    this.unexpected = false;
    Object.defineProperty(this, brand, { value: true });
  }

  /** `instanceof` holds for errors made by another copy of this package in the same process. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[brand] === true;
  }

  /**
   * Normalises anything thrown. A ParleyError is returned as is; an AbortError becomes CANCELLED;
   * anything else becomes `fallback` (INTERNAL by default) with the original kept as `cause`.
   */
  static from(value: unknown, fallback: ErrorCode = 'INTERNAL'): ParleyError {
    if (value instanceof ParleyError) return value;
    if (value instanceof Error) {
      if (value.name === 'AbortError') return new ParleyError('CANCELLED', value.message, { cause: value });
      if (value.name === 'TimeoutError')
        return new ParleyError('DEADLINE_EXCEEDED', value.message, { cause: value });
      return markUnexpected(new ParleyError(fallback, value.message, { cause: value }));
    }
    return markUnexpected(
      new ParleyError(fallback, typeof value === 'string' ? value : 'non-error value thrown', {
        cause: value,
      }),
    );
  }

  /** Rebuilds an error that crossed the wire. Anything malformed becomes UNKNOWN rather than a throw. */
  static fromWire(value: unknown): ParleyError {
    if (typeof value !== 'object' || value === null)
      return new ParleyError('UNKNOWN', 'malformed error on the wire');
    const w = value as Partial<Record<keyof WireError, unknown>>;
    const code = isErrorCode(w.code) ? w.code : 'UNKNOWN';
    const options: ParleyErrorOptions = {};
    if (typeof w.retryable === 'boolean') options.retryable = w.retryable;
    if (typeof w.reason === 'string') options.reason = w.reason;
    if (typeof w.details === 'object' && w.details !== null)
      options.details = w.details as Record<string, unknown>;
    return new ParleyError(code, typeof w.message === 'string' ? w.message : code, options);
  }

  /** The wire form: code and fields; the stack and `cause` never leave the process. */
  toWire(): WireError {
    const wire: WireError = { code: this.code, message: this.message, retryable: this.retryable };
    if (this.reason !== undefined) wire.reason = this.reason;
    if (this.details !== undefined) wire.details = this.details;
    return wire;
  }

  toJSON(): WireError {
    return this.toWire();
  }
}

function markUnexpected(e: ParleyError): ParleyError {
  (e as { unexpected: boolean }).unexpected = true;
  return e;
}

/** Shortcut for `ParleyError.from(e).code`. */
export function codeOf(error: unknown): ErrorCode {
  return ParleyError.from(error).code;
}
