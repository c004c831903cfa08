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
    const result = method(init.input, options);
    const parse = (output: unknown) => parseOutput(def, output, contract.name, action);
    if (def.stream === 'output') return parsedChunks(result as AsyncIterable<unknown>, parse);
    return isThenable(result) ? result.then(parse) : parse(result);
  }
}

/**
 * What the client is sent: the result parsed by the action's output schema, the schema the OpenAPI
 * document describes. Until 2026-12-03 the handler's value went out as it was, so a handler that
 * returned a stored row sent its other columns (a password hash) too: nodes do not check outputs
 * by default. Unknown keys are stripped; a result the schema refuses is INTERNAL (logged, opaque).
 */
function parseOutput(def: ActionDef, output: unknown, service: string, action: string): unknown {
  const parsed = def.output.safeParse(output);
  if (parsed.success) return parsed.data;
  const where = parsed.error.issues.map((i) => i.path.map(String).join('.') || '(root)').join(', ');
  throw new ParleyError('INTERNAL', `${service}.${action} returned an invalid output at ${where}`);
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === 'function';
}

/**
 * An output stream's chunks, each parsed as it is read. An iterator, not a generator: `return`
 * reaches the producer at once, even while a `next` is pending, so a client that goes away still
 * cancels it.
 */
function parsedChunks(
  source: AsyncIterable<unknown>,
  parse: (chunk: unknown) => unknown,
): AsyncIterable<unknown> {
  return {
    [Symbol.asyncIterator]() {
      const iterator = source[Symbol.asyncIterator]();
      return {
        async next() {
          const step = await iterator.next();
          return step.done === true ? step : { done: false, value: parse(step.value) };
        },
        async return(value?: unknown) {
          return (await iterator.return?.(value)) ?? { done: true, value };
        },
      };
    },
  };
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
