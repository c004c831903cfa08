/**
 * @module observe/metrics-server
 * A scrape endpoint for a process that has no gateway: `GET /metrics` answers the registry in
 * Prometheus' text format; anything else is 404, a method other than GET or HEAD 405. Loopback by
 * default; with `token`, a scrape must present `Authorization: Bearer <token>` (compared as a
 * SHA-256 digest in constant time).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { ParleyError } from '../errors.ts';
import { bearerCheck } from '../gateway/auth/secrets.ts';

export interface MetricsServerOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (a free port). */
  port?: number;
  /** Default `/metrics`. */
  path?: string;
  /** When set, scrapes must carry it as a bearer token. */
  token?: string;
}

export interface MetricsServer {
  /** The scrape URL, with the actual port. */
  readonly url: string;
  close(): Promise<void>;
}

export async function serveMetrics(
  registry: Registry,
  options: MetricsServerOptions = {},
): Promise<MetricsServer> {
  // A blank host would make `listen` take every interface: it means the default, as unset does.
  const host = options.host?.trim() || '127.0.0.1';
  const path = options.path ?? '/metrics';
  if (options.token !== undefined && options.token.trim() === '') {
    // No scrape could present it (a header's value is trimmed): every one would be refused.
    throw new ParleyError('INVALID_ARGUMENT', 'the metrics token is blank: no scrape could present it');
  }
  const allowed = options.token === undefined ? () => true : bearerCheck([options.token]);
  const answer = (
    res: ServerResponse,
    status: number,
    text: string,
    headers: Record<string, string> = {},
  ) => {
    res.writeHead(status, {
      'content-type': 'text/plain; charset=utf-8',
      'cache-control': 'no-store',
      ...headers,
    });
    res.end(text);
  };
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    if ((req.url ?? '/').split('?')[0] !== path) return answer(res, 404, 'not found\n');
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return answer(res, 405, 'use GET\n', { allow: 'GET, HEAD' });
    if (!allowed(req.headers.authorization)) {
      return answer(res, 401, 'a bearer token is required\n', {
        'www-authenticate': 'Bearer realm="metrics"',
      });
    }
    const text = await registry.metrics();
    res.writeHead(200, { 'content-type': registry.contentType, 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : text);
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) answer(res, 500, `metrics failed: ${(error as Error).message}\n`);
      else res.destroy();
    });
  });
  // A scraper keeps its connection open between scrapes; close must not wait for it.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}${path}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error === undefined ? resolve() : reject(error)));
        server.closeAllConnections();
      }),
  };
}
