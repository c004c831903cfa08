/**
 * librdkafka's built-in mock cluster, for the Kafka rows and for `test/kafka-broker.test.ts`: no
 * Kafka broker runs on these machines.
 * It lives inside one client of `@confluentinc/kafka-javascript` in the bench's own process
 * (`test.mock.num.brokers`), listens on 127.0.0.1 only, and speaks the Kafka protocol for
 * produce, fetch, offsets, consumer groups and the idempotent producer; topics are created when
 * first asked for and die with it. Its speed says nothing about a real cluster: a row on it
 * measures the client side (Parley's broker against the same client used directly), nothing more.
 */
export interface KafkaMock {
  /** Bootstrap servers, `host:port[,…]`. */
  readonly brokers: string;
  stop(): Promise<void>;
}

interface MockHost {
  connect(options: object, cb: (err: unknown) => void): void;
  getMetadata(
    options: object,
    cb: (err: unknown, md: { brokers: { host: string; port: number }[] }) => void,
  ): void;
  disconnect(cb: () => void): void;
}

/** Connects a client of `@confluentinc/kafka-javascript` (node-rdkafka style callbacks). */
export function connected(client: {
  connect(options: object, cb: (err: unknown) => void): void;
}): Promise<void> {
  return new Promise((resolve, reject) => client.connect({}, (err) => (err ? reject(err) : resolve())));
}

/** Starts the cluster, or says why it cannot (the driver is an optional dependency of Parley). */
export async function startKafkaMock(): Promise<KafkaMock | string> {
  let driver: { Producer: new (config: object) => MockHost };
  try {
    driver = ((await import('@confluentinc/kafka-javascript')) as unknown as { default: typeof driver })
      .default;
  } catch (error) {
    return `@confluentinc/kafka-javascript does not load (${(error as Error).message}); install it with CKJS_LINKING=dynamic`;
  }
  const host = new driver.Producer({ 'test.mock.num.brokers': 1, 'client.id': 'parley-bench-mock-cluster' });
  await connected(host);
  const md = await new Promise<{ brokers: { host: string; port: number }[] }>((resolve, reject) =>
    host.getMetadata({ timeout: 10_000 }, (err, m) => (err ? reject(err) : resolve(m))),
  );
  if (md.brokers.length === 0 || md.brokers.some((b) => b.host !== '127.0.0.1')) {
    await new Promise<void>((resolve) => host.disconnect(() => resolve()));
    return `the mock cluster is not on 127.0.0.1 only: ${md.brokers.map((b) => b.host).join(', ')}`;
  }
  return {
    brokers: md.brokers.map((b) => `${b.host}:${b.port}`).join(','),
    stop: () => new Promise<void>((resolve) => host.disconnect(() => resolve())),
  };
}
