/**
 * @module broker/embedded/history
 * The embedded broker's log read without a group (`BrokerHistory`): positions are the log's
 * sequence numbers, which SQLite hands out in commit order (one writer at a time), so a reader
 * never sees a later message before an earlier one. A read that finds nothing waits: woken at once
 * by a publish in this process, and looking again every poll interval for other processes' writes.
 */
import { ParleyError } from '../../errors.ts';
import type { Clock } from '../../runtime/clock.ts';
import {
  type BrokerHistory,
  type HistoryEntry,
  type HistoryPage,
  type HistoryReadOptions,
  historyLimit,
  sequenceOf,
} from '../broker.ts';
import { type Store, storedEnvelope } from './store.ts';

export interface HistoryHost {
  readonly store: Store;
  readonly clock: Clock;
  readonly pollInterval: number;
  isClosed(): boolean;
}

export class EmbeddedHistory implements BrokerHistory {
  /** Readers waiting for a topic's next message. */
  private readonly waiting = new Map<string, Set<() => void>>();

  constructor(private readonly host: HistoryHost) {}

  async latest(topic: string): Promise<string> {
    this.open();
    return String(this.host.store.latest(topic));
  }

  async read(topic: string, after: string, options: HistoryReadOptions = {}): Promise<HistoryPage> {
    const from = sequenceOf(after, 'embedded broker');
    const bound =
      options.until === undefined ? Number.MAX_SAFE_INTEGER : sequenceOf(options.until, 'embedded broker');
    const limit = historyLimit(options.limit);
    const until = this.host.clock.now() + Math.max(0, options.waitMs ?? 0);
    for (;;) {
      this.open();
      const { rows, gap } = this.host.store.historyAfter(topic, from, bound, limit);
      const left = until - this.host.clock.now();
      if (rows.length > 0 || gap || left <= 0) {
        // A row that holds no envelope (written by another program or version) is passed over, as
        // the other brokers' histories pass over foreign entries; the position moves past it.
        const entries: HistoryEntry[] = [];
        for (const r of rows) {
          const envelope = storedEnvelope(r.body);
          if (envelope !== undefined) entries.push({ position: String(r.seq), envelope });
        }
        return { entries, next: rows.length > 0 ? String(rows[rows.length - 1]?.seq) : after, gap };
      }
      await this.wait(topic, Math.min(left, this.host.pollInterval));
    }
  }

  /** Messages of these topics were committed in this process: their readers look now. */
  wake(topics: Iterable<string>): void {
    for (const topic of topics) {
      const waiters = this.waiting.get(topic);
      if (waiters !== undefined) for (const w of [...waiters]) w();
    }
  }

  /** The broker closes: every waiting read returns (and the next one fails). */
  wakeAll(): void {
    for (const waiters of this.waiting.values()) for (const w of [...waiters]) w();
  }

  private open(): void {
    if (this.host.isClosed()) throw new ParleyError('UNAVAILABLE', 'broker is closed');
  }

  private wait(topic: string, ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      let waiters = this.waiting.get(topic);
      if (waiters === undefined) {
        waiters = new Set();
        this.waiting.set(topic, waiters);
      }
      const set = waiters;
      const done = () => {
        timer.cancel();
        set.delete(done);
        if (set.size === 0 && this.waiting.get(topic) === set) this.waiting.delete(topic);
        resolve();
      };
      const timer = this.host.clock.setTimeout(done, ms);
      set.add(done);
    });
  }
}
