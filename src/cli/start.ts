/**
 * @module cli/start
 * Runs service modules in this process on one node, wired from URLs: `PARLEY_TRANSPORT` (default
 * `memory:`), `PARLEY_BROKER` (default: the broker the hub offers, if any). What `parley start`
 * and each process of `parley dev` do.
 */
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import pino, { type Logger } from 'pino';
import type { Broker } from '../broker/broker.ts';
import { BrokerRegistry } from '../broker/from-url.ts';
import type { Outbox } from '../broker/outbox.ts';
import { ParleyError } from '../errors.ts';
import { queryHub } from '../hub/client.ts';
import { createRemoteBroker } from '../hub/remote-broker.ts';
import { type MetricsMiddleware, metrics } from '../observe/metrics.ts';
import { type MetricsServer, type MetricsServerOptions, serveMetrics } from '../observe/metrics-server.ts';
import { type TracingOptions, tracing } from '../observe/tracing.ts';
import { createNode, type ParleyNode } from '../runtime/node.ts';
import { TransportRegistry } from '../transport/from-url.ts';
import { type ParleyTlsOptions, tlsFromEnv } from '../transport/tcp/sockets.ts';
import { isServiceModule, type ServiceModule, type ServiceModuleParts } from './service-module.ts';

export interface StartOptions {
  /** Service modules, or files whose default export is one. */
  modules: readonly (ServiceModule | string)[];
  transport?: string;
  broker?: string;
  token?: string;
  dataDir?: string;
  logger?: Logger;
  /** Node id; default `<first module>-<pid>`. */
  id?: string;
  labels?: Record<string, string>;
  /**
   * Prometheus metrics for the node (calls, events, and a gateway's HTTP requests), served at
   * `GET /metrics` on this port (0: a free one). Default from `PARLEY_METRICS_PORT`,
   * `PARLEY_METRICS_HOST` (127.0.0.1) and `PARLEY_METRICS_TOKEN` (a bearer token scrapes must
   * carry); off when no port is set.
   */
  metrics?: MetricsServerOptions | false;
  /**
   * OpenTelemetry spans for the node's calls and event handlers (`tracing()`), for an SDK the
   * process registers (e.g. `node --import ./otel.mjs`). Default: on when `PARLEY_TRACING` is
   * `1` or `true`.
   */
  tracing?: TracingOptions | boolean;
}

export interface RunningServices {
  readonly node: ParleyNode;
  /** The scrape URL, when metrics are on. */
  readonly metricsUrl: string | undefined;
  /** Graceful: stops the node (drains), then closes what the modules opened. */
  stop(): Promise<void>;
}

/** Brokers by URL for the command: `embedded:PATH`, and `parley://host:port` (the hub's broker). */
export function brokerRegistry(access: { token?: string; tls?: ParleyTlsOptions } = {}): BrokerRegistry {
  const registry = new BrokerRegistry();
  registry.register('parley:', (url) =>
    createRemoteBroker(String(url), { ...access, log: (m) => process.stderr.write(`parley broker: ${m}\n`) }),
  );
  return registry;
}

let tsxRegistered = false;

/** Imports a module file; TypeScript files load through tsx when Node cannot load them itself. */
export async function importFile(file: string): Promise<unknown> {
  const url = pathToFileURL(resolve(file)).href;
  try {
    return await import(url);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (tsxRegistered || !/\.[mc]?tsx?$/.test(file) || code !== 'ERR_UNKNOWN_FILE_EXTENSION') throw error;
    const { register } = await import('tsx/esm/api');
    register();
    tsxRegistered = true;
    return import(url);
  }
}

export async function loadServiceModule(file: string): Promise<ServiceModule> {
  const loaded = (await importFile(file)) as { default?: unknown };
  if (!isServiceModule(loaded.default)) {
    throw new ParleyError(
      'INVALID_ARGUMENT',
      `${file} does not export a service module by default (export default defineServiceModule(...))`,
    );
  }
  return loaded.default;
}

