/**
 * The broker conformance suite. Every broker runs it unchanged by passing a harness; a broker
 * that fails it is not done. Time moves through `harness.advance(ms)`: a fake clock for the
 * embedded broker, real waiting for brokers whose clock the test cannot hold.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import {
  type Broker,
  type BrokerHistory,
  type Clock,
  type ConsumerSpec,
  comparePositions,
  createEnvelope,
  type Delivery,
  defineContract,
  type Envelope,
  type HistoryPage,
  ParleyError,
  queueTopic,
  send,
  subscribe,
  z,
} from '../../src/index.ts';
import { calcService, mutate, type Seeded, seeded, testNode } from '../helpers.ts';

export interface BrokerHarness {
  name: string;
  /** A fresh broker (its own namespace: topics of one case never reach another). */
  create(): Promise<Broker> | Broker;
  /** The clock the broker runs on; given to nodes too. */
  clock: Clock;
  /** Lets `ms` of broker time pass, and the work due in it run. */
  advance(ms: number): Promise<void>;
  /** Cases to skip, each with the reason. */
  skip?: Partial<Record<string, string>>;
  /**
   * The lease of the lease cases (1000 ms unless given): longer for a broker where a consumer
   * joining its group takes longer than that (Kafka: the second member waits out a rebalance).
   */
  leaseMs?: number;
  /** Why the broker keeps no history (its `history:` cases skip with it); unset: it must keep one. */
  noHistory?: string;
  /** Runs only the cases this accepts (a second harness of one broker, set up another way). */
  only?: (name: string) => boolean;
  /**
   * Writes `body` where the broker's publishes of `topic` go, as another client of the broker
   * would (bare bytes: no Parley header or property). Without it, `noInject` says why no other
   * writer can reach the broker (its `foreign:` case skips with that).
   */
  inject?(broker: Broker, topic: string, body: Buffer): Promise<void>;
  noInject?: string;
  /**
   * Writes `body` into the broker's dead-letter store as one record, as another program or an
   * older version might have (after the store was first used). Without it, `noInjectLetter` says
   * why nothing else can write there (its `letters:` case skips with that).
   */
  injectLetter?(broker: Broker, body: Buffer): Promise<void>;
  noInjectLetter?: string;
}

let topicSeq = 0;
const fresh = (name: string) => `conformance.${name}.p${process.pid}-${++topicSeq}`;

function envelope(type: string, data: unknown, extra: Partial<Envelope> = {}): Envelope {
  return { ...createEnvelope({ source: '/conformance', type, data }), ...extra };
}

/** An object that holds itself: JSON has no text for it. */
function cyclic(): unknown {
  const o: Record<string, unknown> = { a: 1 };
  o.self = o;
  return o;
}

/** Settles once `check` holds, advancing broker time in small steps; fails after `budgetMs`. */
async function until(
  h: BrokerHarness,
  check: () => boolean | Promise<boolean>,
  what: string,
  budgetMs = 10_000,
): Promise<void> {
  for (let spent = 0; !(await check()); spent += 10) {
    if (spent > budgetMs) assert.fail(`still waiting for ${what} after ${budgetMs} ms of broker time`);
    await h.advance(10);
  }
}

