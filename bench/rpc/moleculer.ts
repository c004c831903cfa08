/**
 * Moleculer brokers for the RPC rows: loopback only (the node advertises 127.0.0.1, never the
 * machine's other addresses), the `bench.add` service where asked, and the TCP transporter with
 * UDP discovery off and static peers.
 */
import type { Req } from './types.ts';

const HOST = '127.0.0.1';

export type MoleculerBroker = InstanceType<typeof import('moleculer').ServiceBroker>;

/** The TCP transporter's options: listen on a free port; `urls` are the peers to dial. */
export function tcpTransporter(urls: string[] = []): unknown {
  return { type: 'TCP', options: { udpDiscovery: false, useHostname: false, port: 0, urls } };
}

/**
 * A started broker; `setup` runs before the start (services, mixins). `port` is its TCP
 * transporter's port (undefined for another transporter).
 */
export async function moleculerBroker(options: {
  nodeID: string;
  transporter: unknown;
  addService?: boolean;
  /** Moleculer's built-in metrics collected (no reporter: nothing serves them). */
  metrics?: boolean;
  setup?: (broker: MoleculerBroker) => void;
}): Promise<{ broker: MoleculerBroker; port: number | undefined }> {
  const { ServiceBroker } = await import('moleculer');
  const broker = new ServiceBroker({
    nodeID: options.nodeID,
    transporter: options.transporter,
    logger: false,
    ...(options.metrics === true ? { metrics: { enabled: true } } : {}),
  } as never);
  const local = (
    broker as unknown as {
      registry: { nodes: { localNode: { hostname: string; ipList: string[]; port?: number } } };
    }
  ).registry.nodes.localNode;
  local.hostname = HOST;
  local.ipList = [HOST];
  if (options.addService === true) {
    broker.createService({
      name: 'bench',
      actions: {
        add: {
          params: { a: 'number', b: 'number', note: 'string' },
          handler: (ctx: { params: Req }) => ({ sum: ctx.params.a + ctx.params.b }),
        },
      },
    });
  }
  options.setup?.(broker);
  await broker.start();
  return { broker, port: local.port };
}
