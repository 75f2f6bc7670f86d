/**
 * A bounded FIFO ring buffer with a named overflow policy. It is the queue of every flow edge.
 *
 * - `wait`: a producer that finds the queue full waits; when a slot frees, the longest waiting
 *   producer's item goes in first, so FIFO holds across waiting producers too.
 * - `reject`: the push fails and the caller turns that into `ROOST_ERR_QUEUE_FULL`.
 * - `drop_oldest`: the oldest item is evicted and handed back to the caller, which must
 *   dead-letter it (never silent).
 */

/** What a full edge does with one more item. */
export type OverflowPolicy = 'wait' | 'reject' | 'drop_oldest';

/** The overflow policies, for validation and docs. */
export const OVERFLOW_POLICIES: readonly OverflowPolicy[] = ['wait', 'reject', 'drop_oldest'];

interface Waiter<T> {
  item: T;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** A bounded FIFO queue; see the module comment for the overflow policies. */
export class BoundedQueue<T> {
  readonly capacity: number;
  private readonly ring: (T | undefined)[];
  private head = 0;
  private count = 0;
  private waiters: Waiter<T>[] = [];
  private waiterHead = 0;

  constructor(capacity: number) {
    this.capacity = capacity;
    this.ring = new Array<T | undefined>(capacity).fill(undefined);
  }

  /** Items queued now. */
  get size(): number {
    return this.count;
  }

  /** Producers waiting for a slot. */
  get waiting(): number {
    return this.waiters.length - this.waiterHead;
  }

  /** Adds `item` if there is room; returns false when full. */
  offer(item: T): boolean {
    if (this.count === this.capacity) return false;
    this.ring[(this.head + this.count) % this.capacity] = item;
    this.count++;
    return true;
  }

  /** Waits for room, then adds `item` (FIFO among waiters). Resolves once it is queued. */
  offerWait(item: T): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ item, resolve, reject });
    });
  }

  /** Evicts and returns the oldest item (to make room under `drop_oldest`). */
  evictOldest(): T | undefined {
    return this.shift();
  }

  /** Removes and returns the oldest item, letting the longest-waiting producer in. */
  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.ring[this.head];
    this.ring[this.head] = undefined;
    this.head = (this.head + 1) % this.capacity;
    this.count--;
    if (this.waiterHead < this.waiters.length) this.admitWaiter();
    return item;
  }

  private admitWaiter(): void {
    const waiter = this.waiters[this.waiterHead]!;
    this.waiters[this.waiterHead] = undefined as unknown as Waiter<T>;
    this.waiterHead++;
    if (this.waiterHead === this.waiters.length) {
      this.waiters = [];
      this.waiterHead = 0;
    } else if (this.waiterHead > 1024 && this.waiterHead * 2 > this.waiters.length) {
      this.waiters = this.waiters.slice(this.waiterHead);
      this.waiterHead = 0;
    }
    this.ring[(this.head + this.count) % this.capacity] = waiter.item;
    this.count++;
    waiter.resolve();
  }

  /**
   * Removes every queued item and waiting producer for which `match` is true (used by cancel).
   * Waiting producers are rejected with `reason`. Returns the removed queued items.
   */
  removeWhere(match: (item: T) => boolean, reason: unknown): T[] {
    const removed: T[] = [];
    if (this.count > 0) {
      const kept: T[] = [];
      for (let i = 0; i < this.count; i++) {
        const idx = (this.head + i) % this.capacity;
        const item = this.ring[idx] as T;
        this.ring[idx] = undefined;
        if (match(item)) removed.push(item);
        else kept.push(item);
      }
      this.head = 0;
      this.count = kept.length;
      for (let i = 0; i < kept.length; i++) this.ring[i] = kept[i];
    }
    if (this.waiting > 0) {
      const keep: Waiter<T>[] = [];
      for (let i = this.waiterHead; i < this.waiters.length; i++) {
        const waiter = this.waiters[i]!;
        if (match(waiter.item)) waiter.reject(reason);
        else keep.push(waiter);
      }
      this.waiters = keep;
      this.waiterHead = 0;
      while (this.count < this.capacity && this.waiterHead < this.waiters.length) this.admitWaiter();
    }
    return removed;
  }

  /** Iterates the queued items, oldest first, without removing them. */
  *items(): IterableIterator<T> {
    for (let i = 0; i < this.count; i++) yield this.ring[(this.head + i) % this.capacity] as T;
  }
}
