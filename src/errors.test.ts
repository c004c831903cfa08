import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ERROR_CODES, errorCodes, grpcStatusOf, httpStatusOf, isErrorCode, ParleyError } from './errors.ts';

describe('ParleyError', () => {
  it('the code set is the closed set of DESIGN.md, numbered like gRPC', () => {
    assert.deepEqual([...errorCodes].sort(), [
      'ABORTED',
      'ALREADY_EXISTS',
      'CANCELLED',
      'DATA_LOSS',
      'DEADLINE_EXCEEDED',
      'FAILED_PRECONDITION',
      'INTERNAL',
      'INVALID_ARGUMENT',
      'NOT_FOUND',
      'OUT_OF_RANGE',
      'PERMISSION_DENIED',
      'RESOURCE_EXHAUSTED',
      'UNAUTHENTICATED',
      'UNAVAILABLE',
      'UNIMPLEMENTED',
      'UNKNOWN',
    ]);
    const grpc = errorCodes.map(grpcStatusOf).sort((a, b) => a - b);
    assert.deepEqual(
      grpc,
      Array.from({ length: 16 }, (_, i) => i + 1),
      'gRPC numbers are 1..16, each once',
    );
    assert.equal(httpStatusOf('NOT_FOUND'), 404);
    assert.equal(httpStatusOf('UNAVAILABLE'), 503);
  });

  it('the README table lists every code with the same HTTP, gRPC and retryable values', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const rows = new Map<string, string[]>();
    for (const line of readme.split('\n')) {
      const m = /^\|\s*`([A-Z_]+)`\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(yes|no)\s*\|/.exec(line);
      if (m) rows.set(m[1] as string, [m[2] as string, m[3] as string, m[4] as string]);
    }
    assert.deepEqual([...rows.keys()].sort(), [...errorCodes].sort(), 'README lists exactly the codes');
    for (const code of errorCodes) {
      const def = ERROR_CODES[code];
      assert.deepEqual(
        rows.get(code),
        [String(def.http), String(def.grpc), def.retryable ? 'yes' : 'no'],
        code,
      );
    }
  });

  it('retryable defaults by code and can be overridden', () => {
    assert.equal(new ParleyError('UNAVAILABLE', 'x').retryable, true);
    assert.equal(new ParleyError('INVALID_ARGUMENT', 'x').retryable, false);
    assert.equal(new ParleyError('UNAVAILABLE', 'x', { retryable: false }).retryable, false);
  });

  it('from() keeps a ParleyError, wraps anything else as INTERNAL with cause', () => {
    const original = new ParleyError('NOT_FOUND', 'gone');
    assert.equal(ParleyError.from(original), original);
    const boom = new TypeError('boom');
    const wrapped = ParleyError.from(boom);
    assert.equal(wrapped.code, 'INTERNAL');
    assert.equal(wrapped.cause, boom);
    assert.equal(wrapped.message, 'boom');
    assert.equal(ParleyError.from('text').code, 'INTERNAL');
    assert.equal(ParleyError.from(undefined).cause, undefined);
    const abort = new DOMException('stop', 'AbortError');
    assert.equal(ParleyError.from(abort).code, 'CANCELLED');
    assert.equal(ParleyError.from(new DOMException('t', 'TimeoutError')).code, 'DEADLINE_EXCEEDED');
  });

  it('instanceof holds across a second copy of the module', async () => {
    const copy = (await import(`./errors.ts?copy=${Date.now()}`)) as typeof import('./errors.ts');
    assert.notEqual(copy.ParleyError, ParleyError, 'really a second copy');
    const foreign = new copy.ParleyError('ABORTED', 'from the other copy');
    assert.ok(foreign instanceof ParleyError);
    assert.ok(new ParleyError('ABORTED', 'x') instanceof copy.ParleyError);
    assert.equal(ParleyError.from(foreign), foreign);
    assert.ok(!(new Error('plain') instanceof ParleyError));
    assert.ok(!({ code: 'ABORTED' } instanceof ParleyError));
  });

  it('the wire form has codes and fields, never stack or cause; malformed wire input is UNKNOWN', () => {
    const e = new ParleyError('FAILED_PRECONDITION', 'no stock', {
      reason: 'OUT_OF_STOCK',
      details: { sku: 'a' },
      cause: new Error('inner'),
    });
    const wire = JSON.parse(JSON.stringify(e)) as Record<string, unknown>;
    assert.deepEqual(wire, {
      code: 'FAILED_PRECONDITION',
      message: 'no stock',
      retryable: false,
      reason: 'OUT_OF_STOCK',
      details: { sku: 'a' },
    });
    const back = ParleyError.fromWire(wire);
    assert.deepEqual(back.toWire(), wire);
    assert.equal(ParleyError.fromWire(null).code, 'UNKNOWN');
    assert.equal(ParleyError.fromWire({ code: 'NOT_A_CODE', message: 'm' }).code, 'UNKNOWN');
    assert.equal(ParleyError.fromWire({ code: 'NOT_FOUND', message: 7 }).message, 'NOT_FOUND');
    assert.equal(isErrorCode('toString'), false);
  });
});