export async function startServices(options: StartOptions): Promise<RunningServices> {
  const env = process.env;
  const logger = options.logger ?? pino({ level: env.PARLEY_LOG_LEVEL ?? 'info' });
  const modules: ServiceModule[] = [];
  for (const m of options.modules) modules.push(typeof m === 'string' ? await loadServiceModule(m) : m);
  if (modules.length === 0) throw new ParleyError('INVALID_ARGUMENT', 'no service modules to start');
  // Set blank (an empty line of an env file) is unset: until 2026-12-03 `PARLEY_BROKER=` was the
  // broker URL '', which no registry opens, instead of the hub's broker.
  const transportUrl = options.transport ?? given(env.PARLEY_TRANSPORT) ?? 'memory:';
  const token = options.token ?? given(env.PARLEY_TOKEN);
  let brokerUrl = options.broker ?? given(env.PARLEY_BROKER);
  const tls = tlsFromEnv(env);
  const access = { ...(token === undefined ? {} : { token }), ...(tls === undefined ? {} : { tls }) };
  if (brokerUrl === undefined && transportUrl.startsWith('parley:')) {
    brokerUrl = (await queryHub(transportUrl, access)).broker;
  }
  const dataDir = resolve(options.dataDir ?? given(env.PARLEY_DATA_DIR) ?? '.parley');
  mkdirSync(dataDir, { recursive: true });

  const id = options.id ?? `${modules[0]?.name}-${process.pid}`;
  const metricsAt = options.metrics ?? metricsFromEnv(env);
  const observed: MetricsMiddleware | undefined =
    metricsAt === false ? undefined : metrics({ labels: { node: id } });
  const traced = options.tracing ?? tracingFromEnv(env);
  const middleware = [
    ...(observed === undefined ? [] : [observed]),
    ...(traced === false ? [] : [tracing(traced === true ? {} : traced)]),
  ];
  const parts: ServiceModuleParts[] = [];
  let broker: Broker | undefined;
  const closeAll = async () => {
    for (const p of parts.reverse()) await p.close?.();
  };
  try {
    for (const m of modules) {
      parts.push(
        await m.setup({ dataDir, env, logger: logger.child({ service: m.name }), metrics: observed }),
      );
    }
    if (brokerUrl !== undefined) broker = await brokerRegistry(access).open(brokerUrl);
  } catch (error) {
    await closeAll();
    throw error;
  }
  const log = (message: string) => logger.warn(message);
  const outboxes = parts.flatMap((p) => (p.outbox === undefined ? [] : [p.outbox])) as Outbox[];
  let node: ParleyNode;
  try {
    node = createNode({
      id,
      transport: new TransportRegistry().open(transportUrl, { ...access, log }),
      middleware,
      ...(broker === undefined ? {} : { broker }),
      outbox: outboxes,
      services: parts.flatMap((p) => p.services),
      logger,
      labels: { pid: String(process.pid), ...options.labels },
    });
  } catch (error) {
    // A transport URL no registry opens (or a node that cannot be made): until 2026-12-03 the
    // broker and what the modules opened stayed open, and the process did not end.
    await broker?.close().catch(() => undefined);
    await closeAll();
    throw error;
  }
  let scrape: MetricsServer | undefined;
  try {
    await node.start();
    for (const p of parts) await p.started?.(node);
    if (observed !== undefined && metricsAt !== false) {
      scrape = await serveMetrics(observed.registry, metricsAt);
      logger.info({ url: scrape.url }, `metrics at ${scrape.url}`);
    }
  } catch (error) {
    for (const p of parts) await Promise.resolve(p.stopping?.()).catch(() => undefined);
    await node.stop().catch(() => undefined);
    await closeAll();
    throw error;
  }
  let stopping: Promise<void> | undefined;
  return {
    node,
    metricsUrl: scrape?.url,
    stop() {
      stopping ??= (async () => {
        // Edges first (a gateway drains its requests while the node can still serve them).
        for (const p of [...parts].reverse()) await p.stopping?.();
        await node.stop();
        await scrape?.close();
        await closeAll();
      })();
      return stopping;
    },
  };
}

/** An environment variable's value, undefined when it is unset or blank. */
export const given = (value: string | undefined): string | undefined =>
  value === undefined || value.trim() === '' ? undefined : value;

/** `PARLEY_TRACING`: `1` or `true` turns tracing on; unset, empty, `0` or `false` leaves it off. */
export function tracingFromEnv(env: Readonly<Record<string, string | undefined>>): boolean {
  const value = (env.PARLEY_TRACING ?? '').trim().toLowerCase();
  if (value === '' || value === '0' || value === 'false') return false;
  if (value === '1' || value === 'true') return true;
  throw new ParleyError(
    'INVALID_ARGUMENT',
    `PARLEY_TRACING must be 1, true, 0 or false, got ${env.PARLEY_TRACING}`,
  );
}

/** Metrics settings from `PARLEY_METRICS_PORT` / `_HOST` / `_TOKEN`; false when no port is set. */
export function metricsFromEnv(
  env: Readonly<Record<string, string | undefined>>,
): MetricsServerOptions | false {
  const port = env.PARLEY_METRICS_PORT;
  if (port === undefined || port === '') return false;
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) {
    throw new ParleyError(
      'INVALID_ARGUMENT',
      `PARLEY_METRICS_PORT must be a port number (0 for a free one), got ${port}`,
    );
  }
  // A blank token is one no scrape can present (an HTTP header's value is trimmed): until
  // 2026-12-03 `PARLEY_METRICS_TOKEN=` served an endpoint that answered every scrape 401.
  if (env.PARLEY_METRICS_TOKEN !== undefined && env.PARLEY_METRICS_TOKEN.trim() === '') {
    throw new ParleyError(
      'INVALID_ARGUMENT',
      'PARLEY_METRICS_TOKEN is blank: no scrape could present it (unset it, or give a token)',
    );
  }
  return {
    port: Number(port),
    // Blank is unset, as for the port: until 2026-12-03 `PARLEY_METRICS_HOST=` (an empty line in an
    // env file) bound the endpoint to every interface.
    ...(env.PARLEY_METRICS_HOST?.trim() ? { host: env.PARLEY_METRICS_HOST.trim() } : {}),
    ...(env.PARLEY_METRICS_TOKEN === undefined ? {} : { token: env.PARLEY_METRICS_TOKEN }),
  };
}
