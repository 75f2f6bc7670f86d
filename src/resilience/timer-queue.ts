/**
 * One timer for many deadlines: a binary min-heap of due times with a single armed `setTimeout`.
 *
 * Every run of every node has a timeout; a `setTimeout` + `clearTimeout` per run costs more than
 * the run itself on a fast path. Entries carry their heap index, so removal is O(log n) with no
 * garbage left behind, and the timer is re-armed only when an earlier entry arrives (timeouts of
 * one node arrive in due order, so that is rare).
 */
import { clockNow } from './clock.js';

const MAX_TIMEOUT_MS = 2_147_483_647;

/** Something with a due time in a {@link TimerQueue}. */
export interface Timed {
  /** Due time, epoch ms. Set by the queue. */
  timerAt: number;
  /** Position in the heap, or -1 when not scheduled. Owned by the queue. */
  timerIndex: number;
  /** Called once when due (after removal from the queue). */
  onTimer(): void;
}

/**
 * An entry that can be parked: left in the queue while it has nothing due, so that the next
 * {@link TimerQueue.schedule} at or after its due time costs no heap operation (a node's timeout
 * lane goes idle and busy again on every run of a node that runs one envelope at a time).
 */
export interface Parkable extends Timed {
  /** Parked now. Owned by the queue. */
  timerParked: boolean;
}

/** A min-heap of {@link Timed} entries served by one `setTimeout`. */
export class TimerQueue {
  private readonly heap: Timed[] = [];
  private handle: ReturnType<typeof setTimeout> | undefined;
  private armedAt = Infinity;
  private refed = false;
  private closed = false;
  /** Parked entries in the heap: they do not keep the process alive, and are dropped when due. */
  private parked = 0;

  /** @param onError told of an exception thrown by an entry's `onTimer` (it never escapes). */
  constructor(private readonly onError: (error: unknown) => void = () => {}) {}

  /** Entries scheduled now (parked ones included). */
  get size(): number {
    return this.heap.length;
  }

  /** Whether the armed timer keeps the process alive (something not parked is due). */
  get keepsAlive(): boolean {
    return this.refed;
  }

  /**
   * Schedules `entry` at `at` (epoch ms), moving it if already scheduled. A parked entry due no
   * later than `at` just wakes where it is: it fires early, and its owner schedules it again.
   */
  schedule(entry: Timed, at: number): void {
    if (this.closed) return;
    if (entry.timerIndex >= 0) {
      if ((entry as Partial<Parkable>).timerParked === true && entry.timerAt <= at) {
        (entry as Parkable).timerParked = false;
        this.parked--;
        this.updateRef();
        return;
      }
      this.remove(entry);
    }
    entry.timerAt = at;
    entry.timerIndex = this.heap.length;
    this.heap.push(entry);
    this.up(entry.timerIndex);
    if (at < this.armedAt) this.arm(at);
    else this.updateRef();
  }

  /** Leaves `entry` in the queue with nothing due (see {@link Parkable}); it no longer keeps the process alive. */
  park(entry: Parkable): void {
    if (entry.timerIndex < 0 || entry.timerParked) return;
    entry.timerParked = true;
    this.parked++;
    this.updateRef();
  }

  /** Removes `entry` if scheduled. */
  remove(entry: Timed): void {
    const i = entry.timerIndex;
    if (i < 0) return;
    entry.timerIndex = -1;
    if ((entry as Partial<Parkable>).timerParked === true) {
      (entry as Parkable).timerParked = false;
      this.parked--;
    }
    const last = this.heap.pop()!;
    if (i < this.heap.length) {
      this.heap[i] = last;
      last.timerIndex = i;
      this.down(i);
      this.up(last.timerIndex);
    }
    this.updateRef();
  }

  /**
   * Keeps the armed timer (re-arming per run costs more than the run) but lets the process exit
   * while only parked entries wait; the timer then fires once, finds nothing due, and stops.
   */
  private updateRef(): void {
    const needed = this.heap.length > this.parked;
    if (needed === this.refed || this.handle === undefined) return;
    if (needed) this.handle.ref();
    else this.handle.unref();
    this.refed = needed;
  }

  /** Drops every entry and the armed timer; later schedules are ignored. */
  close(): void {
    this.closed = true;
    for (const entry of this.heap) {
      entry.timerIndex = -1;
      if ((entry as Partial<Parkable>).timerParked === true) (entry as Parkable).timerParked = false;
    }
    this.heap.length = 0;
    this.parked = 0;
    this.disarm();
  }

  private arm(at: number): void {
    if (this.handle !== undefined) clearTimeout(this.handle);
    this.armedAt = at;
    // setTimeout takes at most 2^31-1 ms (24.8 days) and fires at once for more: a later entry
    // is reached by re-arming when the clamped timer fires.
    this.handle = setTimeout(this.fire, Math.min(MAX_TIMEOUT_MS, Math.max(0, at - clockNow())));
    this.refed = true;
    this.updateRef(); // only parked entries left (after a fire): let the process exit
  }

  private disarm(): void {
    if (this.handle !== undefined) clearTimeout(this.handle);
    this.handle = undefined;
    this.armedAt = Infinity;
    this.refed = false;
  }

  private readonly fire = (): void => {
    this.handle = undefined;
    this.armedAt = Infinity;
    this.refed = false;
    const now = clockNow();
    // Fire everything due; an entry's onTimer may schedule or remove others.
    while (this.heap.length > 0 && this.heap[0]!.timerAt <= now) {
      const entry = this.heap[0]!;
      const parked = (entry as Partial<Parkable>).timerParked === true;
      this.remove(entry);
      if (parked) continue; // nothing was due for it
      try {
        entry.onTimer();
      } catch (error) {
        this.onError(error);
      }
    }
    if (this.heap.length > 0 && !this.closed) this.arm(this.heap[0]!.timerAt);
  };

  private up(i: number): void {
    const heap = this.heap;
    const entry = heap[i]!;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = heap[p]!;
      if (parent.timerAt <= entry.timerAt) break;
      heap[i] = parent;
      parent.timerIndex = i;
      i = p;
    }
    heap[i] = entry;
    entry.timerIndex = i;
  }

  private down(i: number): void {
    const heap = this.heap;
    const n = heap.length;
    const entry = heap[i]!;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && heap[r]!.timerAt < heap[l]!.timerAt ? r : l;
      const child = heap[c]!;
      if (child.timerAt >= entry.timerAt) break;
      heap[i] = child;
      child.timerIndex = i;
      i = c;
    }
    heap[i] = entry;
    entry.timerIndex = i;
  }
}

/** A one-off {@link Timed} entry that calls a function. */
export class TimedCallback implements Timed {
  timerAt = 0;
  timerIndex = -1;
  constructor(private readonly callback: () => void) {}
  onTimer(): void {
    this.callback();
  }
}
