/**
 * @module cli/service-module
 * The unit `parley start` and `parley dev` run: a file whose default export is a service module.
 * `setup` opens what the service owns (its database, its outbox) and returns the services to
 * serve; `close` releases it after the node has stopped.
 *
 * ```ts
 * export default defineServiceModule({
 *   name: 'payments',
 *   setup({ dataDir }) {
 *     const db = new Database(join(dataDir, 'payments.db'));
 *     return { services: [implement(payments, { actions: { ... } })], outbox: createOutbox(db), close: () => db.close() };
 *   },
 * });
 * ```
 */
import type { Logger } from 'pino';
import type { Outbox } from '../broker/outbox.ts';
import type { MetricsMiddleware } from '../observe/metrics.ts';
import type { ParleyNode } from '../runtime/node.ts';
import type { Service } from '../runtime/service.ts';

export interface ServiceModuleContext {
  /** Directory for the service's own files: `PARLEY_DATA_DIR`, or `./.parley` by default. */
  dataDir: string;
  /** The process environment, for the service's own settings. */
  env: Readonly<Record<string, string | undefined>>;
  logger: Logger;
  /**
   * The node's metrics when they are on (`PARLEY_METRICS_PORT`): give it to a gateway
   * (`createGateway({ metrics })`) so its HTTP requests are counted on the same registry.
   */
  metrics?: MetricsMiddleware | undefined;
}

export interface ServiceModuleParts {
  services: readonly Service[];
  /** The outbox of the service's database, when it publishes inside its transactions. */
  outbox?: Outbox;
  /** Runs once the node is up (seed data, warm caches, open a gateway's port). */
  started?(node: ParleyNode): unknown;
  /** Runs when the process stops, before the node does (close a gateway: it drains while calls still work). */
  stopping?(): unknown;
  /** Runs after the node has stopped: close databases and files. */
  close?(): unknown;
}

export interface ServiceModule {
  readonly kind: 'parley.service-module';
  readonly name: string;
  setup(context: ServiceModuleContext): ServiceModuleParts | Promise<ServiceModuleParts>;
}

const NAME = /^[a-z][a-z0-9-]*$/;

export function defineServiceModule(module: {
  name: string;
  setup(context: ServiceModuleContext): ServiceModuleParts | Promise<ServiceModuleParts>;
}): ServiceModule {
  if (!NAME.test(module.name)) {
    throw new Error(`service module name must be lowercase letters, digits and dashes, got ${module.name}`);
  }
  return Object.freeze({ kind: 'parley.service-module', name: module.name, setup: module.setup });
}

export function isServiceModule(value: unknown): value is ServiceModule {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as { kind?: unknown }).kind === 'parley.service-module'
  );
}
