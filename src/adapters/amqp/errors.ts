/**
 * @module adapters/amqp/errors
 * amqplib errors and AMQP close codes as Parley codes, in one place. A connection or channel that
 * the server closes fails with an `Error` whose `code` is the AMQP reply code (404, 406, ...);
 * socket errors carry Node's `code` (`ECONNREFUSED`, ...); an operation on a closed channel is an
 * `IllegalOperationError`. The driver is not loaded to map an error.
 */
import { type ErrorCode, ParleyError } from '../../errors.ts';
import { NETWORK_ERRORS } from '../driver.ts';

/** AMQP 0-9-1 reply codes (connection.close / channel.close). */
const BY_REPLY_CODE: Record<number, ErrorCode> = {
  200: 'UNAVAILABLE', // REPLY_SUCCESS: closed normally, but not by us
  311: 'RESOURCE_EXHAUSTED', // CONTENT_TOO_LARGE
  312: 'UNAVAILABLE', // NO_ROUTE
  313: 'UNAVAILABLE', // NO_CONSUMERS
  320: 'UNAVAILABLE', // CONNECTION_FORCED: the broker is shutting down, or an operator closed it
  402: 'INVALID_ARGUMENT', // INVALID_PATH: a bad vhost
  403: 'PERMISSION_DENIED', // ACCESS_REFUSED
  404: 'NOT_FOUND', // NOT_FOUND: exchange or queue
  405: 'FAILED_PRECONDITION', // RESOURCE_LOCKED: an exclusive queue of another connection
  406: 'FAILED_PRECONDITION', // PRECONDITION_FAILED: declared with other arguments, unknown delivery tag
  501: 'INTERNAL', // FRAME_ERROR
  502: 'INTERNAL', // SYNTAX_ERROR
  503: 'INTERNAL', // COMMAND_INVALID
  504: 'INTERNAL', // CHANNEL_ERROR
  505: 'INTERNAL', // UNEXPECTED_FRAME
  506: 'RESOURCE_EXHAUSTED', // RESOURCE_ERROR: the server is out of a resource
  530: 'PERMISSION_DENIED', // NOT_ALLOWED: e.g. a vhost the user may not open
  540: 'UNIMPLEMENTED', // NOT_IMPLEMENTED
  541: 'INTERNAL', // INTERNAL_ERROR
};

/** The code an amqplib error maps to. */
export function amqpCode(error: unknown): ErrorCode {
  if (error instanceof ParleyError) return error.code;
  const e = error as { name?: string; message?: string; code?: unknown };
  const message = e.message ?? '';
  if (typeof e.code === 'number') {
    // A consumer that held a delivery past the server's consumer_timeout loses its channel.
    if (e.code === 406 && /acknowledgement .* timed out|consumer_timeout/i.test(message))
      return 'DEADLINE_EXCEEDED';
    return BY_REPLY_CODE[e.code] ?? 'UNAVAILABLE';
  }
  if (typeof e.code === 'string' && NETWORK_ERRORS.has(e.code)) return 'UNAVAILABLE';
  if (/ACCESS.REFUSED|Login was refused/i.test(message)) return 'UNAUTHENTICATED';
  if (/NOT.ALLOWED|vhost/i.test(message) && /Handshake/i.test(message)) return 'PERMISSION_DENIED';
  if (e.name === 'IllegalOperationError') return 'UNAVAILABLE'; // the channel or connection is closed
  if (e.name === 'RangeError' || e.name === 'TypeError') return 'INVALID_ARGUMENT'; // headers too large, bad options
  if (/Expected amqp/i.test(message)) return 'INVALID_ARGUMENT';
  return 'UNAVAILABLE';
}

/** An amqplib error (or anything thrown near it) as a ParleyError; ParleyErrors pass unchanged. */
export function amqpError(error: unknown, doing: string): ParleyError {
  if (error instanceof ParleyError) return error;
  const e = error as { name?: string; message?: string; code?: unknown };
  return new ParleyError(amqpCode(error), `RabbitMQ: ${doing}: ${e.message ?? String(error)}`, {
    cause: error,
    details: {
      driver: 'amqplib',
      ...(e.name === undefined ? {} : { name: e.name }),
      ...(typeof e.code === 'number' || typeof e.code === 'string' ? { replyCode: e.code } : {}),
    },
  });
}
