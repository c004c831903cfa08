/**
 * @module adapters/kafka/rebalance
 * What a Kafka group member (`consumer.ts`) owns, and how it gives it up: its partitions (with
 * the offsets it may commit) and the messages its handlers hold under a lease.
 *
 * Leases: a handler that outlives its lease loses the message. If another member of the group
 * owns partitions of the topic, the message is re-published to one of them (group-targeted, its
 * attempts carried in a header) and the original offset counts as settled; alone in the group,
 * the member takes it again itself when it has room. Rebalances are cooperative (incremental):
 * a revoked partition is released after its running deliveries settle or lose their lease, with
 * its offsets committed first, so a message handled here is not handled again by the next owner.
 */
import type { Envelope } from '../../envelope/envelope.ts';
import type { ParleyError } from '../../errors.ts';
import type { Consumer } from './driver.ts';
import { headers } from './protocol.ts';

/** A message read and not yet settled, in its key's queue. */
export interface Entry {
  partition: number;
  offset: number;
  queue: string;
  key: string | null;
  /** The record's envelope; when `bad`, what its dead letter holds (its bytes, `undecodableEnvelope`). */
  envelope: Envelope;
  /** Why the record is no envelope, when it is not one. */
  bad: ParleyError | undefined;
  attempt: number;
  notBefore: number;
  /** Set while a handler holds the message; a late result from an older run is ignored. */
  run: object | undefined;
  lease: ReturnType<typeof setTimeout> | undefined;
  firstFailureAt: number | undefined;
}

export interface PartitionState {
  /** Offsets read and not yet settled. */
  outstanding: Set<number>;
  /** The offset after the last one read (-1: nothing read yet). */
  next: number;
  committed: number;
  revoking: boolean;
}

/** What the assignment needs of its member (`KafkaGroupConsumer` hands it this; no import of the consumer). */
export interface Member {
  readonly kafkaTopic: string;
  readonly group: string;
  /** The librdkafka client, once started. */
  consumer(): Consumer | undefined;
  closed(): boolean;
  partitionCount(): number;
  random(): number;
  /** Writes a copy of a message to one partition of the topic. */
  produce(
    value: Buffer,
    options: { key: string | null; partition: number; headers: ReturnType<typeof headers> },
  ): Promise<unknown>;
  /** Every message read and not settled (a copy: safe to drop while iterating). */
  entries(): Entry[];
  /** Whether the message is still in its key's queue. */
  queued(entry: Entry): boolean;
  /** Forgets a message without settling it. */
  drop(entry: Entry): void;
  /** Settles a message; `releases`: its handler's slot is free too. */
  finish(entry: Entry, releases: boolean): void;
  notifySettled(): void;
  /** Resolves when a message settles, or after `ms`. */
  waitSettled(ms: number): Promise<void>;
  /** Hands ready messages to the handler; `freed`: a message no handler holds any more. */
  dispatch(freed?: Entry): void;
  /** Partitions were assigned: reading goes on. */
  assigned(): void;
}

const ASSIGN = -175; // RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS
const REVOKE = -174; // RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS

