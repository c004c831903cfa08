/** The contract every Parley RPC row serves: `bench.add({a, b, note}) → {sum}`. */
export async function parleyBench() {
  const parley = await import('parley');
  const { z } = parley;
  const contract = parley.defineContract({
    name: 'bench',
    version: '1.0.0',
    actions: {
      add: {
        input: z.object({ a: z.number(), b: z.number(), note: z.string() }),
        output: z.object({ sum: z.number() }),
        // Safe to retry: the policy stack's retries and breaker are all in play.
        idempotent: true,
        // The gateway rows reach it over HTTP.
        http: 'POST /add',
        public: true,
      },
    },
  });
  return { parley, contract };
}

type Bench = Awaited<ReturnType<typeof parleyBench>>;
type NodeOptions = NonNullable<Parameters<Bench['parley']['createNode']>[0]>;

/** A node serving `bench.add` over `transport` (the caller starts it). */
export function addServer(
  { parley, contract }: Bench,
  transport: NodeOptions['transport'],
  middleware: NodeOptions['middleware'] = [],
) {
  return parley.createNode({
    logLevel: 'silent',
    transport,
    middleware,
    services: [parley.implement(contract, { actions: { add: ({ a, b }) => ({ sum: a + b }) } })],
  });
}
