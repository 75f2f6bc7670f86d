/**
 * The idempotency window: (flow, tenant, caller's key) → the first trace's id and the request's
 * fingerprint, bounded by count (`max`, the oldest go first) and by age (`ttlMs`).
 *
 * Why not a `Map` keyed by `flow\0tenant\0key` (what it was): with the window full (100,000 keys
 * by default, which a busy flow reaches in seconds) every keyed emit built and flattened a
 * composite key string, then did a lookup, an insert and an eviction in a table far larger than
 * the CPU caches, and kept an entry object, the key and the trace id alive long enough to be
 * promoted out of the young generation (every scavenge copied them twice): a fifth of the whole
 * cost of a message in the flow benchmark. Here nothing of an entry is a JavaScript object:
 *
 * - an entry's text (flow, tenant, key, trace id, fingerprint) is copied into a character arena,
 *   and its other fields sit in typed arrays, all in insertion order (every entry lives `ttlMs`,
 *   so that is expiry order): eviction takes entries from the front in O(1), and the garbage
 *   collector never traces or moves an entry;
 * - entries are found through an open-addressing table (linear probing, load at most one half)
 *   of (32-bit hash, record) pairs, so a miss, the usual case, reads one or two adjacent words
 *   and compares no text; the hash is computed from the parts without concatenating them (the
 *   flow's and the tenant's part is cached for the last pair seen);
 * - the records and the arena are rings: in the steady state (a full window, one eviction per
 *   insert) nothing is ever moved or allocated. A removed entry leaves the table at once
 *   (backward-shift deletion, no tombstones); when a ring fills (many entries deleted behind a
 *   live one, or the window grows) the live entries are copied, in order, into rings grown so
 *   that they fill at most half, so memory stays bounded by `max` whatever mix of inserts and
 *   deletes comes.
 */

/** Records to start with (the table has twice as many slots, the arena 64 characters each). */
const INITIAL_RECORDS = 1024;
const CHARS_PER_RECORD = 64;

/** Per record in `meta`: arena offset, then the lengths of flow, tenant, key, trace id, fingerprint + 1 (0: none). */
const STRIDE = 6;

/** MurmurHash3's 32-bit finaliser. */
function avalanche(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return x ^ (x >>> 16);
}

/** FNV-1a over `s` then a NUL (the separator of the parts), continuing from `h`. */
function fnv(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return Math.imul(h, 0x01000193);
}

const FNV_BASIS = 0x811c9dc5 | 0;

/** See the module comment. */
export class IdempotencyWindow {
  /** Records: a ring of `count` from `head`, oldest first; a removed record has slot -1. */
  private meta: Int32Array;
  private expires: Float64Array;
  /** The table slot of each live record, or -1. */
  private slots: Int32Array;
  private rmask: number;
  private head = 0;
  private count = 0;
  private live = 0;
  /** The records' text, back to back in record order: a ring of `charsUsed` from `charsHead`. */
  private chars: Uint16Array;
  private amask: number;
  private charsHead = 0;
  private charsUsed = 0;
  /** Live records' characters. */
  private liveChars = 0;
  /** Per slot: the hash, then record index + 1 (0: empty). */
  private table: Int32Array;
  private mask: number;
  // The hash of the flow and tenant of the last call: most emits repeat both.
  private lastFlow = '';
  private lastTenant = '';
  private lastScope = fnv(fnv(FNV_BASIS, ''), '');

  /**
   * @param max most entries kept; the oldest go first.
   * @param ttlMs how long an entry lives.
   * @param initialRecords records to make room for at first, a power of two (tests start small).
   */
  constructor(
    readonly max: number,
    readonly ttlMs: number,
    initialRecords = INITIAL_RECORDS,
  ) {
    this.meta = new Int32Array(STRIDE * initialRecords);
    this.expires = new Float64Array(initialRecords);
    this.slots = new Int32Array(initialRecords);
    this.rmask = initialRecords - 1;
    this.chars = new Uint16Array(CHARS_PER_RECORD * initialRecords);
    this.amask = CHARS_PER_RECORD * initialRecords - 1;
    this.table = new Int32Array(2 * 2 * initialRecords);
    this.mask = 2 * initialRecords - 1;
  }

  /** Live entries. */
  get size(): number {
    return this.live;
  }

  /**
   * The record of the live entry for (`flow`, `tenant`, `key`), or -1. Read it with
   * {@link traceIdAt} and {@link fingerprintAt} before the window changes again.
   */
  find(flow: string, tenant: string, key: string, now: number): number {
    const r = this.lookup(flow, tenant, key, this.hash(flow, tenant, key));
    if (r < 0) return -1;
    if (this.expires[r]! <= now) {
      this.sweep(now);
      return -1;
    }
    return r;
  }

