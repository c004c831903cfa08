/**
 * @module gateway/hardening
 * Checks run on every request before routing matters: the request target (refused, never
 * "cleaned": a path that needs normalising is an attack or a bug), header count, declared body
 * size, and the request id. Each throws an {@link HttpProblem}; none reads the body.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { uuidv7 } from '../envelope/ids.ts';
import { HttpProblem, PROBLEM_TYPE, problemType } from './problem.ts';

/**
 * A client's `X-Request-Id` is kept only when it is a UUID in canonical form: nothing else
 * reaches logs or responses, so it cannot carry log injection or unbounded text.
 */
const CLIENT_REQUEST_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function requestIdOf(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  // A UUIDv7 made like the envelopes' ids, not crypto.randomUUID: ids sort by time in logs, and
  // in the gateway bench's profile randomUUID took ≈1.3% of the process's busy time; since, the
  // ids of both the request and its call's envelope take ≈0.9% together.
  return typeof given === 'string' && CLIENT_REQUEST_ID.test(given) ? given : uuidv7();
}

/** Encoded forms that would, once decoded, change which resource a path names. */
const FORBIDDEN_ENCODED = /%(2e|2f|5c|00|25)/i;
// Control characters in a request target are refused outright.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching them is the point.
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * Refuses (400) a request target whose path has `.`/`..` segments, empty segments, backslashes,
 * encoded dots, slashes, backslashes or NUL, percent-encoded percent signs (double encoding), bad
 * percent escapes or control characters; 414 when longer than `maxLength`. The query is checked
 * for NUL and control characters only: its values are data, validated against the schema.
 */
export function checkTarget(url: string, maxLength: number): void {
  if (url.length > maxLength) {
    throw new HttpProblem(
      414,
      'INVALID_ARGUMENT',
      `The request target is longer than ${maxLength} characters.`,
    );
  }
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  const query = q === -1 ? '' : url.slice(q + 1);
  const refuse = (why: string) => {
    throw new HttpProblem(400, 'INVALID_ARGUMENT', `The request path is refused: ${why}.`);
  };
  if (!path.startsWith('/')) refuse('it must start with /');
  if (CONTROL.test(url) || /%00/i.test(query)) refuse('control characters');
  if (path.includes('\\')) refuse('backslash');
  if (FORBIDDEN_ENCODED.test(path)) refuse('encoded dot, slash, backslash, NUL or percent sign');
  // Segment by segment, without making a list of them (this runs for every request).
  for (let start = 1; start <= path.length; ) {
    let end = path.indexOf('/', start);
    if (end === -1) end = path.length;
    // A trailing slash leaves one empty last segment: the router decides about it (404).
    if (end === start && end < path.length) refuse('empty segment');
    const segment = path.slice(start, end);
    if (segment === '.' || segment === '..') refuse('dot segment');
    // Only an escape can decode to something new: a segment without one is itself, and the
    // control characters it could hold were refused above with the whole target.
    if (segment.includes('%')) {
      let decoded: string;
      try {
        decoded = decodeURIComponent(segment);
      } catch {
        refuse('malformed percent escape');
        return;
      }
      if (CONTROL.test(decoded)) refuse('control characters');
    }
    start = end + 1;
  }
}

/** 431 for more headers than allowed (Node only truncates past `maxHeadersCount`). */
export function checkHeaderCount(req: IncomingMessage, max: number): void {
  if (req.rawHeaders.length / 2 > max) {
    throw new HttpProblem(431, 'RESOURCE_EXHAUSTED', `More than ${max} request headers.`);
  }
}

/**
 * 413 when the declared Content-Length is over the limit: answered before a byte of the body is
 * read. A chunked body is cut off by the parser when it passes the same limit.
 */
export function checkDeclaredLength(req: IncomingMessage, limit: number): void {
  const declared = req.headers['content-length'];
  if (declared === undefined) return;
  const n = Number(declared);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new HttpProblem(400, 'INVALID_ARGUMENT', 'Content-Length is not a byte count.');
  }
  if (n > limit) {
    throw new HttpProblem(413, 'RESOURCE_EXHAUSTED', `The body is larger than ${limit} bytes.`, {
      // The unread body cannot be skipped safely: end the connection after answering.
      connection: 'close',
    });
  }
}

/**
 * Answers errors Node's HTTP parser finds before any request exists (a head over
 * `maxHeaderSize`: 431; malformed requests: 400) as problems, then closes the socket.
 */
export function clientErrorHandler(error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const tooLarge = error.code === 'HPE_HEADER_OVERFLOW';
  const status = tooLarge ? 431 : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
  const code = tooLarge ? 'RESOURCE_EXHAUSTED' : status === 408 ? 'DEADLINE_EXCEEDED' : 'INVALID_ARGUMENT';
  const requestId = uuidv7();
  const body = JSON.stringify({
    type: problemType(code),
    title: tooLarge ? 'Request headers too large' : status === 408 ? 'Request timeout' : 'Bad request',
    status,
    detail: tooLarge
      ? 'The request head is larger than this server accepts.'
      : status === 408
        ? 'The request did not arrive whole in time.'
        : 'The request is malformed.',
    code,
    requestId,
    retryable: false,
  });
  const reason = tooLarge
    ? 'Request Header Fields Too Large'
    : status === 408
      ? 'Request Timeout'
      : 'Bad Request';
  // Not into an answer already on its way (its head sent): that would corrupt it.
  const answering = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (socket.writable && answering?.headersSent !== true) {
    socket.write(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: ${PROBLEM_TYPE}\r\nX-Request-Id: ${requestId}\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}
