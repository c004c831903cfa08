/**
 * @module adapters/nats/connect
 * One connection to NATS from a `nats://host:port` URL (`nats://user:pass@host:port`, or
 * `?token=`), with reconnects that never give up: nats.js keeps buffering publishes while it
 * reconnects and resubscribes on its own. Loaded only when a `nats:` URL is used.
 */
import { loadDriver } from '../driver.ts';
import { natsError } from './errors.ts';

export type NatsModule = typeof import('@nats-io/transport-node');
export type NatsConnection = Awaited<ReturnType<NatsModule['connect']>>;

export async function connectNats(
  url: string,
  name: string,
  /** `noEcho`: the server does not send this connection's own publishes back to its subscriptions. */
  more: { noEcho?: boolean } = {},
): Promise<{ nats: NatsModule; nc: NatsConnection }> {
  const nats = await loadDriver<NatsModule>('@nats-io/transport-node', 'nats:');
  const u = new URL(url);
  const options: Parameters<NatsModule['connect']>[0] = {
    servers: `${u.hostname}:${u.port || '4222'}`,
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    waitOnFirstConnect: false,
    noEcho: more.noEcho ?? false,
  };
  if (u.username !== '') {
    options.user = decodeURIComponent(u.username);
    options.pass = decodeURIComponent(u.password);
  }
  const token = u.searchParams.get('token');
  if (token !== null) options.token = token;
  try {
    return { nats, nc: await nats.connect(options) };
  } catch (error) {
    throw natsError(error, `connecting to ${u.host}`);
  }
}