  /** The trace id of record `r` (from {@link find}). */
  traceIdAt(r: number): string {
    const m = STRIDE * r;
    const meta = this.meta;
    return this.text(meta[m]! + meta[m + 1]! + meta[m + 2]! + meta[m + 3]!, meta[m + 4]!);
  }

  /** The fingerprint of record `r` (from {@link find}), if its request had one. */
  fingerprintAt(r: number): string | undefined {
    const m = STRIDE * r;
    const meta = this.meta;
    const n = meta[m + 5]!;
    if (n === 0) return undefined;
    return this.text(meta[m]! + meta[m + 1]! + meta[m + 2]! + meta[m + 3]! + meta[m + 4]!, n - 1);
  }

  /** Inserts the entry (re-inserting a key replaces it and gives it a fresh TTL), then evicts. */
  set(flow: string, tenant: string, key: string, traceId: string, fingerprint: string | undefined, now: number): void {
    const h = this.hash(flow, tenant, key);
    const old = this.lookup(flow, tenant, key, h);
    if (old >= 0) this.remove(old);
    const n = flow.length + tenant.length + key.length + traceId.length + (fingerprint === undefined ? 0 : fingerprint.length);
    if (this.count === this.slots.length || this.charsUsed + n > this.chars.length) this.reshape(n);
    if (2 * (this.live + 1) > this.mask + 1) this.rehash(2 * (this.mask + 1)); // load at most one half
    const r = (this.head + this.count++) & this.rmask;
    const m = STRIDE * r;
    const meta = this.meta;
    let at = (this.charsHead + this.charsUsed) & this.amask;
    this.charsUsed += n;
    this.liveChars += n;
    meta[m] = at;
    meta[m + 1] = flow.length;
    meta[m + 2] = tenant.length;
    meta[m + 3] = key.length;
    meta[m + 4] = traceId.length;
    meta[m + 5] = fingerprint === undefined ? 0 : fingerprint.length + 1;
    at = this.put(at, flow);
    at = this.put(at, tenant);
    at = this.put(at, key);
    at = this.put(at, traceId);
    if (fingerprint !== undefined) this.put(at, fingerprint);
    this.expires[r] = now + this.ttlMs;
    this.place(r, h);
    this.live++;
    this.sweep(now);
  }

  /** Removes the entry; false when there was none. */
  delete(flow: string, tenant: string, key: string): boolean {
    const r = this.lookup(flow, tenant, key, this.hash(flow, tenant, key));
    if (r < 0) return false;
    this.remove(r);
    return true;
  }

  /** Evicts expired entries, then the oldest while over the cap. */
  sweep(now: number): void {
    const slots = this.slots;
    while (this.count > 0) {
      const r = this.head;
      if (slots[r]! >= 0) {
        if (this.expires[r]! > now && this.live <= this.max) break;
        this.remove(r);
      }
      const n = this.length(r);
      this.head = (r + 1) & this.rmask;
      this.count--;
      this.charsHead = (this.charsHead + n) & this.amask;
      this.charsUsed -= n;
    }
  }

  clear(): void {
    this.table.fill(0);
    this.head = this.count = this.live = this.charsHead = this.charsUsed = this.liveChars = 0;
  }

  private hash(flow: string, tenant: string, key: string): number {
    if (flow !== this.lastFlow || tenant !== this.lastTenant) {
      this.lastFlow = flow;
      this.lastTenant = tenant;
      this.lastScope = fnv(fnv(FNV_BASIS, flow), tenant);
    }
    return avalanche(fnv(this.lastScope, key));
  }

  private lookup(flow: string, tenant: string, key: string, h: number): number {
    const table = this.table;
    const mask = this.mask;
    for (let i = h & mask; ; i = (i + 1) & mask) {
      const e = table[2 * i + 1]!;
      if (e === 0) return -1;
      if (table[2 * i] === h && this.matches(e - 1, flow, tenant, key)) return e - 1;
    }
  }

  /** True when record `r` is for (`flow`, `tenant`, `key`). */
  private matches(r: number, flow: string, tenant: string, key: string): boolean {
    const m = STRIDE * r;
    const meta = this.meta;
    if (meta[m + 1] !== flow.length || meta[m + 2] !== tenant.length || meta[m + 3] !== key.length) return false;
    const at = meta[m]!;
    return this.same(at, flow) && this.same(at + flow.length, tenant) && this.same(at + flow.length + tenant.length, key);
  }

