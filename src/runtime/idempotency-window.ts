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
 * - an entry's fields sit in typed arrays in insertion order (every entry lives `ttlMs`, so that
 *   is expiry order): eviction takes entries from the front in O(1), and the garbage collector
 *   never traces or moves an entry. The key (and a fingerprint) is copied into a character ring;
 *   a trace id the flow has just made is kept as the time and bits it was made from (any other
 *   as characters: parsing one cost as much as the rest of an insert); the flow and tenant are
 *   one small number, a scope, shared by the entries of the pair and freed with the last of them. So an entry takes some 50 bytes plus its key: the memory an entry
 *   touches is what the window costs once the caches are full of other work.
 * - entries are found through an open-addressing table (linear probing, load at most one half)
 *   of (32-bit hash, record) pairs, so a miss, the usual case, reads one or two adjacent words
 *   and compares no text; the hash is of the scope and the key, never of a concatenation. The
 *   `set` that follows a `find` that missed (every new keyed emit) reuses that miss's hash and
 *   the free slot its probe ended on, when the table has not changed in between.
 * - the records and the character ring are rings: in the steady state (a full window, one
 *   eviction per insert) nothing is moved or allocated. A removed entry leaves the table at once
 *   (backward-shift deletion, no tombstones); when a ring fills (many entries deleted behind a
 *   live one, or the window grows) the live entries are copied, in order, into rings grown so
 *   that they fill at most three quarters, so memory stays bounded by `max` whatever mix of inserts and
 *   deletes comes.
 */

import { formatUuidv7 } from '../envelope/uuid.js';

/** Records to start with (the table has twice as many slots, the character ring 16 each). */
const INITIAL_RECORDS = 1024;
const CHARS_PER_RECORD = 16;

/**
 * Per record in `meta`: character offset, key length, fingerprint length + 1 (0: none), trace id
 * length (-1: kept as time and bits in `idMs` and `idBits`), scope id. Key, trace id (if as
 * characters) and fingerprint follow each other from the offset.
 */
const STRIDE = 5;

/** MurmurHash3's 32-bit finaliser. */
function avalanche(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return x ^ (x >>> 16);
}

/** A (flow, tenant) pair with entries in the window. */
interface Scope {
  readonly id: number;
  readonly flow: string;
  readonly tenant: string;
  /** Its hash, the seed of its entries' hashes. */
  readonly seed: number;
  /** Its entries in the window (records, live or not yet reached by the head). */
  refs: number;
}

