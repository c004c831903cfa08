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

  it('a malformed broker or transport URL is INVALID_ARGUMENT, without the URL (it may hold a password)', async () => {
    // Until 2026-12-03 these failed with the URL parser's TypeError (an unexpected INTERNAL).
    const refused = (kind: string) => (e: unknown) =>
      e instanceof ParleyError &&
      e.code === 'INVALID_ARGUMENT' &&
      new RegExp(`^not a valid [a-z]+: ${kind} URL$`).test(e.message) &&
      !e.message.includes('secret');
    for (const url of ['redis://[::1', 'nats://a b', 'mqtt://h:99999', 'amqp://u:secret@[x']) {
      await assert.rejects(new BrokerRegistry().open(url), refused('broker'), url);
      assert.throws(() => new TransportRegistry().open(url), refused('transport'), url);
    }
  });
});
