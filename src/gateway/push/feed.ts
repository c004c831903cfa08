/**
 * @module gateway/push/feed
 * Server push from the broker's log (`BrokerHistory`) instead of notifications: one reader per
 * source follows its topic from where it stood when the gateway started, and every event's id is
 * the list of positions the feed has reached, one per source in the order they were given
 * (`<pos>.<pos>…`). Such an id means the same on every gateway instance and after a restart, so a
 * client reconnecting anywhere with `Last-Event-ID` is given what it missed, read from the broker,
 * as far back as the broker's retention keeps; past that, or past `maxResumeEvents`, a `reset`.
 */
import { type BrokerHistory, comparePositions, type HistoryEntry, isPosition } from '../../broker/broker.ts';
import { validate } from '../../contract/validate.ts';
import type { Envelope } from '../../envelope/envelope.ts';
import { backoffDelay } from '../../resilience/backoff.ts';
import type { Clock } from '../../runtime/clock.ts';
import type { PushedEvent, Resume } from './history.ts';
import type { PushLogger, PushSource } from './options.ts';

/** An event of a source, accepted: its audience and payload as JSON. */
export interface Accepted {
  readonly type: string;
  readonly audience: string | undefined;
  readonly data: string;
}

export interface FeedDeps {
  readonly history: BrokerHistory;
  readonly sources: readonly PushSource[];
  readonly clock: Clock;
  readonly logger: () => PushLogger;
  /** Turns a source's event into what is pushed; undefined drops it (logged by the caller). */
  accept(source: PushSource, payload: unknown): Accepted | undefined;
  /** A live event, with its id. */
  publish(event: PushedEvent): void;
  /** Most log entries one resume may read before it gives up with a reset. */
  readonly maxResumeEvents: number;
}

/** Entries one read asks for. */
const PAGE = 200;
/** How long a follower's read waits for news before asking again, ms. */
const WAIT_MS = 10_000;
/** A follower whose reads fail tries again after these delays (ms). */
const RETRY = { initial: 100, max: 5000, multiplier: 2 };

export class Feed {
  /** Where each source's follower stands: the ids of live events are made of these. */
  private readonly positions: string[] = [];
  /** Checked each time the followers move on (see `reach`). */
  private readonly reachers = new Set<() => void>();
  private closed = false;

  constructor(private readonly deps: FeedDeps) {}

  /** Takes each topic's newest position and starts following from there. */
  async start(): Promise<void> {
    const { history, sources } = this.deps;
    const start = await Promise.all(sources.map((s) => history.latest(s.event)));
    this.positions.splice(0, this.positions.length, ...start);
    for (const i of sources.keys()) void this.follow(i);
  }

  /** The id of where the feed stands now. */
  id(): string {
    return this.positions.join('.');
  }

  /**
   * Stops following. A read waiting for news is not waited for: it returns (and is dropped) when
   * its wait ends or the broker closes.
   */
  close(): void {
    this.closed = true;
    for (const r of [...this.reachers]) r();
  }

  /**
   * Waits, at most `maxWaitMs`, until the feed stands at or past `lastEventId` on every source:
   * a client that saw further than this instance (it was on another one, which read the log
   * sooner) is then resumed from here without a reset. Returns at once when the feed is there
   * already, or when the id is not one the log has reached (`missed` answers it with a reset).
   */
  async reach(lastEventId: string, maxWaitMs: number): Promise<void> {
    const from = this.parse(lastEventId);
    if (from === undefined || this.covers(from)) return;
    const { history, sources } = this.deps;
    let latest: string[];
    try {
      latest = await Promise.all(sources.map((s) => history.latest(s.event)));
    } catch {
      return;
    }
    if (!atOrBefore(from, latest)) return;
    await new Promise<void>((resolve) => {
      const check = () => {
        if (!this.closed && !this.covers(from)) return;
        timer.cancel();
        this.reachers.delete(check);
        resolve();
      };
      const timer = this.deps.clock.setTimeout(() => {
        this.reachers.delete(check);
        resolve();
      }, maxWaitMs);
      this.reachers.add(check);
      check();
    });
  }