/** See the module comment. */
export class IdempotencyWindow {
  /** Records: a ring of `count` from `head`, oldest first; a removed record has slot -1. */
  private meta: Int32Array;
  /** The time and `IdBits` (see `uuid.ts`) of each record's trace id (when its `meta` length is -1). */
  private idMs: Float64Array;
  private idBits: Int32Array;
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
  /** Scopes by flow, then tenant; by id; free ids. */
  private readonly scopes = new Map<string, Map<string, Scope>>();
  private scopeById: (Scope | undefined)[] = [];
  private freeScopeIds: number[] = [];
  /** The scope of the last call: most emits repeat both flow and tenant. */
  private lastScope: Scope | null = null;
  /** Bumped by every change of the table: a remembered miss holds only while it is unchanged. */
  private version = 0;
  /**
   * The last miss of {@link find}: its key, scope, hash and the free slot its probe ended on. The
   * `set` that follows a miss (every new keyed emit) puts its entry there without hashing the
   * key and probing again.
   */
  private missKey: string | null = null;
  private missScope: Scope | null = null;
  private missHash = 0;
  private missSlot = -1;
  private missVersion = -1;

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
    this.idMs = new Float64Array(initialRecords);
    this.idBits = new Int32Array(3 * initialRecords);
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
    const scope = this.scope(flow, tenant, false);
    if (scope === null) return -1;
    const h = hashOf(scope, key);
    const r = this.lookup(scope.id, key, h);
    if (r < 0) {
      this.missKey = key;
      this.missScope = scope;
      this.missHash = h;
      this.missSlot = this.probeEnd;
      this.missVersion = this.version;
      return -1;
    }
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
    const n = meta[m + 3]!;
    if (n >= 0) return this.text(meta[m]! + meta[m + 1]!, n);
    const bits = this.idBits;
    return formatUuidv7(this.idMs[r]!, bits[3 * r]!, bits[3 * r + 1]!, bits[3 * r + 2]!);
  }

  /** The fingerprint of record `r` (from {@link find}), if its request had one. */
  fingerprintAt(r: number): string | undefined {
    const m = STRIDE * r;
    const meta = this.meta;
    const n = meta[m + 2]!;
    if (n === 0) return undefined;
    return this.text(meta[m]! + meta[m + 1]! + Math.max(0, meta[m + 3]!), n - 1);
  }

  /**
   * Inserts the entry (re-inserting a key replaces it and gives it a fresh TTL), then evicts.
   * `idMs` ≥ 0 says that `traceId` is the UUIDv7 that `uuidv7` made at that time with the bits
   * `idA`, `idB`, `idC` (`IdBits`, see `uuid.ts`): it is kept as those and made again on a hit.
   */
  set(
    flow: string,
    tenant: string,
    key: string,
    traceId: string,
    fingerprint: string | undefined,
    now: number,
    idMs = -1,
    idA = 0,
    idB = 0,
    idC = 0,
  ): void {
    const scope = this.scope(flow, tenant, true)!;
    // Counted first: the scope's last record may be the old entry of this key, removed below, and
    // a reshape that drops it must not free the scope the new record goes into.
    scope.refs++;
    let h: number;
    let slot = -1;
    if (this.missVersion === this.version && this.missKey === key && this.missScope === scope) {
      // `find` just missed this key and the table has not changed since: no old entry, and the
      // new one goes where that probe ended.
      h = this.missHash;
      slot = this.missSlot;
    } else {
      h = hashOf(scope, key);
      const old = this.lookup(scope.id, key, h);
      if (old >= 0) this.remove(old);
    }
    this.missKey = null;
    this.missScope = null;
    const asBits = idMs >= 0;
    const n = key.length + (asBits ? 0 : traceId.length) + (fingerprint === undefined ? 0 : fingerprint.length);
    if (this.count === this.slots.length || this.charsUsed + n > this.chars.length) this.reshape(n);
    const r = (this.head + this.count++) & this.rmask;
    const m = STRIDE * r;
    const meta = this.meta;
    let at = (this.charsHead + this.charsUsed) & this.amask;
    meta[m] = at;
    meta[m + 1] = key.length;
    meta[m + 2] = fingerprint === undefined ? 0 : fingerprint.length + 1;
    meta[m + 3] = asBits ? -1 : traceId.length;
    meta[m + 4] = scope.id;
    if (asBits) {
      this.idMs[r] = idMs;
      const bits = this.idBits;
      bits[3 * r] = idA;
      bits[3 * r + 1] = idB;
      bits[3 * r + 2] = idC;
    }
    this.charsUsed += n;
    this.liveChars += n;
    at = this.put(at, key);
    if (!asBits) at = this.put(at, traceId);
    if (fingerprint !== undefined) this.put(at, fingerprint);
    this.expires[r] = now + this.ttlMs;
    if (2 * (this.live + 1) > this.mask + 1) {
      this.rehash(2 * (this.mask + 1)); // load at most one half
      slot = -1;
    }
    this.place(r, h, slot);
    this.live++;
    this.sweep(now);
  }

  /** Removes the entry; false when there was none. */
  delete(flow: string, tenant: string, key: string): boolean {
    const scope = this.scope(flow, tenant, false);
    if (scope === null) return false;
    const r = this.lookup(scope.id, key, hashOf(scope, key));
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
      this.drop(r);
    }
  }

  clear(): void {
    while (this.count > 0) {
      const r = this.head;
      if (this.slots[r]! >= 0) this.remove(r);
      this.drop(r);
    }
  }

  /** The scope of (`flow`, `tenant`); made when `make`, else null when it has no entries. */
  private scope(flow: string, tenant: string, make: boolean): Scope | null {
    const last = this.lastScope;
    if (last !== null && last.flow === flow && last.tenant === tenant && last.refs > 0) return last;
    let byTenant = this.scopes.get(flow);
    let scope = byTenant?.get(tenant);
    if (scope === undefined) {
      if (!make) return null;
      if (byTenant === undefined) this.scopes.set(flow, (byTenant = new Map<string, Scope>()));
      const id = this.freeScopeIds.pop() ?? this.scopeById.length;
      let seed = 0x811c9dc5 | 0;
      for (let i = 0; i < flow.length; i++) seed = Math.imul(seed ^ flow.charCodeAt(i), 0x01000193);
      seed = Math.imul(seed, 0x01000193); // a NUL between the two
      for (let i = 0; i < tenant.length; i++) seed = Math.imul(seed ^ tenant.charCodeAt(i), 0x01000193);
      scope = { id, flow, tenant, seed, refs: 0 };
      byTenant.set(tenant, scope);
      this.scopeById[id] = scope;
    }
    this.lastScope = scope;
    return scope;
  }

  /** Where the last {@link lookup} that found nothing ended: the first free slot of its probe. */
  private probeEnd = -1;

  private lookup(scopeId: number, key: string, h: number): number {
    const table = this.table;
    const mask = this.mask;
    for (let i = h & mask; ; i = (i + 1) & mask) {
      const e = table[2 * i + 1]!;
      if (e === 0) {
        this.probeEnd = i;
        return -1;
      }
      if (table[2 * i] === h && this.matches(e - 1, scopeId, key)) return e - 1;
    }
  }

  /** True when record `r` is for (`scopeId`, `key`). */
  private matches(r: number, scopeId: number, key: string): boolean {
    const m = STRIDE * r;
    const meta = this.meta;
    if (meta[m + 4] !== scopeId || meta[m + 1] !== key.length) return false;
    const at = meta[m]!;
    const chars = this.chars;
    const amask = this.amask;
    for (let i = 0; i < key.length; i++) if (chars[(at + i) & amask] !== key.charCodeAt(i)) return false;
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
    const fp = meta[m + 2]!;
    return meta[m + 1]! + Math.max(0, meta[m + 3]!) + (fp === 0 ? 0 : fp - 1);
  }

  /** Puts record `r` into the first free slot of its probe sequence (`at` when known, else -1). */
  private place(r: number, h: number, at = -1): void {
    const table = this.table;
    const mask = this.mask;
    let i = at;
    if (i < 0) {
      i = h & mask;
      while (table[2 * i + 1] !== 0) i = (i + 1) & mask;
    }
    this.version++;
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
    this.version++;
    slots[r] = -1;
    this.live--;
    this.liveChars -= this.length(r);
  }

  /** Drops the head record (removed from the table already) from the rings, and its scope's count. */
  private drop(r: number): void {
    const n = this.length(r);
    this.head = (r + 1) & this.rmask;
    this.count--;
    this.charsHead = (this.charsHead + n) & this.amask;
    this.charsUsed -= n;
    this.unref(r);
  }

  /**
   * A ring is full (the next record needs `need` characters): copies the live records and their
   * text, in order, to the front of new rings sized so that they fill at most three quarters of
   * them (a full default window of 100,000 then fits 131,072 records, and a ring that fills
   * again has a quarter of its records to evict or delete first), and points the table at their
   * new places.
   */
  private reshape(need: number): void {
    let records = this.slots.length;
    while (4 * (this.live + 1) > 3 * records) records *= 2;
    let size = this.chars.length;
    while (4 * (this.liveChars + need) > 3 * size) size *= 2;
    const meta = new Int32Array(STRIDE * records);
    const idMs = new Float64Array(records);
    const idBits = new Int32Array(3 * records);
    const expires = new Float64Array(records);
    const slots = new Int32Array(records);
    const chars = new Uint16Array(size);
    let w = 0;
    let c = 0;
    for (let k = 0; k < this.count; k++) {
      const r = (this.head + k) & this.rmask;
      const slot = this.slots[r]!;
      if (slot < 0) {
        this.unref(r);
        continue;
      }
      const m = STRIDE * r;
      const n = this.length(r);
      const at = this.meta[m]!;
      for (let i = 0; i < n; i++) chars[c + i] = this.chars[(at + i) & this.amask]!;
      const mw = STRIDE * w;
      meta[mw] = c;
      for (let f = 1; f < STRIDE; f++) meta[mw + f] = this.meta[m + f]!;
      idMs[w] = this.idMs[r]!;
      for (let f = 0; f < 3; f++) idBits[3 * w + f] = this.idBits[3 * r + f]!;
      expires[w] = this.expires[r]!;
      slots[w] = slot;
      this.table[2 * slot + 1] = w + 1;
      w++;
      c += n;
    }
    this.meta = meta;
    this.idMs = idMs;
    this.idBits = idBits;
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

  /** Record `r` leaves the rings: its scope loses it, and goes with its last record. */
  private unref(r: number): void {
    const scope = this.scopeById[this.meta[STRIDE * r + 4]!]!;
    if (--scope.refs === 0) {
      const byTenant = this.scopes.get(scope.flow)!;
      byTenant.delete(scope.tenant);
      if (byTenant.size === 0) this.scopes.delete(scope.flow);
      this.scopeById[scope.id] = undefined;
      this.freeScopeIds.push(scope.id);
      if (this.lastScope === scope) this.lastScope = null;
    }
  }

  /** A table of `slots` slots, holding every live record again. */
  private rehash(slots: number): void {
    const old = this.table;
    this.version++;
    this.table = new Int32Array(2 * slots);
    this.mask = slots - 1;
    for (let i = 0; i < old.length; i += 2) if (old[i + 1] !== 0) this.place(old[i + 1]! - 1, old[i]!);
  }
}

/** The table hash of `key` in `scope`. */
function hashOf(scope: Scope, key: string): number {
  let h = scope.seed;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return avalanche(h);
}