export function brokerConformance(harness: BrokerHarness): void {
  describe(`broker conformance: ${harness.name}`, () => {
    const open: { close(): Promise<void> }[] = [];
    afterEach(async () => {
      for (const c of open.splice(0).reverse()) await c.close();
    });

    async function broker(): Promise<Broker> {
      const b = await harness.create();
      open.push(b);
      return b;
    }

    async function consume(b: Broker, spec: ConsumerSpec, handler: (d: Delivery) => Promise<void> | void) {
      const c = await b.subscribe({ backoff: { initial: 20, max: 200 }, ...spec }, async (d) => handler(d));
      open.push(c);
      return c;
    }

    const test = (name: string, fn: () => Promise<void>) => {
      if (harness.only !== undefined && !harness.only(name)) return;
      const reason =
        harness.skip?.[name] ??
        (name.startsWith('history:') ? harness.noHistory : undefined) ??
        (name.startsWith('foreign:') ? harness.noInject : undefined) ??
        (name.startsWith('letters:') ? harness.noInjectLetter : undefined);
      if (reason !== undefined) it(name, { skip: reason }, fn);
      else it(name, { timeout: 60_000 }, fn);
    };

    test('each group gets one copy of every message', async () => {
      const b = await broker();
      const topic = fresh('groups');
      const got: Record<string, number[]> = { a: [], b: [] };
      for (const g of ['a', 'b'] as const)
        await consume(b, { topic, group: g }, (d) => void got[g]?.push(d.envelope.data as number));
      for (let i = 0; i < 20; i++) await b.publish(envelope(topic, i));
      await until(harness, () => (got.a?.length ?? 0) + (got.b?.length ?? 0) >= 40, '40 deliveries');
      await harness.advance(200);
      for (const g of ['a', 'b'])
        assert.deepEqual(
          [...(got[g] ?? [])].sort((x, y) => x - y),
          [...Array(20).keys()],
          g,
        );
    });

    test('consumers in one group compete: each message once, work split', async () => {
      const b = await broker();
      const topic = fresh('compete');
      const by: number[][] = [[], [], []];
      for (const [i, list] of by.entries()) {
        await consume(b, { topic, group: 'workers', maxInFlight: 1 }, async (d) => {
          list.push(d.envelope.data as number);
          await harness.advance(1);
          void i;
        });
      }
      for (let i = 0; i < 60; i++) await b.publish(envelope(topic, i));
      await until(harness, () => by.flat().length >= 60, '60 deliveries');
      await harness.advance(200);
      assert.deepEqual(
        by.flat().sort((x, y) => x - y),
        [...Array(60).keys()],
        'each exactly once',
      );
      assert.ok(by.filter((l) => l.length > 0).length >= 2, `work split: ${by.map((l) => l.length)}`);
    });

    test('a work queue delivers each message to exactly one consumer', async () => {
      const b = await broker();
      const queue = fresh('queue');
      const topic = queueTopic(queue);
      const seen: number[] = [];
      for (let i = 0; i < 3; i++)
        await consume(b, { topic, group: queue }, (d) => void seen.push(d.envelope.data as number));
      for (let i = 0; i < 30; i++) await send(b, queue, i);
      await until(harness, () => seen.length >= 30, '30 deliveries');
      await harness.advance(200);
      assert.deepEqual(
        [...seen].sort((x, y) => x - y),
        [...Array(30).keys()],
      );
    });

    test('per-key order holds while an earlier message is retried; other keys flow', async () => {
      const b = await broker();
      const topic = fresh('order');
      const log: string[] = [];
      let failuresLeft = 2;
      await consume(b, { topic, group: 'g', maxAttempts: 5, maxInFlight: 16 }, (d) => {
        const { k, n } = d.envelope.data as { k: string; n: number };
        if (k === 'A' && n === 1 && failuresLeft-- > 0) throw new ParleyError('UNAVAILABLE', 'try again');
        log.push(`${k}${n}`);
      });
      for (let n = 1; n <= 3; n++) await b.publish(envelope(topic, { k: 'A', n }), { key: 'A' });
      for (let n = 1; n <= 3; n++) await b.publish(envelope(topic, { k: 'B', n }), { key: 'B' });
      await until(harness, () => log.length >= 6, 'six handled');
      assert.deepEqual(
        log.filter((x) => x.startsWith('A')),
        ['A1', 'A2', 'A3'],
      );
      assert.deepEqual(
        log.filter((x) => x.startsWith('B')),
        ['B1', 'B2', 'B3'],
      );
      assert.ok(log.indexOf('B3') < log.indexOf('A1'), `key B did not wait for A's retries: ${log}`);
    });

    test('exactly maxAttempts handler runs, then dead-letter with code, message and attempts', async () => {
      const b = await broker();
      const topic = fresh('attempts');
      let calls = 0;
      await consume(b, { topic, group: 'g', maxAttempts: 3 }, () => {
        calls++;
        throw new ParleyError('UNAVAILABLE', `down #${calls}`);
      });
      const env = envelope(topic, { x: 1 });
      await b.publish(env);
      await until(harness, () => calls >= 3, 'three attempts');
      await until(harness, async () => (await b.deadLetters.list({ topic })).length > 0, 'a dead letter');
      await harness.advance(500);
      assert.equal(calls, 3, 'no fourth run');
      const [d] = await b.deadLetters.list({ topic });
      assert.ok(d);
      assert.equal(d.code, 'UNAVAILABLE');
      assert.equal(d.message, 'down #3');
      assert.equal(d.attempts, 3);
      assert.equal(d.group, 'g');
      assert.equal(d.envelope.id, env.id);
      assert.ok(d.firstFailureAt <= d.lastFailureAt);
    });

    test('a subscription with settings no broker can honour is refused with INVALID_ARGUMENT', async () => {
      const b = await broker();
      const topic = fresh('badspec');
      const specs: unknown[] = [
        null,
        { group: 'g' },
        { topic, group: '' },
        { topic: 5, group: 'g' },
        { topic, group: 'g', maxInFlight: 0 },
        { topic, group: 'g', maxInFlight: 'x' },
        { topic, group: 'g', maxAttempts: 1.5 },
        { topic, group: 'g', lease: -1 },
        { topic, group: 'g', lease: Number.NaN },
        { topic, group: 'g', startFrom: 'yesterday' },
        { topic, group: 'g', backoff: { initial: 'x' } },
        { topic, group: 'g', backoff: { multiplier: 0 } },
      ];
      for (const spec of specs) {
        await assert.rejects(
          b.subscribe(spec as ConsumerSpec, async () => undefined),
          (e: unknown) => e instanceof ParleyError && e.code === 'INVALID_ARGUMENT',
          JSON.stringify(spec),
        );
      }
      // The broker is none the worse: a good subscription on the same topic works.
      const got: unknown[] = [];
      await consume(b, { topic, group: 'g' }, (d) => void got.push(d.envelope.data));
      await b.publish(envelope(topic, 'fine'));
      await until(harness, () => got.length >= 1, 'a delivery');
      assert.deepEqual(got, ['fine']);
    });

    test('foreign: what other writers put on a topic is delivered as the envelope it holds, or dead-lettered with its bytes (not replayed)', async () => {
      const inject = harness.inject;
      assert.ok(inject !== undefined, 'the harness gives inject, or noInject with the reason');
      const b = await broker();
      const topic = fresh('foreign');
      const delivered = new Map<string, unknown[]>();
      await consume(b, { topic, group: 'g', maxAttempts: 1 }, (d) => {
        const list = delivered.get(d.envelope.id) ?? [];
        list.push(d.envelope);
        delivered.set(d.envelope.id, list);
      });
      const seed = Number(process.env.PARLEY_FUZZ_SEED ?? 20261130);
      const bodies = foreignBodies(seeded(seed), topic, 24);
      for (const { body } of bodies) await inject(b, topic, body);
      const valid = bodies.filter((x) => x.envelope !== undefined);
      const invalid = bodies.filter((x) => x.envelope === undefined).map((x) => x.body.toString('base64'));
      assert.ok(valid.length > 0 && invalid.length > 0, `seed ${seed} makes bodies of both kinds`);
      const lettered = async () =>
        new Set(
          (await b.deadLetters.list({ topic }, 1000)).map((l) => {
            assert.equal(l.code, 'INVALID_ARGUMENT', l.message);
            assert.equal(l.envelope.source, '/parley/undecodable', 'the letter holds the bytes');
            return l.envelope.data as string;
          }),
        );
      await until(
        harness,
        async () => {
          const letters = await lettered();
          return valid.every((x) => delivered.has(x.id)) && invalid.every((x) => letters.has(x));
        },
        `${valid.length} envelopes delivered and ${invalid.length} bodies dead-lettered`,
      );
      await harness.advance(200);
      for (const x of valid) {
        for (const got of delivered.get(x.id) ?? [])
          assert.deepEqual(got, x.envelope, `seed ${seed}: ${x.id}`);
      }
      const letters = await lettered();
      assert.equal(letters.size, invalid.length, `seed ${seed}: only the bodies that are no envelope`);
      assert.equal(delivered.size, valid.length, `seed ${seed}: nothing else was delivered`);
      // A replay passes over them: their wrapper is no event of the topic. They stay until purged.
      assert.equal(await b.deadLetters.replay({ topic }), 0);
      await harness.advance(300);
      assert.equal(delivered.size, valid.length, 'a replay delivered nothing');
      assert.equal((await lettered()).size, invalid.length, 'the letters are kept');
      assert.equal(await b.deadLetters.purge({ topic }), invalid.length);
    });

    test('letters: a stored record that is no dead letter is listed as an unreadable one with its bytes; replay passes over it, purge removes it', async () => {
      const injectLetter = harness.injectLetter;
      assert.ok(
        injectLetter !== undefined,
        'the harness gives injectLetter, or noInjectLetter with the reason',
      );
      const b = await broker();
      const topic = fresh('letters');
      // One letter of this store's own, from a handler that fails for good.
      const failing = await consume(b, { topic, group: 'g', maxAttempts: 1 }, () => {
        throw new ParleyError('FAILED_PRECONDITION', 'no such customer');
      });
      const own = envelope(topic, 'own');
      await b.publish(own);
      await until(harness, async () => (await b.deadLetters.list({ topic })).length === 1, 'its own letter');
      const foreign = ['null', 'not json', '{"topic":5,"envelope":null}', '[]'];
      for (const body of foreign) await injectLetter(b, Buffer.from(body));
      const unreadable = async () =>
        (await b.deadLetters.list({}, 1000)).filter((l) => l.code === 'DATA_LOSS' && l.topic === '');
      await until(
        harness,
        async () => (await unreadable()).length === foreign.length,
        'the foreign records listed',
      );
      const listed = await unreadable();
      assert.deepEqual(
        listed.map((l) => Buffer.from(String(l.envelope.data), 'base64').toString()).sort(),
        [...foreign].sort(),
        'each keeps its bytes',
      );
      for (const l of listed) {
        assert.equal(l.envelope.source, '/parley/undecodable');
        assert.deepEqual(await b.deadLetters.get(l.id), l, 'found by id');
      }
      // A replay of everything replays the store's own letter only (it used to throw on the others).
      const got: string[] = [];
      await failing.close();
      await consume(b, { topic, group: 'g' }, (d) => void got.push(d.envelope.id));
      assert.equal(await b.deadLetters.replay(), 1);
      await until(harness, () => got.includes(own.id), 'the replayed letter');
      assert.equal((await unreadable()).length, foreign.length, 'kept until purged');
      assert.equal(await b.deadLetters.purge({ ids: listed.map((l) => l.id) }), foreign.length);
      assert.deepEqual(await unreadable(), []);
    });

    test('a publish of what is no envelope, or with options of the wrong type, is refused alone, and nothing of it stored', async () => {
      const b = await broker();
      const topic = fresh('refused');
      const got: unknown[] = [];
      await consume(b, { topic, group: 'g', maxAttempts: 1 }, (d) => void got.push(d.envelope.data));
      const good = envelope(topic, 'good');
      const bad: [unknown, unknown][] = [
        [null, undefined],
        [5, undefined],
        [{ type: topic, data: 1 }, undefined],
        [{ ...envelope(topic, 1), id: 5 }, undefined],
        [{ ...envelope(topic, 1), specversion: '0.3' }, undefined],
        [{ ...envelope(topic, 1), deadline: 'soon' }, undefined],
        [{ ...envelope(topic, 1), type: { topic } }, undefined],
        [envelope(topic, 1), { delay: 'x' }],
        [envelope(topic, 1), { delay: -1 }],
        [envelope(topic, 1), { delay: Number.NaN }],
        [envelope(topic, 1), { delay: 1e300 }],
        [envelope(topic, 1), { key: { k: 1 } }],
        [envelope(topic, 1), 'fast'],
        // Data with no JSON form: until 2026-12-03 the embedded broker threw at the caller and
        // Kafka rejected with the TypeError.
        [envelope(topic, 10n), undefined],
        [envelope(topic, cyclic()), undefined],
      ];
      // In one turn with a good one: a broker that stores a turn's publishes together must not
      // fail the good one with them.
      const results = await Promise.allSettled([
        ...bad.map(([e, o]) => b.publish(e as Envelope, o as never)),
        b.publish(good),
      ]);
      for (const [i, r] of results.slice(0, bad.length).entries()) {
        assert.equal(r.status, 'rejected', `publish ${i} refused`);
        const e = (r as PromiseRejectedResult).reason as ParleyError;
        assert.equal(e.code, 'INVALID_ARGUMENT', `publish ${i}: ${e.message}`);
        assert.equal(e.retryable, false);
      }
      assert.equal(results.at(-1)?.status, 'fulfilled', 'the good publish is stored');
      await until(harness, () => got.length >= 1, 'the good one delivered');
      await harness.advance(300);
      assert.deepEqual(got, ['good'], 'nothing of the refused publishes was delivered');
      assert.deepEqual(await b.deadLetters.list({ topic }), [], 'nor dead-lettered');
    });

    test('an error with details.deferMs puts the message back after that delay without spending an attempt', async () => {
      const b = await broker();
      const topic = fresh('defer');
      const attempts: number[] = [];
      await consume(b, { topic, group: 'g', maxAttempts: 2 }, (d) => {
        attempts.push(d.attempt);
        if (attempts.length <= 4) {
          throw new ParleyError('UNAVAILABLE', 'dependency paused', { details: { deferMs: 300 } });
        }
      });
      await b.publish(envelope(topic, 'x'));
      await until(harness, () => attempts.length >= 1, 'first delivery');
      await harness.advance(200);
      assert.equal(attempts.length, 1, 'not before the delay');
      await until(harness, () => attempts.length >= 5, 'delivered again after each deferral');
      assert.deepEqual(attempts, [1, 1, 1, 1, 1], 'no attempt spent: maxAttempts 2 was never reached');
      assert.deepEqual(await b.deadLetters.list({ topic }), []);
    });

    test('extendLease refuses what is no lease (NaN, Infinity, 0, past the maximum) with INVALID_ARGUMENT', async () => {
      const b = await broker();
      const topic = fresh('badlease');
      const refused: string[] = [];
      await consume(b, { topic, group: 'g' }, async (d) => {
        for (const ms of [
          Number.NaN,
          Number.POSITIVE_INFINITY,
          0,
          -5,
          2 ** 31,
          undefined as unknown as number,
        ]) {
          try {
            await d.extendLease(ms);
            refused.push(`taken:${ms}`);
          } catch (error) {
            refused.push(error instanceof ParleyError ? error.code : String(error));
          }
        }
      });
      await b.publish(envelope(topic, 'x'));
      await until(harness, () => refused.length >= 6, 'the extends');
      assert.deepEqual(refused, Array(6).fill('INVALID_ARGUMENT'));
    });

    test('a consumer closed twice while its handler runs: both closes end when the handler does', async () => {
      const b = await broker();
      const topic = fresh('close2');
      let release: () => void = () => undefined;
      let started = false;
      const c = await b.subscribe({ topic, group: 'g' }, async () => {
        started = true;
        await new Promise<void>((r) => (release = r));
      });
      await b.publish(envelope(topic, 'x'));
      await until(harness, () => started, 'the delivery');
      let ended = 0;
      const first = c.close().then(() => void ended++);
      const second = c.close().then(() => void ended++);
      release();
      await until(harness, () => ended === 2, 'both closes');
      await Promise.all([first, second]);
    });

    test('a non-retryable error goes to dead-letter at once; a plain throw is retried', async () => {
      const b = await broker();
      const topic = fresh('permanent');
      const calls: Record<string, number> = { permanent: 0, plain: 0 };
      await consume(b, { topic, group: 'g', maxAttempts: 4 }, (d) => {
        const kind = d.envelope.data as string;
        calls[kind] = (calls[kind] ?? 0) + 1;
        if (kind === 'permanent') throw new ParleyError('FAILED_PRECONDITION', 'never', { retryable: false });
        throw new Error('flaky');
      });
      await b.publish(envelope(topic, 'permanent'));
      await b.publish(envelope(topic, 'plain'));
      await until(harness, () => (calls.plain ?? 0) >= 4, 'four plain attempts');
      await harness.advance(500);
      assert.deepEqual(calls, { permanent: 1, plain: 4 });
      const dead = (await b.deadLetters.list({ topic }))
        .map((d) => `${d.envelope.data}:${d.code}:${d.attempts}`)
        .sort();
      assert.deepEqual(dead, ['permanent:FAILED_PRECONDITION:1', 'plain:INTERNAL:4']);
    });

    test('a dead letter keeps the first 1,000 characters of a long failure message, marked', async () => {
      const b = await broker();
      const topic = fresh('longreason');
      await consume(b, { topic, group: 'g', maxAttempts: 1 }, () => {
        throw new ParleyError('FAILED_PRECONDITION', `${'é'.repeat(999)}${'x'.repeat(99_001)}`, {
          retryable: false,
        });
      });
      await b.publish(envelope(topic, 'long'));
      let letters: Awaited<ReturnType<typeof b.deadLetters.list>> = [];
      await until(
        harness,
        async () => {
          letters = await b.deadLetters.list({ topic });
          return letters.length > 0;
        },
        'the dead letter',
      );
      assert.equal(letters[0]?.message, `${'é'.repeat(999)}x… (100000 characters)`);
    });

    test('a poison message does not block other keys', async () => {
      const b = await broker();
      const topic = fresh('poison');
      const ok: number[] = [];
      await consume(b, { topic, group: 'g', maxAttempts: 3 }, (d) => {
        const { k, n } = d.envelope.data as { k: string; n: number };
        if (k === 'P') throw new ParleyError('INTERNAL', 'poison');
        ok.push(n);
      });
      await b.publish(envelope(topic, { k: 'P', n: -1 }), { key: 'P' });
      for (let n = 0; n < 10; n++)
        await b.publish(envelope(topic, { k: `K${n % 3}`, n }), { key: `K${n % 3}` });
      await until(harness, () => ok.length >= 10, 'other keys');
      assert.deepEqual(
        [...ok].sort((x, y) => x - y),
        [...Array(10).keys()],
      );
    });

    test('delayed delivery waits for its time', async () => {
      const b = await broker();
      const topic = fresh('delay');
      const got: number[] = [];
      await consume(b, { topic, group: 'g' }, (d) => void got.push(d.envelope.data as number));
      await b.publish(envelope(topic, 1), { delay: 1000 });
      await b.publish(envelope(topic, 2));
      await until(harness, () => got.includes(2), 'the undelayed message');
      await harness.advance(700);
      assert.deepEqual(got, [2], 'not before its time');
      // Generous: real-time harnesses (NATS) wait for a server's redelivery on a loaded machine.
      await until(harness, () => got.includes(1), 'the delayed message', 5000);
      assert.deepEqual(got, [2, 1]);
    });

    test('dead letters can be listed, replayed and purged', async () => {
      const b = await broker();
      const topic = fresh('replay');
      let healthy = false;
      const handled: string[] = [];
      await consume(b, { topic, group: 'g', maxAttempts: 1 }, (d) => {
        if (!healthy) throw new ParleyError('UNAVAILABLE', 'dependency down');
        handled.push(d.envelope.data as string);
      });
      for (const x of ['a', 'b', 'c']) await b.publish(envelope(topic, x));
      const deadCount = async () => (await b.deadLetters.list({ topic })).length;
      await until(harness, async () => (await deadCount()) === 3, 'three dead letters');
      healthy = true;
      const [first] = await b.deadLetters.list({ topic }, 1);
      assert.ok(first);
      assert.equal((await b.deadLetters.get(first.id))?.envelope.id, first.envelope.id);
      assert.equal(await b.deadLetters.replay({ topic, ids: [first.id] }), 1);
      await until(harness, () => handled.length === 1, 'one replayed message handled');
      assert.equal(await b.deadLetters.replay({ topic, group: 'g' }), 2);
      await until(harness, () => handled.length === 3, 'all replayed');
      assert.deepEqual([...handled].sort(), ['a', 'b', 'c']);
      assert.equal((await b.deadLetters.list({ topic })).length, 0);
      // Purge: a new dead letter, then gone.
      healthy = false;
      await b.publish(envelope(topic, 'd'));
      await until(harness, async () => (await deadCount()) === 1, 'a dead letter');
      assert.equal(await b.deadLetters.purge({ topic }), 1);
      assert.equal((await b.deadLetters.list({ topic })).length, 0);
    });

    test('publisher idempotency: the same key within the window is stored once', async () => {
      const b = await broker();
      const topic = fresh('idem');
      const got: string[] = [];
      await consume(b, { topic, group: 'g' }, (d) => void got.push(d.envelope.id));
      const first = envelope(topic, 1, { idempotencykey: 'order-42' });
      const again = envelope(topic, 1, { idempotencykey: 'order-42' });
      const r1 = await b.publish(first);
      const r2 = await b.publish(again);
      assert.deepEqual(r1, { id: first.id, duplicate: false });
      assert.deepEqual(r2, { id: first.id, duplicate: true });
      await until(harness, () => got.length >= 1, 'one delivery');
      await harness.advance(300);
      assert.deepEqual(got, [first.id]);
    });

    test('without a key, the same id from two sources is two messages, both delivered (CloudEvents: source + id)', async () => {
      const b = await broker();
      const topic = fresh('ids');
      const got: string[] = [];
      await consume(
        b,
        { topic, group: 'g' },
        (d) => void got.push(`${d.envelope.source} ${d.envelope.data}`),
      );
      const erp = envelope(topic, 'a', { id: '1', source: '/erp' });
      const crm = envelope(topic, 'b', { id: '1', source: '/crm' });
      assert.deepEqual(await b.publish(erp), { id: '1', duplicate: false });
      assert.deepEqual(await b.publish(crm), { id: '1', duplicate: false });
      await until(harness, () => got.length >= 2, 'two deliveries');
      await harness.advance(300);
      assert.deepEqual(got.sort(), ['/crm b', '/erp a']);
    });

    test('an id and an idempotency key with line breaks in them are taken as they are, and dedupe', async () => {
      const b = await broker();
      const topic = fresh('crlf');
      const got: string[] = [];
      await consume(b, { topic, group: 'g' }, (d) => void got.push(d.envelope.id));
      const first = envelope(topic, 1, { id: 'a\r\nb', idempotencykey: 'k\r\n1' });
      const again = envelope(topic, 1, { idempotencykey: 'k\r\n1' });
      const other = envelope(topic, 2, { id: 'c\nd' });
      assert.deepEqual(await b.publish(first), { id: 'a\r\nb', duplicate: false });
      assert.deepEqual(await b.publish(again), { id: 'a\r\nb', duplicate: true });
      assert.deepEqual(await b.publish(other), { id: 'c\nd', duplicate: false });
      await until(harness, () => got.length >= 2, 'two deliveries');
      await harness.advance(300);
      assert.deepEqual(got.sort(), ['a\r\nb', 'c\nd']);
    });

    /**
     * Two consumers of one group: the first takes two messages and never finishes (it has died, as
     * far as the broker knows); one lease runs out and goes to the second, the other is kept by
     * `extendLease` every 400 ms. `kept`: also check that the kept one never reaches the second.
     */
    async function leaseCase(kept: boolean) {
      const lease = harness.leaseMs ?? 1000;
      const b = await broker();
      const topic = fresh('lease');
      const seen: string[] = [];
      // The first consumer takes both and never finishes: it has died, as far as the broker knows
      // (full, it takes nothing more). Its handlers are released at the end, to clean up.
      let extend: Delivery | undefined;
      const zombies: (() => void)[] = [];
      // Once released, it answers at once: a delivery that reaches it after the release (a slow
      // machine, a lease that ran out) must not hold the consumer's close open for ever.
      let released = false;
      await consume(b, { topic, group: 'g', lease, maxInFlight: 2 }, (d) => {
        seen.push(`dead:${d.envelope.data}`);
        if (d.envelope.data === 'kept') extend = d;
        if (released) return Promise.resolve();
        return new Promise<void>((r) => zombies.push(r));
      });
      // The zombies are released however the test ends: a failed assertion must fail the test,
      // not leave the consumer's close waiting for its handlers (the file would time out).
      try {
        await b.publish(envelope(topic, 'lost'));
        await b.publish(envelope(topic, 'kept'));
        await until(harness, () => seen.length === 2, 'both taken');
        assert.ok(extend, `the first consumer holds both: ${seen}`);
        // Keeping `kept` is what the `kept` case checks. In the other, a broker may say the lease
        // was lost (FAILED_PRECONDITION: Kafka hands a revoked partition's messages on in a
        // rebalance); that is the Delivery contract's own answer, and extending stops there.
        const keep = async () => {
          try {
            await extend?.extendLease(lease);
          } catch (error) {
            if (kept || !(error instanceof ParleyError && error.code === 'FAILED_PRECONDITION')) throw error;
            extend = undefined;
          }
        };
        // Extended at once, and again once the live consumer is there: setting that up can take
        // a good part of the lease on a real broker.
        await keep();
        await consume(b, { topic, group: 'g', lease }, (d) => void seen.push(`alive:${d.envelope.data}`));
        await keep();
        // Then every 400 ms, until the lost one comes back (a busy machine may take longer than
        // the lease to redeliver; 10 s of broker time past the lease at most), and for three
        // turns after that. The bound is on the wait only: a redelivery late in it still gets its
        // three turns (in CI on 2026-12-01 one came in time and the turns after it ran past the
        // bound, which failed the case as "not redelivered" with `alive:lost` in `seen`).
        for (let spent = 0, after = 0; after < 3; spent += 400) {
          if (after === 0 && spent > 10_000 + lease) assert.fail(`not redelivered after the lease: ${seen}`);
          await harness.advance(400);
          await keep();
          if (seen.includes('alive:lost')) after++;
        }
        if (kept) assert.ok(!seen.includes('alive:kept'), `an extended lease is kept: ${seen}`);
      } finally {
        released = true;
        for (const z of zombies) z();
      }
      await harness.advance(50);
    }

    test('a delivery whose consumer stops answering is redelivered when its lease ends', () =>
      leaseCase(false));

    test('extendLease keeps a delivery from going to another consumer while its own works on it', () =>
      leaseCase(true));

    test('a new group starts from now, or from the beginning when asked', async () => {
      const b = await broker();
      const topic = fresh('start');
      await b.publish(envelope(topic, 'old'));
      const fromNow: string[] = [];
      const fromStart: string[] = [];
      await consume(
        b,
        { topic, group: 'late', startFrom: 'now' },
        (d) => void fromNow.push(d.envelope.data as string),
      );
      await consume(
        b,
        { topic, group: 'replayer', startFrom: 'beginning' },
        (d) => void fromStart.push(d.envelope.data as string),
      );
      await b.publish(envelope(topic, 'new'));
      await until(harness, () => fromNow.length >= 1 && fromStart.length >= 2, 'both groups');
      assert.deepEqual(fromNow, ['new']);
      // Both, in either order: only messages with the same key are ordered (a partitioned broker
      // may put two unkeyed messages in different partitions).
      assert.deepEqual([...fromStart].sort(), ['new', 'old']);
    });

    test('a consumer closed right after it subscribed closes at once, and its group goes on', async () => {
      const b = await broker();
      const topic = fresh('close-early');
      for (let i = 0; i < 3; i++) {
        const c = await b.subscribe({ topic, group: 'g' }, async () => {});
        // Real time, whatever the harness's clock: a close that waits for a pending pull or poll
        // to end on its own would hang here (NATS: its pull's expiry, 30 s).
        let timer: NodeJS.Timeout | undefined;
        const hung = new Promise<'hung'>((resolve) => {
          timer = setTimeout(() => resolve('hung'), 5_000);
        });
        const outcome = await Promise.race([c.close().then(() => 'closed' as const), hung]);
        clearTimeout(timer);
        assert.equal(outcome, 'closed', `close ${i} took more than 5 s`);
      }
      const got: string[] = [];
      await consume(b, { topic, group: 'g' }, (d) => void got.push(d.envelope.data as string));
      await b.publish(envelope(topic, 'after'));
      await until(harness, () => got.length >= 1, 'the delivery to the next consumer of the group');
      assert.deepEqual(got, ['after']);
    });

    test('backpressure: a consumer never holds more than maxInFlight deliveries', async () => {
      const b = await broker();
      const topic = fresh('backpressure');
      let inFlight = 0;
      let peak = 0;
      let done = 0;
      const release: (() => void)[] = [];
      await consume(b, { topic, group: 'g', maxInFlight: 5 }, async () => {
        inFlight++;
        peak = Math.max(peak, inFlight);
        await new Promise<void>((r) => release.push(r));
        inFlight--;
        done++;
      });
      for (let i = 0; i < 40; i++) await b.publish(envelope(topic, i));
      await until(harness, () => inFlight === 5, 'five in flight');
      await harness.advance(200);
      assert.equal(inFlight, 5, 'no sixth while five are held');
      while (done < 40) {
        for (const r of release.splice(0)) r();
        await harness.advance(10);
      }
      assert.equal(peak, 5);
    });

    test('through a node: a malformed payload goes to dead-letter with INVALID_ARGUMENT', async () => {
      const b = await broker();
      const topic = fresh('schema');
      const contract = defineContract({
        name: 'shop',
        version: '1.0.0',
        actions: {},
        events: { [topic]: { schema: z.object({ sku: z.string() }), version: 1 } },
      });
      const got: string[] = [];
      const node = testNode({
        broker: b,
        clock: harness.clock,
        services: [
          calcService({}, [subscribe(contract, topic, (p) => void got.push(p.sku), { group: 'g' })]),
        ],
      });
      await node.start();
      open.push({ close: async () => void (await node.stop().catch(() => undefined)) });
      await b.publish(envelope(topic, { sku: 42 }));
      await node.publish(contract, topic, { sku: 'ok' });
      let dead: Awaited<ReturnType<Broker['deadLetters']['list']>> = [];
      await until(
        harness,
        async () => {
          dead = await b.deadLetters.list({ topic });
          return dead.length === 1 && got.length === 1;
        },
        'one dead letter and one handled',
      );
      assert.equal(dead[0]?.code, 'INVALID_ARGUMENT');
      assert.equal(dead[0]?.attempts, 1);
      assert.match(dead[0]?.message ?? '', /sku/);
      assert.deepEqual(got, ['ok']);
    });

    // History: where the broker keeps a log (`broker.history`); the harness says where it has none.
    const historyOf = (b: Broker): BrokerHistory => {
      assert.ok(b.history !== undefined, `${harness.name} keeps history`);
      return b.history;
    };

    test('history: a topic read in order after a position, in pages, changes nothing for the groups', async () => {
      const b = await broker();
      const h = historyOf(b);
      const topic = fresh('history');
      const other = fresh('history-other');
      const start = await h.latest(topic);
      for (let i = 0; i < 5; i++) {
        await b.publish(envelope(topic, i));
        await b.publish(envelope(other, -i));
      }
      const first = await h.read(topic, start, { limit: 3 });
      assert.deepEqual(
        first.entries.map((e) => e.envelope.data),
        [0, 1, 2],
      );
      assert.equal(first.gap, false);
      assert.equal(first.next, first.entries[2]?.position);
      const second = await h.read(topic, first.next, { limit: 3 });
      assert.deepEqual(
        second.entries.map((e) => e.envelope.data),
        [3, 4],
      );
      const positions = [...first.entries, ...second.entries].map((e) => e.position);
      for (let i = 1; i < positions.length; i++) {
        assert.ok(comparePositions(positions[i - 1] ?? '', positions[i] ?? '') < 0, `${positions} grow`);
      }
      assert.equal(await h.latest(topic), positions.at(-1));
      const none = await h.read(topic, second.next);
      assert.deepEqual(none.entries, []);
      assert.equal(none.next, second.next);
      // A group made afterwards from the beginning still gets every message: reading took nothing.
      const got: number[] = [];
      await consume(b, { topic, group: 'after-reading', startFrom: 'beginning' }, (d) => {
        got.push(d.envelope.data as number);
      });
      await until(harness, () => got.length >= 5, 'five deliveries');
      assert.deepEqual(
        got.sort((x, y) => x - y),
        [0, 1, 2, 3, 4],
      );
    });

    test('history: a read with a wait returns when a message comes, or empty when the wait ends', async () => {
      const b = await broker();
      const h = historyOf(b);
      const topic = fresh('history-wait');
      const start = await h.latest(topic);
      const pages: HistoryPage[] = [];
      void h.read(topic, start, { waitMs: 20_000 }).then((p) => pages.push(p));
      await harness.advance(50);
      assert.equal(pages.length, 0, 'still waiting: nothing was published');
      await b.publish(envelope(topic, 'hello'));
      await until(harness, () => pages.length === 1, 'the waiting read to return', 5_000);
      const next = pages[0]?.next ?? '';
      assert.deepEqual(
        pages[0]?.entries.map((e) => e.envelope.data),
        ['hello'],
      );
      void h.read(topic, next, { waitMs: 300 }).then((p) => pages.push(p));
      await until(harness, () => pages.length === 2, 'the wait to end', 5_000);
      assert.deepEqual(pages[1]?.entries, []);
      assert.equal(pages[1]?.next, next);
    });

    test('history: a read bounded by `until` returns nothing after it', async () => {
      const b = await broker();
      const h = historyOf(b);
      const topic = fresh('history-until');
      const start = await h.latest(topic);
      for (let i = 0; i < 4; i++) await b.publish(envelope(topic, i));
      const all = await h.read(topic, start, { limit: 10 });
      assert.deepEqual(
        all.entries.map((e) => e.envelope.data),
        [0, 1, 2, 3],
      );
      const cut = all.entries[1]?.position ?? '';
      const bounded = await h.read(topic, start, { until: cut });
      assert.deepEqual(
        bounded.entries.map((e) => e.envelope.data),
        [0, 1],
      );
      assert.equal(bounded.next, cut);
      const atBound = await h.read(topic, cut, { until: cut });
      assert.deepEqual(atBound.entries, []);
      assert.equal(atBound.next, cut);
      const rest = await h.read(topic, cut, { until: await h.latest(topic) });
      assert.deepEqual(
        rest.entries.map((e) => e.envelope.data),
        [2, 3],
      );
    });

    test('history: a position the broker does not know is refused with INVALID_ARGUMENT', async () => {
      const b = await broker();
      const h = historyOf(b);
      const topic = fresh('history-bad');
      await b.publish(envelope(topic, 1));
      for (const bad of ['', 'abc', '1:2', '-1', '1'.repeat(40), '../0']) {
        await assert.rejects(h.read(topic, bad), (e: unknown) => {
          assert.ok(e instanceof ParleyError, String(e));
          assert.equal(e.code, 'INVALID_ARGUMENT', bad);
          return true;
        });
      }
    });
  });
}

