/**
 * The Kafka broker on librdkafka's mock cluster (started as in `test/kafka-broker.test.ts`): dead
 * letters too large for a record, replays at once or failing part way, and `close`. Real clock:
 * Kafka's does not follow a fake one. Without the driver the file skips, except under CI=true.
 */
import assert from 'node:assert/strict';
import { after, it } from 'node:test';
import { startKafkaMock } from '../bench/lib/kafka-mock.ts';
import { createEnvelope, type DeadLetter, ParleyError } from '../src/index.ts';
import { mockKafkaBroker, writeRecord } from './kafka-fixture.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** A bound raced against what a test waits for: unref'd, so that it holds no process once that ends. */
const bound = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/** Polls `read` until `done` says so (30 s at most); returns the last value read. */
async function until<T>(read: () => Promise<T> | T, done: (value: T) => boolean): Promise<T> {
  let value = await read();
  for (let i = 0; i < 600 && !done(value); i++) {
    await sleep(50);
    value = await read();
  }
  return value;
}

const cluster = await startKafkaMock();

if (typeof cluster === 'string') {
  if (process.env.CI === 'true') it('kafka letters and close (mock cluster)', () => assert.fail(cluster));
  else it('kafka letters and close (mock cluster)', { skip: cluster }, () => undefined);
} else {
  after(() => cluster.stop());
  const mockBroker = (namespace: string) => mockKafkaBroker(cluster.brokers, `${namespace}-${process.pid}`);

  it("kafka: another writer's record whose dead letter is over the largest record goes to a letter without its key, or with its first bytes; its key goes on", async () => {
    const b = await mockBroker('bigletter');
    const topic = 'bigletter.t';
    try {
      const got: string[] = [];
      const consumer = await b.subscribe(
        { topic, group: 'g', maxAttempts: 1, startFrom: 'beginning' },
        async (d) => {
          got.push(String(d.envelope.data).slice(0, 4));
          if (String(d.envelope.data).startsWith('big')) throw new ParleyError('INTERNAL', 'fails');
        },
      );
      // No envelope, 500 KB, under a key of 400 KB: its letter (base64, and the key) is over 1 MB.
      const key = 'k'.repeat(400_000);
      const body = Buffer.alloc(500_000, 'x'.charCodeAt(0));
      await writeRecord(b, topic, body, { key });
      // An envelope that fits a record, whose letter (the envelope and the failure) does not.
      const env = createEnvelope({ source: '/other', type: topic, data: 'big' });
      env.data = `big${'y'.repeat(999_900 - Buffer.byteLength(JSON.stringify(env)))}`;
      await writeRecord(b, topic, Buffer.from(JSON.stringify(env)), { key: 'k2' });
      await b.publish(createEnvelope({ source: '/t', type: topic, data: 'next' }), { key });
      await b.publish(createEnvelope({ source: '/t', type: topic, data: 'nex2' }), { key: 'k2' });
      // Before: neither letter could be written; both keys waited for ever.
      const letters = await until(
        () => b.deadLetters.list({ topic }),
        (l) => l.length >= 2 && got.length >= 3,
      );
      assert.equal(letters.length, 2);
      const [keyless, cut] = letters as [DeadLetter, DeadLetter];
      assert.equal(keyless.code, 'INVALID_ARGUMENT');
      assert.match(keyless.message, /^the letter keeps no key \(its 400000 bytes would be over/);
      assert.ok(Buffer.from(String(keyless.envelope.data), 'base64').equals(body), 'the body whole');
      assert.equal(cut.code, 'INTERNAL');
      assert.match(cut.message, /^the letter keeps the first \d+ of its \d+ bytes .*; fails$/);
      assert.equal(cut.envelope.id, env.id);
      assert.ok(Buffer.from(String(cut.envelope.data), 'base64').toString().startsWith('{'));
      assert.deepEqual([...got].sort(), ['bigy', 'nex2', 'next']);
      await consumer.close();
    } finally {
      await b.close();
    }
  });

  it('kafka: two replays at once put each letter back once; a replay that fails part way removes what it put back', async () => {
    const b = await mockBroker('replays');
    const topic = 'replays.t';
    try {
      let healthy = false;
      const handled: string[] = [];
      const consumer = await b.subscribe(
        { topic, group: 'g', maxAttempts: 1, startFrom: 'beginning' },
        async (d) => {
          if (!healthy) throw new ParleyError('UNAVAILABLE', 'down');
          handled.push(String(d.envelope.data));
        },
      );
      for (let i = 0; i < 20; i++)
        await b.publish(createEnvelope({ source: '/t', type: topic, data: `a${i}` }));
      await until(
        () => b.deadLetters.list({ topic }),
        (l) => l.length === 20,
      );
      healthy = true;
      // Before: both put all 20 back (or one threw a TypeError on a letter the other had removed).
      const counts = await Promise.all([b.deadLetters.replay({ topic }), b.deadLetters.replay({ topic })]);
      assert.deepEqual(counts, [20, 0]);
      await until(
        () => handled.length,
        (n) => n >= 20,
      );
      await sleep(1500);
      assert.equal(handled.length, 20, 'each once');
      assert.equal(new Set(handled).size, 20);

      // A replay whose third put-back fails: the two put back are no longer letters.
      healthy = false;
      for (let i = 0; i < 4; i++)
        await b.publish(createEnvelope({ source: '/t', type: topic, data: `b${i}` }));
      await until(
        () => b.deadLetters.list({ topic }),
        (l) => l.length === 4,
      );
      healthy = true;
      const raw = b as unknown as { produce(topic: string, ...rest: unknown[]): Promise<unknown> };
      const produce = raw.produce;
      let puts = 0;
      raw.produce = function (this: unknown, name: string, ...rest: unknown[]) {
        if (name === b.kafkaTopic(topic) && ++puts === 3)
          return Promise.reject(new ParleyError('UNAVAILABLE', 'kafka is away'));
        return produce.call(this, name, ...rest);
      };
      await assert.rejects(b.deadLetters.replay({ topic }), { code: 'UNAVAILABLE' });
      raw.produce = produce;
      // Before: all 4 were still letters, and this replay put the first two back a second time.
      assert.equal(await b.deadLetters.replay({ topic }), 2);
      await until(
        () => handled.length,
        (n) => n >= 24,
      );
      await sleep(1500);
      assert.deepEqual(handled.slice(20).sort(), ['b0', 'b1', 'b2', 'b3']);
      // Once the store has read past them, the 24 ids removed are not kept: before, every id ever
      // removed stayed in memory for the life of the process.
      assert.deepEqual(await b.deadLetters.list({ topic }), []);
      assert.equal((b.deadLetters as unknown as { removed: Set<number> }).removed.size, 0);
      await consumer.close();
    } finally {
      await b.close();
    }
  });

  it('kafka close: a second close waits as the first; two broker closes at once end; a subscribe during a close is refused', async () => {
    const b = await mockBroker('closing');
    const topic = 'closing.t';
    let release: () => void = () => undefined;
    let started = false;
    const consumer = await b.subscribe({ topic, group: 'g' }, async () => {
      started = true;
      await new Promise<void>((r) => (release = r));
    });
    await b.publish(createEnvelope({ source: '/t', type: topic, data: 'x' }));
    await until(
      () => started,
      (s) => s,
    );
    const ended: string[] = [];
    const first = consumer.close().then(() => void ended.push('first'));
    const second = consumer.close().then(() => void ended.push('second'));
    await sleep(300);
    // Before: the second close returned at once, its handler still running.
    assert.deepEqual(ended, [], 'neither close ends while the handler runs');
    release();
    await Promise.all([first, second]);

    // A handler that holds the broker's close, and a subscribe meanwhile.
    let releaseOther: () => void = () => undefined;
    let startedOther = false;
    await b.subscribe({ topic, group: 'h', startFrom: 'beginning' }, async () => {
      startedOther = true;
      await new Promise<void>((r) => (releaseOther = r));
    });
    await until(
      () => startedOther,
      (s) => s,
    );
    const closes = [b.close(), b.close()];
    // Before: it subscribed, and the consumer it started was never closed (the process stayed up).
    await assert.rejects(
      b.subscribe({ topic, group: 'late' }, async () => undefined),
      { code: 'UNAVAILABLE' },
    );
    releaseOther();
    // Before: two closes at once never ended.
    const outcome = await Promise.race([
      Promise.all(closes).then(() => 'closed'),
      bound(15_000).then(() => 'hung'),
    ]);
    assert.equal(outcome, 'closed');
    await b.close();
    await assert.rejects(
      b.subscribe({ topic, group: 'later' }, async () => undefined),
      { code: 'UNAVAILABLE' },
    );
  });

  it('kafka close: a subscribe still starting when its broker closes is refused with UNAVAILABLE', async () => {
    for (const wait of [0, 20, 60]) {
      const b = await mockBroker(`startclose${wait}`);
      const subscribing = b
        .subscribe({ topic: 'startclose.t', group: 'g' }, async () => undefined)
        .then(
          (c) => ({ c }),
          (error: unknown) => ({ error }),
        );
      await sleep(wait);
      await b.close();
      // Before: its consumer went on starting after the close, was never disconnected (the
      // process stayed up), and the subscribe resolved 15 s later or never.
      const got = await Promise.race([subscribing, bound(10_000).then(() => ({ pending: true }))]);
      assert.ok('error' in got, `${wait} ms: ${JSON.stringify(got)}`);
      assert.equal((got.error as ParleyError).code, 'UNAVAILABLE');
    }
  });
}