  /**
   * What a client that saw up to `lastEventId` missed, up to where the feed stands now (`upTo`,
   * taken by the caller in the same tick it started holding live events for this client), oldest
   * first per source, sources merged by event time; or a reset.
   */
  async missed(
    lastEventId: string,
    upTo: readonly string[],
    wanted: (event: PushedEvent) => boolean,
  ): Promise<Resume> {
    const from = this.parse(lastEventId);
    if (from === undefined) return { kind: 'reset', reason: 'unknown event id' };
    const lists: Missed[][] = [];
    let budget = this.deps.maxResumeEvents;
    for (const [i, source] of this.deps.sources.entries()) {
      const end = upTo[i] ?? '0';
      let at = from[i] ?? '0';
      // Ahead of where the feed stands, or (partitioned logs) neither behind nor ahead of it.
      if (!(comparePositions(at, end) <= 0)) return { kind: 'reset', reason: 'unknown event id' };
      const list: Missed[] = [];
      while (comparePositions(at, end) < 0) {
        let page: Awaited<ReturnType<BrokerHistory['read']>>;
        try {
          page = await this.deps.history.read(source.event, at, {
            limit: Math.min(PAGE, budget + 1),
            until: end,
          });
        } catch (error) {
          this.deps.logger().warn({ err: error, type: source.event }, 'push: resume could not read the log');
          return { kind: 'reset', reason: 'the log could not be read' };
        }
        if (page.gap) return { kind: 'reset', reason: 'events after this id are no longer kept' };
        // The read returns nothing after `end` (`until`: every broker's history honours it).
        for (const entry of page.entries) {
          if (--budget < 0) return { kind: 'reset', reason: 'too many events missed' };
          const accepted = this.accept(source, entry.envelope);
          if (accepted !== undefined) list.push({ entry, accepted });
        }
        if (page.next === at) break; // nothing more there: the log ends before `end`
        at = page.next;
      }
      lists.push(list);
    }
    // Merged by time, each source's own order kept; each event's id is the positions after it.
    const now = [...from];
    const events: PushedEvent[] = [];
    const heads = lists.map(() => 0);
    for (;;) {
      let pick: { i: number; item: Missed } | undefined;
      for (const [i, list] of lists.entries()) {
        const item = list[heads[i] ?? 0];
        if (item !== undefined && (pick === undefined || timeOf(item) < timeOf(pick.item)))
          pick = { i, item };
      }
      if (pick === undefined) break;
      heads[pick.i] = (heads[pick.i] ?? 0) + 1;
      now[pick.i] = pick.item.entry.position;
      const event: PushedEvent = { seq: 0, id: now.join('.'), ...pick.item.accepted };
      if (wanted(event)) events.push(event);
    }
    return { kind: 'events', events };
  }

  /** Where the feed stands, for a resume to read up to. */
  snapshot(): string[] {
    return [...this.positions];
  }

  /** The feed stands at or past `from` on every source. */
  private covers(from: readonly string[]): boolean {
    return atOrBefore(from, this.positions);
  }

  private parse(id: string): string[] | undefined {
    const parts = id.split('.');
    if (parts.length !== this.deps.sources.length || !parts.every(isPosition)) return undefined;
    return parts;
  }

  private accept(source: PushSource, envelope: Envelope): Accepted | undefined {
    let payload: unknown;
    try {
      payload = validate(
        (source.contract.events[source.event] as { schema: Parameters<typeof validate>[0] }).schema,
        envelope.data,
        `payload of ${source.event}`,
      );
    } catch (error) {
      this.deps.logger().warn({ err: error, type: source.event, id: envelope.id }, 'push: event not pushed');
      return undefined;
    }
    return this.deps.accept(source, payload);
  }

  private async follow(i: number): Promise<void> {
    const source = this.deps.sources[i] as PushSource;
    let failures = 0;
    while (!this.closed) {
      let page: Awaited<ReturnType<BrokerHistory['read']>>;
      try {
        page = await this.deps.history.read(source.event, this.positions[i] ?? '0', {
          limit: PAGE,
          waitMs: WAIT_MS,
        });
        failures = 0;
      } catch (error) {
        if (this.closed) return;
        failures++;
        if (failures === 1) {
          this.deps
            .logger()
            .warn({ err: error, type: source.event }, 'push: reading the log failed; retrying');
        }
        await new Promise<void>((resolve) =>
          this.deps.clock.setTimeout(resolve, backoffDelay(RETRY, failures)),
        );
        continue;
      }
      if (this.closed) return;
      if (page.gap) {
        // Retention outran this gateway (a stall longer than the broker keeps events).
        this.deps
          .logger()
          .warn({ type: source.event }, 'push: events were removed before this gateway read them');
      }
      for (const entry of page.entries) {
        this.positions[i] = entry.position;
        const accepted = this.accept(source, entry.envelope);
        if (accepted !== undefined) this.deps.publish({ seq: 0, id: this.id(), ...accepted });
      }
      this.positions[i] = page.next;
      if (this.reachers.size > 0) for (const r of [...this.reachers]) r();
    }
  }
}

interface Missed {
  readonly entry: HistoryEntry;
  readonly accepted: Accepted;
}

function timeOf(item: Missed): number {
  const t = Date.parse(item.entry.envelope.time ?? '');
  return Number.isNaN(t) ? 0 : t;
}

/** Each source's position in `a` is at or before its position in `b`. */
function atOrBefore(a: readonly string[], b: readonly string[]): boolean {
  return a.every((p, i) => comparePositions(p, b[i] ?? '0') <= 0);
}