/**
 * Bodies another writer might put on `topic`, generated from `g`: `count` of them, about half
 * envelopes (odd data, optional attributes) that must arrive as they are (`envelope` is their
 * JSON, parsed back), the rest no envelope at all: bytes, text that is not UTF-8 or not JSON,
 * JSON that is not an object, attributes missing or of the wrong type, prototype keys.
 */
function foreignBodies(
  g: Seeded,
  topic: string,
  count: number,
): { body: Buffer; id: string; envelope: Envelope | undefined }[] {
  const out: { body: Buffer; id: string; envelope: Envelope | undefined }[] = [];
  for (let i = 0; i < count; i++) {
    const env: Record<string, unknown> = {
      ...createEnvelope({
        source: '/foreign',
        type: topic,
        data: mutate(g, { n: i, note: 'x', tags: ['a'] }),
      }),
    };
    if (g.chance(0.3)) env.subject = `k${g.int(5)}`;
    if (g.chance(0.3)) env.idempotencykey = `idem-${i}`;
    if (g.chance(0.2)) env.deadline = Date.now() + 60_000;
    const text = JSON.stringify(env);
    if (g.chance(0.5)) {
      out.push({ body: Buffer.from(text), id: env.id as string, envelope: JSON.parse(text) as Envelope });
      continue;
    }
    let body: Buffer;
    switch (g.int(9)) {
      case 0:
        body = Buffer.from(Array.from({ length: 1 + g.int(64) }, () => g.int(256)));
        break;
      case 1: {
        body = Buffer.from(text);
        body[body.indexOf('/foreign') + 1] = 0xff; // not UTF-8
        break;
      }
      case 2:
        body = Buffer.from(`not json ${i}`);
        break;
      case 3:
        body = Buffer.from(text.slice(0, 1 + g.int(text.length - 2)));
        break;
      case 4:
        body = Buffer.from(g.pick([`[${i}]`, `"s${i}"`, `${i}`]));
        break;
      case 5: {
        const broken = { ...env };
        delete broken[g.pick(['id', 'source', 'type', 'specversion'])];
        body = Buffer.from(JSON.stringify(broken));
        break;
      }
      case 6:
        body = Buffer.from(JSON.stringify({ ...env, specversion: g.pick(['0.3', 1, '']) }));
        break;
      case 7: {
        // Each of these must be a string when present (a deadline a number): 5 is a valid deadline.
        const name = g.pick(['time', 'subject', 'traceparent', 'deadline']);
        body = Buffer.from(
          JSON.stringify({ ...env, [name]: g.pick(name === 'deadline' ? [{}, 'soon'] : [5, {}]) }),
        );
        break;
      }
      default:
        body = Buffer.from(
          text.replace(
            '"data":',
            g.pick(['"__proto__":{"p":1},"data":', '"data":{"__proto__":{"p":1}},"x":']),
          ),
        );
    }
    out.push({ body, id: env.id as string, envelope: undefined });
  }
  return out;
}
