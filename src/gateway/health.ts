/**
 * @module gateway/health
 * `/healthz`: the process answers (liveness; never looks at dependencies, so a broken service
 * does not get the gateway restarted). `/readyz`: the gateway can serve now — it is not closing,
 * its node runs, and every contract's service has an instance in the registry; otherwise 503 with
 * what is missing, so a load balancer takes it out of rotation.
 */
import type { FastifyInstance } from 'fastify';
import type { AnyContract } from '../contract/contract.ts';
import type { ParleyNode } from '../runtime/node.ts';

export interface HealthInit {
  fastify: FastifyInstance;
  node: ParleyNode;
  contracts: readonly AnyContract[];
  closing: () => boolean;
}

export interface Readiness {
  ready: boolean;
  node: string;
  /** Services with no instance to call. */
  missing: string[];
  closing: boolean;
}

export function readiness({ node, contracts, closing }: Omit<HealthInit, 'fastify'>): Readiness {
  const missing = [...new Set(contracts.map((c) => c.name))].filter(
    (name) => node.registry.endpoints(name).length === 0,
  );
  const isClosing = closing();
  return {
    ready: node.state === 'running' && missing.length === 0 && !isClosing,
    node: node.state,
    missing,
    closing: isClosing,
  };
}

export function registerHealth(init: HealthInit): void {
  const { fastify } = init;
  fastify.get('/healthz', async (_request, reply) =>
    reply.header('cache-control', 'no-store').send({ status: 'ok' }),
  );
  fastify.get('/readyz', async (_request, reply) => {
    const r = readiness(init);
    return reply
      .code(r.ready ? 200 : 503)
      .header('cache-control', 'no-store')
      .send({ status: r.ready ? 'ready' : 'not ready', ...r });
  });
}