/** The partitions this member owns, their commits, and the messages it hands on. */
export class Assignment {
  private readonly partitions = new Map<number, PartitionState>();
  private commitTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly member: Member) {}

  get(partition: number): PartitionState | undefined {
    return this.partitions.get(partition);
  }

  /** The partitions owned now. */
  owned(): number[] {
    return [...this.partitions.keys()];
  }

  /** Stops the pending commit (closing). */
  stop(): void {
    if (this.commitTimer !== undefined) clearTimeout(this.commitTimer);
  }

  /** The lease ran out while the handler still holds the message: hand the message on. */
  leaseEnded(entry: Entry, token: object): void {
    if (entry.run !== token) return;
    entry.run = undefined; // the handler's slot stays taken until it returns (see `outcome` in consumer.ts)
    if (this.member.closed()) {
      this.member.notifySettled();
      return;
    }
    const ps = this.partitions.get(entry.partition);
    if (ps === undefined || ps.revoking) {
      // Leaving this member anyway: the next owner reads it from the committed offset.
      this.member.drop(entry);
      return;
    }
    entry.attempt++;
    this.handOver(entry);
    this.member.dispatch(entry);
  }

  /**
   * Re-publishes a message whose lease ended to a partition another member of the group owns.
   * While this member owns every partition (alone, or a rebalance is under way) it looks again
   * shortly, and meanwhile takes the message itself if it has room.
   */
  private handOver(entry: Entry): void {
    if (this.member.closed() || entry.run !== undefined || entry.bad !== undefined) return;
    const ps = this.partitions.get(entry.partition);
    if (ps === undefined || ps.revoking || !this.member.queued(entry)) return;
    const owned = new Set(this.partitions.keys());
    const others = [...Array(this.member.partitionCount()).keys()].filter((p) => !owned.has(p));
    const target = others[Math.floor(this.member.random() * others.length)];
    if (target === undefined) {
      setTimeout(() => this.handOver(entry), 100);
      return;
    }
    entry.run = {}; // held while the copy is written (the old handler's result is still ignored)
    this.member
      .produce(Buffer.from(JSON.stringify(entry.envelope)), {
        key: entry.key,
        partition: target,
        headers: headers({
          group: this.member.group,
          attempts: entry.attempt - 1,
          key: entry.key ?? undefined,
        }),
      })
      .then(
        () => this.member.finish(entry, false),
        () => {
          entry.run = undefined; // could not hand it on: take it again here
          this.member.dispatch(entry);
        },
      );
  }

  /** Commits what settled, soon (one commit for a burst of settlements). */
  scheduleCommit(): void {
    if (this.commitTimer !== undefined || this.member.closed()) return;
    this.commitTimer = setTimeout(() => {
      this.commitTimer = undefined;
      const offsets = this.commitable(false);
      const consumer = this.member.consumer();
      if (offsets.length === 0 || consumer === undefined) return;
      try {
        consumer.commit(offsets);
      } catch {
        // Not committed now: a later commit covers it, or the next owner redelivers (at least once).
      }
    }, 20);
  }

  /** Per partition: the lowest offset not settled (or the next to read) where it moved. */
  commitable(
    revokingToo: boolean,
    only?: Set<number>,
  ): { topic: string; partition: number; offset: number }[] {
    const out: { topic: string; partition: number; offset: number }[] = [];
    for (const [partition, ps] of this.partitions) {
      if ((ps.revoking && !revokingToo) || (only !== undefined && !only.has(partition)) || ps.next < 0)
        continue;
      let offset = ps.next;
      for (const o of ps.outstanding) if (o < offset) offset = o;
      if (offset <= ps.committed) continue;
      ps.committed = offset;
      out.push({ topic: this.member.kafkaTopic, partition, offset });
    }
    return out;
  }

  /** librdkafka's `rebalance_cb`: cooperative assign and revoke. */
  rebalance(code: number, assignment: { topic: string; partition: number }[]): void {
    const consumer = this.member.consumer();
    if (consumer === undefined) return;
    try {
      if (code === ASSIGN) {
        for (const tp of assignment)
          this.partitions.set(tp.partition, {
            outstanding: new Set(),
            next: -1,
            committed: -1,
            revoking: false,
          });
        consumer.incrementalAssign(assignment);
        this.member.assigned();
      } else if (code === REVOKE) {
        void this.revoke(consumer, assignment);
      }
    } catch {
      // The member is leaving (closed); nothing to hand back.
    }
  }

  /**
   * Lets running deliveries of revoked partitions settle (or lose their lease), then commits and
   * releases each partition as soon as it is free, so one long handler holds back only its own.
   */
  private async revoke(
    consumer: Consumer,
    assignment: { topic: string; partition: number }[],
  ): Promise<void> {
    const waiting = new Set(assignment.map((tp) => tp.partition));
    for (const p of waiting) {
      const ps = this.partitions.get(p);
      if (ps !== undefined) ps.revoking = true;
    }
    for (const e of this.member.entries())
      if (waiting.has(e.partition) && e.run === undefined) this.member.drop(e);
    for (;;) {
      const busy = new Set<number>();
      for (const e of this.member.entries()) if (e.run !== undefined) busy.add(e.partition);
      const free = new Set([...waiting].filter((p) => this.member.closed() || !busy.has(p)));
      if (free.size > 0) this.releasePartitions(consumer, free);
      for (const p of free) waiting.delete(p);
      if (waiting.size === 0) break;
      await this.member.waitSettled(50);
    }
    this.member.dispatch();
  }

  /** Commits what was settled in these partitions and hands them back to the group. */
  private releasePartitions(consumer: Consumer, partitions: Set<number>): void {
    try {
      const offsets = this.commitable(true, partitions);
      if (offsets.length > 0) consumer.commitSync(offsets);
    } catch {
      // The assignment may be lost already; the next owner redelivers from the last commit.
    }
    for (const p of partitions) this.partitions.delete(p);
    try {
      consumer.incrementalUnassign(
        [...partitions].map((partition) => ({ topic: this.member.kafkaTopic, partition })),
      );
    } catch {
      // Closed meanwhile.
    }
  }
}
