import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BrokerRegistry } from './broker/from-url.ts';
import { ParleyError } from './errors.ts';
import { TransportRegistry } from './transport/from-url.ts';

describe('registries by URL scheme', () => {
  it('an unknown scheme is INVALID_ARGUMENT naming the known ones; schemes ignore case', async () => {
    await assert.rejects(
      new BrokerRegistry().open('bogus://127.0.0.1:4222'),
      (e: unknown) =>
        e instanceof ParleyError &&
        e.code === 'INVALID_ARGUMENT' &&
        /known schemes: embedded:/.test(e.message),
    );
    assert.throws(
      () => new TransportRegistry().open('bogus://127.0.0.1'),
      (e: unknown) =>
        e instanceof ParleyError && /no transport for bogus:.*memory:, parley:, nats:/.test(e.message),
    );
    const transport = new TransportRegistry().open('MEMORY:');
    assert.equal(typeof transport.request, 'function');
  });
});
