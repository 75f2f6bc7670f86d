/**
 * A flow's traces by id: a hash table chained through the traces themselves.
 *
 * Why not a `Map<string, Trace>`: every trace is one insert and one delete, and with that churn
 * a `Map` keeps rehashing its deleted entries away and hashes each new 36-character id in full;
 * together a tenth of a message's cost on a fast flow. Here a trace id's hash is its last eight
 * hex digits, where UUIDv7 ids made in one process count up (see `uuid.ts`), so consecutive
 * traces land in consecutive buckets; a delete unlinks the trace and leaves nothing behind.
 */

/** What the index needs of a trace. Both fields are owned by the index. */
export interface Indexed<T> {
  readonly id: string;
  /** The bucket hash of `id`, or -1 while not in an index. */
  indexHash: number;
  /** The next entry in the same bucket. */
  indexNext: T | null;
}

/** The smallest table; it doubles while entries outnumber buckets and halves below a quarter. */
const MIN_BUCKETS = 64;

/** The hash of a trace id: its last eight characters read as hex digits (any string works). */
export function traceIdHash(id: string): number {
  let h = 0;
  for (let i = Math.max(0, id.length - 8); i < id.length; i++) {
    const c = id.charCodeAt(i);
    // '0'…'9' and 'a'…'f' give their values; anything else still mixes in deterministically.
    h = ((h << 4) | (c <= 57 ? c - 48 : c - 87)) >>> 0;
  }
  return h;
}

/** See the module comment. */
export class TraceIndex<T extends Indexed<T>> {
  private buckets: (T | null)[] = new Array<T | null>(MIN_BUCKETS).fill(null);
  private mask = MIN_BUCKETS - 1;
  private count = 0;

  /** Entries now. */
  get size(): number {
    return this.count;
  }

  /** The entry with `id`, if any. */
  get(id: string): T | undefined {
    let t = this.buckets[traceIdHash(id) & this.mask] ?? null;
    while (t !== null && t.id !== id) t = t.indexNext;
    return t ?? undefined;
  }

  has(id: string): boolean {
    return this.get(id) !== undefined;
  }

  /**
   * Adds `entry`, replacing an entry with the same id. `hash` is `traceIdHash(entry.id)` when
   * the caller knows it already (an id it just made); `fresh` when no entry can have the id.
   */
  add(entry: T, hash: number = traceIdHash(entry.id), fresh = false): void {
    if (!fresh) {
      const existing = this.get(entry.id);
      if (existing !== undefined) this.delete(existing);
    }
    const i = hash & this.mask;
    entry.indexHash = hash;
    entry.indexNext = this.buckets[i] ?? null;
    this.buckets[i] = entry;
    if (++this.count > this.buckets.length) this.resize(this.buckets.length * 2);
  }

  /** Removes exactly `entry` (not another entry with its id); false when it was not here. */
  delete(entry: T): boolean {
    if (entry.indexHash < 0) return false;
    const i = entry.indexHash & this.mask;
    let prev: T | null = null;
    let t = this.buckets[i] ?? null;
    while (t !== null && t !== entry) {
      prev = t;
      t = t.indexNext;
    }
    if (t === null) return false;
    if (prev === null) this.buckets[i] = entry.indexNext;
    else prev.indexNext = entry.indexNext;
    entry.indexNext = null;
    entry.indexHash = -1;
    this.count--;
    if (this.buckets.length > MIN_BUCKETS && this.count * 4 < this.buckets.length) this.resize(this.buckets.length / 2);
    return true;
  }

  /** Every entry, in no particular order (a snapshot: safe to change the index while iterating it). */
  values(): T[] {
    const out: T[] = [];
    for (const head of this.buckets) for (let t = head; t !== null; t = t.indexNext) out.push(t);
    return out;
  }

  private resize(size: number): void {
    const old = this.buckets;
    this.buckets = new Array<T | null>(size).fill(null);
    this.mask = size - 1;
    for (const head of old) {
      let t = head;
      while (t !== null) {
        const next = t.indexNext;
        const i = t.indexHash & this.mask;
        t.indexNext = this.buckets[i] ?? null;
        this.buckets[i] = t;
        t = next;
      }
    }
  }
}
