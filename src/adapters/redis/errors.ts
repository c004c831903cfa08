/**
 * @module adapters/redis/errors
 * ioredis and Redis errors as Parley codes, in one place. Server errors (`ReplyError`) are matched
 * by the code word their message starts with (`NOGROUP`, `WRONGPASS`, `OOM`…); client errors by
 * name, socket code or message. The driver is not loaded to map an error.
 */
import { type ErrorCode, ParleyError } from '../../errors.ts';
import { NETWORK_ERRORS } from '../driver.ts';

/** The first word of a Redis error reply → a code. `ERR` replies are matched by text below. */
const BY_PREFIX: Record<string, ErrorCode> = {
  NOAUTH: 'UNAUTHENTICATED',
  WRONGPASS: 'UNAUTHENTICATED',
  NOPERM: 'PERMISSION_DENIED',
  NOGROUP: 'NOT_FOUND',
  NOSCRIPT: 'NOT_FOUND',
  BUSYGROUP: 'ALREADY_EXISTS',
  WRONGTYPE: 'FAILED_PRECONDITION',
  OOM: 'RESOURCE_EXHAUSTED',
  LOADING: 'UNAVAILABLE',
  BUSY: 'UNAVAILABLE',
  MASTERDOWN: 'UNAVAILABLE',
  READONLY: 'UNAVAILABLE', // a replica after a failover: the client reconnects to the new primary
  TRYAGAIN: 'UNAVAILABLE',
  CLUSTERDOWN: 'UNAVAILABLE',
  MOVED: 'FAILED_PRECONDITION', // Redis Cluster is not supported by this adapter
  ASK: 'FAILED_PRECONDITION',
  CROSSSLOT: 'FAILED_PRECONDITION',
  EXECABORT: 'ABORTED',
  UNBLOCKED: 'CANCELLED',
};

const BY_NAME: Record<string, ErrorCode> = {
  MaxRetriesPerRequestError: 'UNAVAILABLE',
  AbortError: 'UNAVAILABLE',
  InterruptError: 'UNAVAILABLE',
  ClusterAllFailedError: 'UNAVAILABLE',
  ParserError: 'INTERNAL',
};

function codeOf(e: { name?: string; message?: string; code?: unknown }): ErrorCode | undefined {
  const message = e.message ?? '';
  if (e.name === 'ReplyError') {
    const word = message.split(' ', 1)[0] ?? '';
    const byWord = BY_PREFIX[word];
    if (byWord !== undefined) return byWord;
    if (/unknown command/i.test(message)) return 'UNIMPLEMENTED'; // Redis older than 6.2 (XAUTOCLAIM)
    if (/max number of clients/i.test(message)) return 'RESOURCE_EXHAUSTED';
    if (/invalid password|auth/i.test(message)) return 'UNAUTHENTICATED';
    return 'INTERNAL';
  }
  const byName = e.name === undefined ? undefined : BY_NAME[e.name];
  if (byName !== undefined) return byName;
  if (typeof e.code === 'string' && NETWORK_ERRORS.has(e.code)) return 'UNAVAILABLE';
  if (/command timed out/i.test(message)) return 'DEADLINE_EXCEEDED';
  if (/connection is closed|stream isn't writeable|enableOfflineQueue/i.test(message)) return 'UNAVAILABLE';
  return undefined;
}

/** An ioredis error (or anything thrown near it) as a ParleyError; ParleyErrors pass unchanged. */
export function redisError(error: unknown, doing: string): ParleyError {
  if (error instanceof ParleyError) return error;
  const e = (typeof error === 'object' && error !== null ? error : {}) as {
    name?: string;
    message?: string;
    code?: unknown;
  };
  const message = e.message ?? String(error);
  return new ParleyError(codeOf(e) ?? 'UNAVAILABLE', `Redis: ${doing}: ${message}`, {
    cause: error,
    details: { driver: 'redis', name: e.name, ...(typeof e.code === 'string' ? { errno: e.code } : {}) },
  });
}

/** True for a server error reply that starts with `word` (`NOGROUP`, `BUSYGROUP`, `NOSCRIPT`…). */
export function isReply(error: unknown, word: string): boolean {
  const message = (error as { message?: unknown } | null)?.message;
  return typeof message === 'string' && message.startsWith(`${word} `);
}
