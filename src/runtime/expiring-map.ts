/**
 * A map bounded by count and by age: the idempotency window and the unfetched results use it.
 * Every entry lives `ttlMs`, so insertion order is expiry order: entries also sit in a FIFO
 * array, and expired or over-cap entries are evicted from its head in O(1) each.
 *
 * (Sweeping by iterating the `Map` itself is O(n) per sweep: V8 leaves a hole per deleted entry
 * at the front of its table until the next rehash, and iteration walks them. It cost 60 % of the
 * runtime's CPU in the flow benchmark.)
 */

interface Entry<K, V> {
  readonly key: K;
  readonly value: V;
  readonly expiresAt: number;
  live: boolean;
}

/** A bounded, expiring map; see the module comment. */
export class ExpiringMap<K, V> {
  private readonly entries = new Map<K, Entry<K, V>>();
  private order: Entry<K, V>[] = [];
  private head = 0;

  /**
   * @param max most entries kept; the oldest go first.
   * @param ttlMs how long an entry lives.
   * @param onEvict told of each entry evicted by age or by count (not of `delete`).
   */
  constructor(
    readonly max: number,
    readonly ttlMs: number,
    private readonly onEvict?: (key: K, value: V, reason: 'expired' | 'capacity') => void,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** The live value for `key`, or undefined. */
  get(key: K, now: number = Date.now()): V | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= now) {
      this.sweep(now);
      return undefined;
    }
    return entry.value;
  }

  /** Inserts `key` (re-inserting gives it a fresh TTL). */
  set(key: K, value: V, now: number = Date.now()): void {
    const old = this.entries.get(key);
    if (old !== undefined) old.live = false;
    const entry: Entry<K, V> = { key, value, expiresAt: now + this.ttlMs, live: true };
    this.entries.set(key, entry);
    this.order.push(entry);
    this.sweep(now);
  }

  delete(key: K): boolean {
    const entry = this.entries.get(key);
    if (entry === undefined) return false;
    entry.live = false;
    this.entries.delete(key);
    return true;
  }

  /** Evicts expired entries, then the oldest while over the cap. */
  sweep(now: number = Date.now()): void {
    const order = this.order;
    while (this.head < order.length) {
      const entry = order[this.head]!;
      if (entry.live) {
        const expired = entry.expiresAt <= now;
        if (!expired && this.entries.size <= this.max) break;
        entry.live = false;
        this.entries.delete(entry.key);
        this.onEvict?.(entry.key, entry.value, expired ? 'expired' : 'capacity');
      }
      order[this.head] = undefined as unknown as Entry<K, V>;
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > order.length) {
      this.order = order.slice(this.head);
      this.head = 0;
    }
  }

  clear(): void {
    this.entries.clear();
    this.order = [];
    this.head = 0;
  }
}
