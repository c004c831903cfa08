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
import { validate, validOutput } from '../contract/validate.ts';
import { ParleyError } from '../errors.ts';
import type { CallOptions } from '../runtime/context.ts';
import type { ParleyNode } from '../runtime/node.ts';
import type { Principal } from '../runtime/principal.ts';
import { isThenable } from '../runtime/serve.ts';
import { checked } from '../runtime/streams.ts';
import { toProblem } from './problem.ts';

export const NDJSON = 'application/x-ndjson';

type UntypedClient = Record<string, (input: unknown, options?: CallOptions) => unknown>;

/** Calls actions by name; one client per contract, made on first use. */
export class Invoker {
  private readonly clients = new Map<string, UntypedClient>();
  /** Per action: its input's name in errors, and what parses its output on the way back. */
  private readonly names = new Map<ActionDef, { input: string; parse: (output: unknown) => unknown }>();

  constructor(
    private readonly node: ParleyNode,
    private readonly callTimeout: number,
  ) {}

  /**
   * Validates `input` at the edge (INVALID_ARGUMENT with violations), then calls. The raw input
   * is sent, not the parsed one: the service validates again and applies its own defaults and
   * transforms once. For an input stream, `input` is the iterable of chunks and is not validated
   * here (the service checks each chunk as it reads it). The result, or each chunk of an output
   * stream, is parsed by the output schema on its way back (`parseOutput`).
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
    let names = this.names.get(def);
    if (names === undefined) {
      // Made once per action: these strings were built again for every request.
      const what = `${contract.name}.${action}`;
      names = {
        input: `input of ${what}`,
        parse: (output: unknown) => validOutput(def.output, output, what),
      };
      this.names.set(def, names);
    }
    if (def.stream !== 'input') validate(def.input, init.input, names.input);
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
    const result = method(init.input, options);
    // What the client is sent is what the output schema (and so the OpenAPI document) describes:
    // until 2026-12-03 the handler's value went out as it was, and a handler returning a stored
    // row sent its other columns (a password hash) too, since nodes do not check outputs by default.
    const parse = names.parse;
    if (def.stream === 'output') return checked(result as AsyncIterable<unknown>, parse);
    return isThenable(result) ? result.then(parse) : parse(result);
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
      const problem = toProblem({ error, instance: ctx.instance, requestId: ctx.requestId });
      // A failure before the first chunk is logged where it is answered; this one is answered here.
      if (problem.status >= 500) reply.log.error({ err: error, requestId: ctx.requestId }, 'stream failed');
      yield `${JSON.stringify({ error: problem })}\n`;
    } finally {
      // Also reached when the client goes away (the stream is destroyed): cancels the producer.
      await iterator.return?.();
    }
  }
  return reply.type(NDJSON).send(Readable.from(lines(), { objectMode: false }));
}
