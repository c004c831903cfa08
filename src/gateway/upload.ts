/**
 * @module gateway/upload
 * Multipart uploads to an input-stream action (`stream: 'input'`, public, POST or PUT). The first
 * file part is read as it arrives and sent on as chunks of {@link UploadChunk} — the bytes
 * base64-encoded so any codec carries them — while the service consumes them; the file is never
 * held whole. Past the upload limit the call is cancelled and the client answered 413.
 * Other form fields are ignored; path parameters are not passed (an input stream has no input
 * besides its chunks).
 */
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { ActionDef, AnyContract } from '../contract/contract.ts';
import { ParleyError } from '../errors.ts';
import type { Principal } from '../runtime/principal.ts';
import type { Invoker } from './invoke.ts';
import { HttpProblem } from './problem.ts';

/** One piece of an uploaded file, as the service's input-stream handler reads it. */
export const UploadChunk = z.object({
  filename: z.string(),
  contentType: z.string(),
  /** Byte offset of this piece in the file. */
  offset: z.number().int().nonnegative(),
  /** The bytes, base64. */
  data: z.string(),
});
export type UploadChunk = z.infer<typeof UploadChunk>;

export interface UploadInit {
  request: FastifyRequest;
  invoker: Invoker;
  limit: number;
  common: {
    contract: AnyContract;
    action: string;
    def: ActionDef;
    principal: Principal | undefined;
    signal: AbortSignal;
  };
}

export async function callWithUpload(init: UploadInit): Promise<unknown> {
  const { request, limit } = init;
  if (!request.isMultipart()) {
    throw new HttpProblem(415, 'INVALID_ARGUMENT', 'Send the file as multipart/form-data.');
  }
  let part: Awaited<ReturnType<FastifyRequest['file']>>;
  try {
    part = await request.file({ limits: { fileSize: limit, files: 1, fields: 20, fieldSize: 4096 } });
  } catch (error) {
    throw malformed(error);
  }
  if (part === undefined) throw new ParleyError('INVALID_ARGUMENT', 'the form has no file part');
  const file = part.file;
  // Cancels the call when the file passes the limit, as well as when the client goes away.
  const controller = new AbortController();
  init.common.signal.addEventListener('abort', () => controller.abort(init.common.signal.reason), {
    once: true,
  });
  let overLimit = false;
  file.once('limit', () => {
    overLimit = true;
    controller.abort(new ParleyError('CANCELLED', 'the upload passed its limit'));
  });
  /** The client's form broke off or was malformed while the service was reading it. */
  let broken: { error: unknown } | undefined;
  // One reader of the file for the service and for the drain below: once a stream's async
  // iterator has read from it, `resume()` does nothing (its 'readable' listener wins).
  const pieces = (file as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  async function* chunks(): AsyncGenerator<UploadChunk> {
    let offset = 0;
    for (;;) {
      let next: IteratorResult<Buffer>;
      try {
        next = await pieces.next();
      } catch (error) {
        broken = { error: malformed(error) };
        throw broken.error;
      }
      if (next.done === true || overLimit) break;
      const piece = next.value;
      yield {
        filename: part?.filename ?? '',
        contentType: part?.mimetype ?? '',
        offset,
        data: piece.toString('base64'),
      };
      offset += piece.length;
    }
    if (overLimit || file.truncated) throw tooLarge(limit);
  }
  try {
    return await init.invoker.call({ ...init.common, signal: controller.signal, input: chunks() });
  } catch (error) {
    if (overLimit || file.truncated) throw tooLarge(limit);
    if (broken !== undefined) throw broken.error;
    throw error;
  } finally {
    // Whatever the service left unread is drained so the connection can answer. Through the
    // iterator: until 2026-12-03 this was `file.resume()`, a no-op once the service had read, and
    // a file the service stopped reading (it failed, or answered, before the end) stalled the form
    // parser: the rest of the body was never read, the connection answered nothing more and held
    // the gateway's close until its timeout.
    if (!file.readableEnded) void drain(pieces);
  }
}

/** Reads and drops what is left of the file; a broken form ends it as well. */
async function drain(pieces: AsyncIterator<Buffer>): Promise<void> {
  try {
    while ((await pieces.next()).done !== true);
  } catch {
    // The client's form broke off: nothing is left to read.
  }
}

/**
 * The form parser's refusal of the body (no boundary, a part cut short, a malformed part header):
 * the client's to fix, 400. Its messages are fixed texts that quote nothing of the request.
 */
function malformed(error: unknown): unknown {
  if (error instanceof ParleyError || error instanceof HttpProblem) return error;
  const reason = error instanceof Error ? error.message : String(error);
  return new HttpProblem(400, 'INVALID_ARGUMENT', `The multipart body is malformed: ${reason}.`);
}

function tooLarge(limit: number): HttpProblem {
  return new HttpProblem(413, 'RESOURCE_EXHAUSTED', `The file is larger than ${limit} bytes.`);
}
