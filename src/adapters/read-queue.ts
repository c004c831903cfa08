/**
 * @module adapters/read-queue
 * How the bus transport reads what a bus client hands over: the messages of one socket read one
 * after another, with the microtasks of each run before the next is read.
 *
 * A bus client hands over all the messages of one socket read at once. Read back to back, their
 * calls all resumed in the same rounds of microtasks, and every answer (or next request) left in
 * one write after the last was made: the two sides took turns, each idle while the other worked.
 * Here the first message of a read is read at once and each later one in a `setImmediate`
 * callback of its own (Node runs the microtasks between two): a full batch of answers to the
 * first (the bus transport's `BATCH_FRAMES`) leaves while the next is read, so with two batches
 * in flight both sides work at once. Fewer answers still wait for the turn's end, with those to
 * later messages: publishing them before each next message made every batch as small as the one
 * it answered, and once a lone call split a batch, the calls stayed split (NATS, 64 in flight:
 * 8–30 k calls a second against 36–69 k). Every message is read in the turn it came in, in the
 * order the bus gave them: the transport puts presence through here too, so a node's bye stays
 * behind the replies it sent first. Notifications bypass it: nothing answers them, and holding
 * them back cost the NATS notification rows about a tenth of their rate.
 */
import { ParleyError } from '../errors.ts';

/** Reads one bus message. */
export type Reader = (message: Uint8Array, replyTo: string | undefined) => void;

interface Waiting {
  read: Reader;
  message: Uint8Array;
  replyTo: string | undefined;
}

export class ReadQueue {
  /** Messages that arrived while another of their read was being read, oldest at `next`. */
  private readonly waiting: (Waiting | undefined)[] = [];
  private next = 0;
  /** A message of this socket read was read: the next ones wait. */
  private reading = false;

  constructor(private readonly log: (message: string) => void) {}

  /**
   * Reads a message now or, when another of the same socket read was already read (or some
   * wait), after those, in a `setImmediate` callback of its own.
   */
  arrive(read: Reader, message: Uint8Array, replyTo: string | undefined): void {
    if (this.reading || this.waiting.length > this.next) {
      this.waiting.push({ read, message, replyTo });
      setImmediate(this.readWaiting);
      return;
    }
    this.reading = true;
    // A client hands over the messages of one read synchronously, so the read ends at the first
    // microtask (cheaper than a setImmediate, which costs a lone call an extra loop iteration).
    queueMicrotask(this.endReading);
    read(message, replyTo);
  }

  /** Forgets what waits (a stop: as if it had come after). */
  clear(): void {
    this.waiting.length = 0;
    this.next = 0;
  }

  private readonly endReading = (): void => {
    this.reading = false;
  };

  /** Reads the oldest waiting message (one `setImmediate` was made for each). */
  private readonly readWaiting = (): void => {
    const next = this.waiting[this.next];
    if (next === undefined) return; // forgotten by `clear`
    this.waiting[this.next++] = undefined;
    if (this.next === this.waiting.length) this.clear();
    try {
      next.read(next.message, next.replyTo);
    } catch (error) {
      // Read at once, the error went to the bus client's callback; here nothing else catches it.
      this.log(`a message could not be read: ${ParleyError.from(error).message}`);
    }
  };
}
