/**
 * One side of an RPC benchmark, as its own process.
 *   server <system>                    → prints {port}, serves until SIGTERM
 *   client <system> <port> <workloads> [server pid] → prints one result line per workload, with
 *                                      the CPU time each side used per call when the pid is given
 */
import { closedLoop, request } from '../lib/load.ts';
import { cpuMicros, say } from '../lib/proc.ts';
import { rpcSystems } from './systems.ts';

export interface Workload {
  name: string;
  concurrency: number;
  size: 'small' | '64k';
  seconds: number;
  warmup: number;
}

const [role, name, port, workloads, serverPid] = process.argv.slice(2);
const system = rpcSystems[name ?? ''];
if (system === undefined) throw new Error(`unknown system ${name}`);

if (role === 'server') {
  const served = await system.serve();
  say({ port: served.port });
  process.once('SIGTERM', () => {
    served.close().finally(() => process.exit(0));
  });
} else {
  const client = await system.connect(Number(port));
  for (const w of JSON.parse(workloads ?? '[]') as Workload[]) {
    const req = request(w.size);
    await closedLoop(() => client.call(req), { concurrency: w.concurrency, seconds: w.warmup });
    const server0 = serverPid === undefined ? Number.NaN : cpuMicros(Number(serverPid));
    const client0 = process.cpuUsage();
    const result = await closedLoop(() => client.call(req), {
      concurrency: w.concurrency,
      seconds: w.seconds,
    });
    const client1 = process.cpuUsage(client0);
    const server1 = serverPid === undefined ? Number.NaN : cpuMicros(Number(serverPid));
    say({
      workload: w.name,
      ...result,
      // The server's process holds everything the system runs there (for the gateway rows: the
      // HTTP edge, the service and the hub), not a broker's own process.
      serverCpuUs: (server1 - server0) / result.count,
      clientCpuUs: (client1.user + client1.system) / result.count,
    });
  }
  await client.close();
  process.exit(0);
}
