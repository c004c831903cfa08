/**
 * @module adapters/redis/connect
 * Connections to Redis from a `redis://[user:pass@]host:port[/db]` URL (`rediss://` for TLS),
 * through ioredis, loaded only when a `redis:` URL is used.
 *
 * Reconnect behaviour, chosen for a message bus rather than a cache:
 * - `retryStrategy`: reconnect without end, 50 ms doubling to at most 2 s between tries (a Redis
 *   restart or failover is waited out, never turned into a dead client);
 * - `enableOfflineQueue: true`: commands issued while reconnecting are queued and sent once the
 *   connection is back (a transport's publishes survive a blip, like nats.js buffering);
 * - `maxRetriesPerRequest: 3`: a queued command fails with UNAVAILABLE after three failed
 *   reconnects (about 350 ms of outage) instead of hanging, so a broker publish reports the
 *   outage to its caller (who retries, or keeps the message in an outbox); consumers log and try
 *   again, and what they held is redelivered when its lease ends;
 * - the first connection must succeed: `connectRedis` rejects with UNAVAILABLE (and stops
 *   retrying) when the server cannot be reached at start.
 * Subscriptions are restored after a reconnect (`autoResubscribe`); messages published on a
 * channel while a subscriber was away are lost (Redis pub/sub keeps nothing).
 */
import type { Redis, RedisOptions } from 'ioredis';
import { loadDriver } from '../driver.ts';
import { redisError } from './errors.ts';

export type { Redis } from 'ioredis';

type IoRedisModule = typeof import('ioredis');

/** ioredis options for `url` (not yet connected: `lazyConnect`). */
export function redisOptions(url: string, name: string): RedisOptions {
  const u = new URL(url);
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw redisError(new Error(`not a redis:// URL: ${u.protocol}`), 'parsing the URL');
  }
  const db = u.pathname.replace(/^\//, '');
  const options: RedisOptions = {
    host: u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port: u.port === '' ? 6379 : Number(u.port),
    db: db === '' ? 0 : Number(db),
    connectionName: name,
    lazyConnect: true,
    enableOfflineQueue: true,
    maxRetriesPerRequest: 3,
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times - 1, 6), 2000),
    connectTimeout: 5000,
    autoResubscribe: true,
  };
  if (!Number.isInteger(options.db) || (options.db as number) < 0) {
    throw redisError(new Error(`not a database number: ${db}`), 'parsing the URL');
  }
  if (u.username !== '') options.username = decodeURIComponent(u.username);
  if (u.password !== '') options.password = decodeURIComponent(u.password);
  if (u.protocol === 'rediss:') options.tls = { servername: options.host as string };
  return options;
}

/** Connects a client for `url`; the same for every further connection made with `more()`. */
export async function connectRedis(
  url: string,
  name: string,
  log: (message: string) => void = () => {},
): Promise<{ redis: Redis; more: (name: string) => Promise<Redis> }> {
  const { Redis: RedisClass } = await loadDriver<IoRedisModule>('ioredis', 'redis:');
  const base = redisOptions(url, name);
  // The first connection carries many small commands at once (publishes, acks, scripts): those
  // issued in one tick go out in one write. Further ones block (reads) or subscribe: sent as issued.
  const open = async (connectionName: string, pipelined = false): Promise<Redis> => {
    const client = new RedisClass({ ...base, connectionName, enableAutoPipelining: pipelined });
    // ioredis reports connection trouble as 'error' events (unhandled, they are printed): logged
    // once per outage here; commands report their own failures.
    let last = '';
    let cause: unknown;
    client.on('error', (e: Error) => {
      cause ??= e;
      if (e.message !== last) log(`${connectionName}: ${e.message}`);
      last = e.message;
    });
    client.on('ready', () => (last = ''));
    try {
      await client.connect();
    } catch (error) {
      client.disconnect();
      // The socket's error (ECONNREFUSED…) says more than ioredis's "Connection is closed".
      throw redisError(cause ?? error, `connecting to ${base.host}:${base.port}`);
    }
    return client;
  };
  return { redis: await open(name, true), more: (more) => open(more) };
}

/** Redis's default `proto-max-bulk-len`. */
const DEFAULT_MAX_BULK = 512 * 1024 * 1024;

/**
 * The server's `proto-max-bulk-len`, the largest argument of a command it takes (a larger one is
 * a protocol error, and Redis drops the connection); Redis's default when CONFIG is refused
 * (ACLs, a managed Redis).
 */
export async function maxBulkOf(redis: Redis): Promise<number> {
  try {
    const reply = (await redis.call('CONFIG', 'GET', 'proto-max-bulk-len')) as unknown;
    const value = Array.isArray(reply) ? Number(reply[1]) : Number.NaN;
    return Number.isSafeInteger(value) && value > 0 ? value : DEFAULT_MAX_BULK;
  } catch {
    return DEFAULT_MAX_BULK;
  }
}
