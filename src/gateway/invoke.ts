/**
 * @module gateway/invoke
 * One call from the edge into the system, and its answer as HTTP. The call is built from the
 * parsed input and the principal the gateway authenticated, nothing else: no client header is
 * forwarded, so a client cannot set a trace, a deadline, an idempotency key or a principal.
 * The call is cancelled when the client goes away.
 */
import { Readable } from 'node:stream';
import type { FastifyReply } from 'fastify';
import type { ActionDef, AnyContract } from '../contract/contract.ts';
import { validate } from '../contract/validate.ts';
import { ParleyError } from '../errors.ts';
import type { CallOptions } from '../runtime/context.ts';
import type { ParleyNode } from '../runtime/node.ts';
import type { Principal } from '../runtime/principal.ts';
import { toProblem } from './problem.ts';

export const NDJSON = 'application/x-ndjson';

type UntypedClient = Record<string, (input: unknown, options?: CallOptions) => unknown>;

/** Calls actions by name; one client per contract, made on first use. */
export class Invoker {
  private readonly clients = new Map<string, UntypedClient>();

  constructor(
    private readonly node: ParleyNode,
    private readonly callTimeout: number,
  ) {}

  /**
   * Validates `input` at the edge (INVALID_ARGUMENT with violations), then calls. The raw input
   * is sent, not the parsed one: the service validates again and applies its own defaults and
   * transforms once. For an input stream, `input` is the iterable of chunks and is not validated
   * here (the service checks each chunk as it reads it).
   */
  call(init: {
    contract: AnyContract;
    action: string;
    def: ActionDef;
    input: unknown;
    principal: Principal | undefined;
    /** The client's disconnect, where it should cancel the call (streams, uploads). */
    signal: AbortSignal | undefined;
    /** The request's `Idempotency-Key`, already scoped to its principal (`idempotency.ts`). */
    idempotencyKey?: string | undefined;
  }): unknown {
    const { contract, action, def } = init;
    if (def.stream !== 'input') validate(def.input, init.input, `input of ${contract.name}.${action}`);
    let client = this.clients.get(contract.name);
    if (client === undefined) {
      // The untyped path: the action name comes from the route table, checked against the contract.
      client = this.node.client(contract) as unknown as UntypedClient;
      this.clients.set(contract.name, client);
    }
    const method = client[action];
    if (method === undefined) throw new ParleyError('UNIMPLEMENTED', `no action ${contract.name}.${action}`);
    const options: CallOptions = { timeout: def.timeout ?? this.callTimeout };
    if (init.signal !== undefined) options.signal = init.signal;
    if (init.principal !== undefined) options.principal = init.principal;
    if (init.idempotencyKey !== undefined) options.idempotencyKey = init.idempotencyKey;
    return method(init.input, options);
  }
}

/** An AbortSignal that fires when the client disconnects before the answer is complete. */
export function disconnectSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort(new ParleyError('CANCELLED', 'the client went away'));
  });
  return controller.signal;
}

/**
 * Sends a unary result as JSON, or an output stream as NDJSON (one chunk per line). The first
 * chunk is awaited before the status is sent, so a stream that fails at once is an ordinary
 * problem response; a failure after that ends the body with one `{"error": problem}` line.
 */
export async function sendResult(
  reply: FastifyReply,
  result: unknown,
  ctx: { stream: boolean; instance: string; requestId: string },
): Promise<FastifyReply> {
  if (!ctx.stream) return reply.type('application/json').send(JSON.stringify(await result));
  const iterator = (result as AsyncIterable<unknown>)[Symbol.asyncIterator]();
  const first = await iterator.next();
  async function* lines(): AsyncGenerator<string> {
    try {
      let next = first;
      while (next.done !== true) {
        yield `${JSON.stringify(next.value)}\n`;
        next = await iterator.next();
      }
    } catch (error) {
      yield `${JSON.stringify({ error: toProblem({ error, instance: ctx.instance, requestId: ctx.requestId }) })}\n`;
    } finally {
      // Also reached when the client goes away (the stream is destroyed): cancels the producer.
      await iterator.return?.();
    }
  }
  return reply.type(NDJSON).send(Readable.from(lines(), { objectMode: false }));
}
