/**
 * The machine's brokers, for adapter tests: a test that needs one asks `needBroker`, which skips
 * it with a clear message when the broker is unreachable, except under CI=true, where an
 * unreachable broker is a failure.
 */
import { connect } from 'node:net';

export const BROKERS = {
  nats: { port: 4222, url: 'nats://127.0.0.1:4222' },
  redis: { port: 6379, url: 'redis://127.0.0.1:6379' },
  rabbitmq: { port: 5672, url: 'amqp://guest:guest@127.0.0.1:5672' },
  mqtt: { port: 1883, url: 'mqtt://127.0.0.1:1883' },
} as const;

export type BrokerName = keyof typeof BROKERS;

function reachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * `false` when the tests may run; otherwise the reason to skip them. Throws under CI=true.
 * Use as `describe(name, { skip: await needBroker('nats') }, ...)`.
 */
export async function needBroker(name: BrokerName): Promise<false | string> {
  const { port } = BROKERS[name];
  if (await reachable(port)) return false;
  const why = `${name} is not reachable on 127.0.0.1:${port}`;
  if (process.env.CI === 'true') throw new Error(`CI: ${why} (adapter tests must run in CI)`);
  return `${why}: skipped (start it with the command in the machine notes)`;
}
