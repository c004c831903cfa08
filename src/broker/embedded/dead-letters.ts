/**
 * @module broker/embedded/dead-letters
 * The embedded broker's dead-letter store: list, inspect, replay into the group, purge.
 */
import { ParleyError } from '../../errors.ts';
import type { Clock } from '../../runtime/clock.ts';
import type { DeadLetter, DeadLetterFilter, DeadLetterStore } from '../broker.ts';
import { undecodableEnvelope } from '../outcome.ts';
import { type DeadRow, type Store, storedEnvelope } from './store.ts';

export class DeadLetters implements DeadLetterStore {
  constructor(private readonly broker: { readonly store: Store; readonly clock: Clock; wakeAll(): void }) {}

  async list(filter: DeadLetterFilter = {}, limit = 100): Promise<DeadLetter[]> {
    return this.broker.store.deadLetters(filter, limit).map(toDeadLetter);
  }

  async get(id: number): Promise<DeadLetter | undefined> {
    return (await this.list({ ids: [id] }, 1))[0];
  }

  async replay(filter: DeadLetterFilter = {}): Promise<number> {
    const n = this.broker.store.replay(filter, this.broker.clock.now());
    this.broker.wakeAll();
    return n;
  }

  async purge(filter: DeadLetterFilter = {}): Promise<number> {
    return this.broker.store.purge(filter);
  }
}

function toDeadLetter(r: DeadRow): DeadLetter {
  // A row whose body is no envelope (another program's write to the log, dead-lettered for it)
  // is listed with its bytes, as every broker lists one, and replays pass over it.
  const envelope = storedEnvelope(r.body) ?? undecodableEnvelope(`unreadable-${r.id}`, r.topic, r.body);
  return {
    id: r.id,
    topic: r.topic,
    group: r.grp,
    envelope,
    code: ParleyError.fromWire({ code: r.code }).code,
    message: r.message,
    retryable: r.retryable === 1,
    attempts: r.attempts,
    firstFailureAt: r.first_failure_at,
    lastFailureAt: r.last_failure_at,
  };
}
