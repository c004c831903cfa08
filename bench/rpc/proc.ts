/**
 * One side of an RPC benchmark, as its own process.
 *   server <system>                    → prints {port}, serves until SIGTERM
 *   client <system> <port> <workloads> → prints one result line per workload
 */
import { closedLoop, request } from '../lib/load.ts';
import { say } from '../lib/proc.ts';
import { rpcSystems } from './systems.ts';

export interface Workload {
  name: string;
  concurrency: number;
  size: 'small' | '64k';
  seconds: number;
  warmup: number;
}

const [role, name, port, workloads] = process.argv.slice(2);
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
    const result = await closedLoop(() => client.call(req), {
      concurrency: w.concurrency,
      seconds: w.seconds,
    });
    say({ workload: w.name, ...result });
  }
  await client.close();
  process.exit(0);
}