  private same(at: number, s: string): boolean {
    const chars = this.chars;
    const amask = this.amask;
    for (let i = 0; i < s.length; i++) if (chars[(at + i) & amask] !== s.charCodeAt(i)) return false;
    return true;
  }

  /** Writes `s` at `at` (wrapping round the ring); returns where it ends. */
  private put(at: number, s: string): number {
    const chars = this.chars;
    const amask = this.amask;
    for (let i = 0; i < s.length; i++) chars[(at + i) & amask] = s.charCodeAt(i);
    return (at + s.length) & amask;
  }

  private text(at: number, n: number): string {
    const codes = new Array<number>(n);
    for (let i = 0; i < n; i++) codes[i] = this.chars[(at + i) & this.amask]!;
    let out = '';
    // In pieces: an argument list has a length limit.
    for (let i = 0; i < n; i += 4096) out += String.fromCharCode(...codes.slice(i, i + 4096));
    return out;
  }

  /** Characters of record `r`. */
  private length(r: number): number {
    const m = STRIDE * r;
    const meta = this.meta;
    const fp = meta[m + 5]!;
    return meta[m + 1]! + meta[m + 2]! + meta[m + 3]! + meta[m + 4]! + (fp === 0 ? 0 : fp - 1);
  }

  /** Puts record `r` into the first free slot of its probe sequence. */
  private place(r: number, h: number): void {
    const table = this.table;
    const mask = this.mask;
    let i = h & mask;
    while (table[2 * i + 1] !== 0) i = (i + 1) & mask;
    table[2 * i] = h;
    table[2 * i + 1] = r + 1;
    this.slots[r] = i;
  }

  /** Takes live record `r` out of the table (its place in the rings goes when it reaches the head). */
  private remove(r: number): void {
    const table = this.table;
    const mask = this.mask;
    const slots = this.slots;
    // Backward-shift deletion: later members of the probe run move up into the hole unless
    // their home slot lies (cyclically) after the hole, so no probe ever passes a gap.
    let hole = slots[r]!;
    for (let j = (hole + 1) & mask; ; j = (j + 1) & mask) {
      const e = table[2 * j + 1]!;
      if (e === 0) break;
      const home = table[2 * j]! & mask;
      if (hole <= j ? hole < home && home <= j : hole < home || home <= j) continue;
      table[2 * hole] = table[2 * j]!;
      table[2 * hole + 1] = e;
      slots[e - 1] = hole;
      hole = j;
    }
    table[2 * hole + 1] = 0;
    slots[r] = -1;
    this.live--;
    this.liveChars -= this.length(r);
  }

  /**
   * A ring is full (the next record needs `need` characters): copies the live records and their
   * text, in order, to the front of new rings sized so that they fill at most half of them,
   * and points the table at their new places.
   */
  private reshape(need: number): void {
    let records = this.slots.length;
    while (2 * (this.live + 1) > records) records *= 2;
    let size = this.chars.length;
    while (2 * (this.liveChars + need) > size) size *= 2;
    const meta = new Int32Array(STRIDE * records);
    const expires = new Float64Array(records);
    const slots = new Int32Array(records);
    const chars = new Uint16Array(size);
    let w = 0;
    let c = 0;
    for (let k = 0; k < this.count; k++) {
      const r = (this.head + k) & this.rmask;
      const slot = this.slots[r]!;
      if (slot < 0) continue;
      const m = STRIDE * r;
      const at = this.meta[m]!;
      const n = this.length(r);
      for (let i = 0; i < n; i++) chars[c + i] = this.chars[(at + i) & this.amask]!;
      const mw = STRIDE * w;
      meta[mw] = c;
      for (let f = 1; f < STRIDE; f++) meta[mw + f] = this.meta[m + f]!;
      expires[w] = this.expires[r]!;
      slots[w] = slot;
      this.table[2 * slot + 1] = w + 1;
      w++;
      c += n;
    }
    this.meta = meta;
    this.expires = expires;
    this.slots = slots;
    this.rmask = records - 1;
    this.chars = chars;
    this.amask = size - 1;
    this.head = 0;
    this.count = w;
    this.charsHead = 0;
    this.charsUsed = c;
  }

  /** A table of `slots` slots, holding every live record again. */
  private rehash(slots: number): void {
    const old = this.table;
    this.table = new Int32Array(2 * slots);
    this.mask = slots - 1;
    for (let i = 0; i < old.length; i += 2) if (old[i + 1] !== 0) this.place(old[i + 1]! - 1, old[i]!);
  }
}
