/**
 * @module gateway/push/history
 * Event ids and the bounded history ring behind `Last-Event-ID`. Ids are `<instance>-<seq>`: the
 * sequence grows by one per pushed event in this gateway instance, and the instance part makes an
 * id from another instance (or from before a restart) recognisably foreign, so the client is told
 * to refetch (`reset`) instead of being resumed from a number that means something else here.
 */

/** One pushed event as kept in the ring and written to connections. */
export interface PushedEvent {
  readonly seq: number;
  readonly id: string;
  readonly type: string;
  /** Who may see it (a principal's subject); undefined: everyone allowed to see the type. */
  readonly audience: string | undefined;
  /** The payload as JSON, serialised once for every connection. */
  readonly data: string;
}

/** What a reconnecting client gets: the events it missed, or a reset when they are not all kept. */
export type Resume = { kind: 'events'; events: PushedEvent[] } | { kind: 'reset'; reason: string };

export class EventHistory {
  private readonly ring: (PushedEvent | undefined)[];
  private seq = 0;
  /** Ring slot of the next event. */
  private next = 0;
  private count = 0;

  constructor(
    readonly instance: string,
    private readonly size: number,
  ) {
    this.ring = new Array<PushedEvent | undefined>(size);
  }

  /** The id of the latest event, or `<instance>-0` before the first one. */
  latestId(): string {
    return `${this.instance}-${this.seq}`;
  }

  /** Gives the event the next id and keeps it, evicting the oldest when the ring is full. */
  add(type: string, audience: string | undefined, data: string): PushedEvent {
    const seq = ++this.seq;
    const event: PushedEvent = { seq, id: `${this.instance}-${seq}`, type, audience, data };
    if (this.size > 0) {
      this.ring[this.next] = event;
      this.next = (this.next + 1) % this.size;
      this.count = Math.min(this.count + 1, this.size);
    }
    return event;
  }

  /**
   * Every kept event after `lastEventId` that `wanted` accepts, oldest first; a reset when the id
   * is not one of this instance's or events after it have already left the ring (they may have
   * been for this client: we cannot tell, so the client must refetch).
   */
  since(lastEventId: string, wanted: (event: PushedEvent) => boolean): Resume {
    const seq = this.parse(lastEventId);
    if (seq === undefined) return { kind: 'reset', reason: 'unknown event id' };
    if (seq > this.seq) return { kind: 'reset', reason: 'unknown event id' };
    const oldest = this.seq - this.count + 1;
    if (seq + 1 < oldest) return { kind: 'reset', reason: 'events after this id are no longer kept' };
    const events: PushedEvent[] = [];
    for (let s = seq + 1; s <= this.seq; s++) {
      const event = this.ring[(this.next - (this.seq - s) - 1 + this.size) % this.size];
      if (event !== undefined && wanted(event)) events.push(event);
    }
    return { kind: 'events', events };
  }

  private parse(id: string): number | undefined {
    const dash = id.lastIndexOf('-');
    if (dash <= 0 || id.slice(0, dash) !== this.instance) return undefined;
    const digits = id.slice(dash + 1);
    if (!/^\d{1,15}$/.test(digits)) return undefined;
    return Number(digits);
  }
}
