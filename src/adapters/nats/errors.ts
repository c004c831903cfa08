/**
 * @module adapters/nats/errors
 * nats.js errors as Parley codes, in one place. The driver's classes are matched by name, so the
 * driver is not loaded to map an error.
 */
import { type ErrorCode, ParleyError } from '../../errors.ts';

const BY_NAME: Record<string, ErrorCode> = {
  ConnectionError: 'UNAVAILABLE',
  ClosedConnectionError: 'UNAVAILABLE',
  DrainingConnectionError: 'UNAVAILABLE',
  NoRespondersError: 'UNAVAILABLE',
  // Also what a publish gets while a server shuts down (no responders): worth retrying.
  JetStreamNotEnabled: 'UNAVAILABLE',
  TimeoutError: 'DEADLINE_EXCEEDED',
  AuthorizationError: 'UNAUTHENTICATED',
  UserAuthenticationExpiredError: 'UNAUTHENTICATED',
  PermissionViolationError: 'PERMISSION_DENIED',
  InvalidSubjectError: 'INVALID_ARGUMENT',
  InvalidArgumentError: 'INVALID_ARGUMENT',
  InvalidNameError: 'INVALID_ARGUMENT',
  InvalidOperationError: 'FAILED_PRECONDITION',
  ProtocolError: 'INTERNAL',
  StreamNotFoundError: 'NOT_FOUND',
  ConsumerNotFoundError: 'NOT_FOUND',
};

/** A nats.js error (or anything thrown near it) as a ParleyError; ParleyErrors pass unchanged. */
export function natsError(error: unknown, doing: string): ParleyError {
  if (error instanceof ParleyError) return error;
  const e = error as { name?: string; message?: string; code?: unknown; status?: unknown };
  let code: ErrorCode | undefined = e.name === undefined ? undefined : BY_NAME[e.name];
  if (code === undefined && e.name === 'JetStreamApiError') {
    // JetStream API errors carry an HTTP-like status.
    code = e.status === 404 ? 'NOT_FOUND' : e.status === 503 ? 'UNAVAILABLE' : 'FAILED_PRECONDITION';
  }
  if (code === undefined && /max.?payload/i.test(e.message ?? '')) code = 'RESOURCE_EXHAUSTED';
  return new ParleyError(code ?? 'UNAVAILABLE', `NATS: ${doing}: ${e.message ?? String(error)}`, {
    cause: error,
    details: { driver: 'nats', name: e.name },
  });
}
