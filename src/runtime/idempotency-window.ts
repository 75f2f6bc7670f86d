/**
 * The idempotency window: (flow, tenant, caller's key) → the first trace's id and the request's
 * fingerprint, bounded by count (`max`, the oldest go first) and by age (`ttlMs`).
 *
 * Why not a `Map` keyed by `flow\0tenant\0key`: with the window full (100,000 keys by default,
 * which a busy flow reaches in seconds) every keyed emit built and flattened a composite key,
 * then did a lookup, an insert and an eviction in a table far larger than the CPU caches, and kept
 * an entry object, the key and the trace id alive long enough to be promoted out of the young
 * generation: a fifth of the whole cost of a message in the flow benchmark. Here nothing of an
 * entry is a JavaScript object, and the memory a new key touches stays small:
 *
 * - Entries are kept in insertion order (every entry lives `ttlMs`, so that is expiry order) in
 *   **generations** of `G` records (about `max / 8`): fields in typed arrays, the key, the trace
 *   id when it is not one this process just made (that one is kept as the time and bits it was
 *   made from) and the fingerprint in a character array; the flow and tenant are one small
 *   number, a scope, shared by the entries of the pair and freed with the last of them.
 * - Each generation has its own open-addressing table (linear probing, load at most one half)
 *   of (32-bit hash, record) pairs, and a Bloom filter word per block of keys (16 bits an entry,
 *   both bits of a key in one word). The filter words of all generations for one block lie side
 *   by side in one array, so a new key, the usual case, reads one or two cache lines to learn
 *   that no generation has it; a table is read only on a filter hit (one in some 50 per
 *   generation). One table the size of the whole window was a cache miss on every lookup and
 *   another on every eviction; a filter array per generation was still a miss per generation in
 *   a flow, whose own data pushes the window out of the caches between two emits.
 * - Eviction takes entries from the front of the oldest generation in O(1) without touching a
 *   table (a removed entry is only marked; lookups skip it), and a generation whose entries are
 *   all gone is recycled whole. A key set again or deleted is marked the same way; when marked
 *   entries pile up (many deletes), the live ones are copied, in order, into fresh generations,
 *   so memory stays bounded by `max` whatever mix of inserts and deletes comes.
 * - The `set` that follows a `find` that missed (every new keyed emit) reuses that miss's hash,
 *   and knows there is no older entry to mark, while the window has not changed in between.
 */

import { formatUuidv7 } from '../envelope/uuid.js';

/**
 * Per record in `meta`: character offset, key length, fingerprint length + 1 (0: none), trace id
 * length (-1: kept as time and bits in `idMs` and `idBits`), scope id, hash. Key, trace id (if as
 * characters) and fingerprint follow each other from the offset.
 */
const STRIDE = 6;
/** Characters a generation starts with per record (it grows when keys are longer). */
const CHARS_PER_RECORD = 16;
/** Generations the window's `max` is split into (more: less memory per step, more filters per lookup). */
const GENERATIONS = 8;
/** Records a generation has at most (2 ** 17): a huge window has more generations instead of larger ones. */
const MAX_GENERATION_SHIFT = 17;

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
  /** Its live entries. */
  refs: number;
}

/** Up to `G` records in insertion order, with their table (their filter words are the window's, in their column). */
class Generation {
  readonly meta: Int32Array;
  readonly idMs: Float64Array;
  readonly idBits: Int32Array;
  readonly expires: Float64Array;
  /** 1 while a record is live. */
  readonly live: Uint8Array;
  chars: Uint16Array;
  charsUsed = 0;
  /** Records appended (live or not). */
  count = 0;
  /** Per slot: the hash, then record index + 1 (0: empty). */
  readonly table: Int32Array;
  readonly mask: number;
  /** Its column in the window's filter while it is one of the window's generations, else -1. */
  column = -1;

  constructor(readonly size: number) {
    this.meta = new Int32Array(STRIDE * size);
    this.idMs = new Float64Array(size);
    this.idBits = new Int32Array(3 * size);
    this.expires = new Float64Array(size);
    this.live = new Uint8Array(size);
    this.chars = new Uint16Array(CHARS_PER_RECORD * size);
    this.table = new Int32Array(2 * 2 * size);
    this.mask = 2 * size - 1;
  }

  /** Empties it for reuse. */
  reset(): void {
    this.count = 0;
    this.charsUsed = 0;
    this.table.fill(0);
    this.live.fill(0);
  }

  /** The live record for (`scopeId`, `key`) with hash `h`, or -1. */
  lookup(scopeId: number, key: string, h: number): number {
    const table = this.table;
    const mask = this.mask;
    for (let i = h & mask; ; i = (i + 1) & mask) {
      const e = table[2 * i + 1]!;
      if (e === 0) return -1;
      if (table[2 * i] === h && this.live[e - 1] === 1 && this.matches(e - 1, scopeId, key)) return e - 1;
    }
  }

  private matches(r: number, scopeId: number, key: string): boolean {
    const m = STRIDE * r;
    const meta = this.meta;
    if (meta[m + 4] !== scopeId || meta[m + 1] !== key.length) return false;
    const at = meta[m]!;
    const chars = this.chars;
    for (let i = 0; i < key.length; i++) if (chars[at + i] !== key.charCodeAt(i)) return false;
    return true;
  }

  /** Appends a record (room checked by the caller) with `n` characters; returns its index. */
  append(h: number, scopeId: number, n: number): number {
    if (this.charsUsed + n > this.chars.length) {
      let size = this.chars.length;
      while (this.charsUsed + n > size) size *= 2;
      const chars = new Uint16Array(size);
      chars.set(this.chars.subarray(0, this.charsUsed));
      this.chars = chars;
    }
    const r = this.count++;
    const m = STRIDE * r;
    this.meta[m] = this.charsUsed;
    this.meta[m + 4] = scopeId;
    this.meta[m + 5] = h;
    this.charsUsed += n;
    this.live[r] = 1;
    const table = this.table;
    const mask = this.mask;
    let i = h & mask;
    while (table[2 * i + 1] !== 0) i = (i + 1) & mask;
    table[2 * i] = h;
    table[2 * i + 1] = r + 1;
    return r;
  }

  put(at: number, s: string): number {
    const chars = this.chars;
    for (let i = 0; i < s.length; i++) chars[at + i] = s.charCodeAt(i);
    return at + s.length;
  }

  text(at: number, n: number): string {
    let out = '';
    // In pieces: an argument list has a length limit.
    for (let i = 0; i < n; i += 4096) out += String.fromCharCode(...this.chars.subarray(at + i, at + Math.min(n, i + 4096)));
    return out;
  }

  /** Characters of record `r`. */
  length(r: number): number {
    const m = STRIDE * r;
    const meta = this.meta;
    const fp = meta[m + 2]!;
    return meta[m + 1]! + Math.max(0, meta[m + 3]!) + (fp === 0 ? 0 : fp - 1);
  }
}

/** The two filter bits of hash `h` in its word. */
function bloomBits(h: number): number {
  return (1 << (h & 31)) | (1 << ((h >>> 5) & 31));
}

/** See the module comment. */
export class IdempotencyWindow {
  /** Records per generation: 2 ** genShift. A handle is generation index << genShift | record. */
  private readonly genShift: number;
  private readonly genSize: number;
  /** Most generations at once; one more is made only after the live entries are compacted. */
  private readonly maxGenerations: number;
  /**
   * The generations' Bloom filters: block `b`'s word for the generation in column `c` is at
   * `b * maxGenerations + c`. A generation takes a free column (cleared) when it joins `gens`
   * and gives it back when it leaves.
   */
  private filter: Int32Array = new Int32Array(0); // made with the first generation: a window never used costs nothing
  private readonly filterMask: number;
  private freeColumns: number[];
  /** Oldest first; the last takes the inserts. */
  private gens: Generation[] = [];
  /**
   * Emptied generations kept for reuse (allocating one costs far more than emptying it): a full
   * window recycles one every `genSize` inserts; a compaction returns all it copied from. At most
   * `maxGenerations`.
   */
  private spares: Generation[] = [];
  /** Records of the oldest generation before this one are gone. */
  private cursor = 0;
  private liveCount = 0;
  /** Scopes by flow, then tenant; by id; free ids. */
  private readonly scopes = new Map<string, Map<string, Scope>>();
  private scopeById: (Scope | undefined)[] = [];
  private freeScopeIds: number[] = [];
  /** The scope of the last call: most emits repeat both flow and tenant. */
  private lastScope: Scope | null = null;
  /** Bumped by every change: a remembered miss holds only while it is unchanged. */
  private version = 0;
  /** The last miss of {@link find}: its key, scope and hash, and the version it saw. */
  private missKey: string | null = null;
  private missScope: Scope | null = null;
  private missHash = 0;
  private missVersion = -1;

  /**
   * @param max most entries kept; the oldest go first.
   * @param ttlMs how long an entry lives.
   */
  constructor(
    readonly max: number,
    readonly ttlMs: number,
  ) {
    let shift = 2;
    while (2 ** shift * GENERATIONS < max && shift < MAX_GENERATION_SHIFT) shift++;
    const g = 2 ** shift;
    this.genShift = shift;
    this.genSize = g;
    this.maxGenerations = Math.ceil(max / g) + 2;
    const blocks = Math.max(1, g >>> 1); // 16 bits a record
    this.filterMask = blocks - 1;
    this.freeColumns = Array.from({ length: this.maxGenerations }, (_, i) => this.maxGenerations - 1 - i);
  }

  /** Live entries. */
  get size(): number {
    return this.liveCount;
  }

  /** @internal typed-array elements held (for tests of boundedness). */
  get footprint(): number {
    let n = 0;
    for (const g of [...this.gens, ...this.spares]) {
      n += g.meta.length + g.idMs.length + g.idBits.length + g.expires.length + g.live.length + g.chars.length + g.table.length;
    }
    return n + this.filter.length;
  }

  /**
   * A handle on the live entry for (`flow`, `tenant`, `key`), or -1. Read it with
   * {@link traceIdAt} and {@link fingerprintAt} before the window changes again.
   */
  find(flow: string, tenant: string, key: string, now: number): number {
    const scope = this.scope(flow, tenant, false);
    if (scope === null) return -1;
    const h = hashOf(scope, key);
    const found = this.locate(scope.id, key, h);
    if (found < 0) {
      this.missKey = key;
      this.missScope = scope;
      this.missHash = h;
      this.missVersion = this.version;
      return -1;
    }
    if (this.gens[found >>> this.genShift]!.expires[found & (this.genSize - 1)]! <= now) {
      this.sweep(now);
      return -1;
    }
    return found;
  }

  /** The trace id of the entry `handle` (from {@link find}). */
  traceIdAt(handle: number): string {
    const gen = this.gens[handle >>> this.genShift]!;
    const r = handle & (this.genSize - 1);
    const m = STRIDE * r;
    const meta = gen.meta;
    const n = meta[m + 3]!;
    if (n >= 0) return gen.text(meta[m]! + meta[m + 1]!, n);
    const bits = gen.idBits;
    return formatUuidv7(gen.idMs[r]!, bits[3 * r]!, bits[3 * r + 1]!, bits[3 * r + 2]!);
  }

  /** The fingerprint of the entry `handle` (from {@link find}), if its request had one. */
  fingerprintAt(handle: number): string | undefined {
    const gen = this.gens[handle >>> this.genShift]!;
    const m = STRIDE * (handle & (this.genSize - 1));
    const meta = gen.meta;
    const n = meta[m + 2]!;
    if (n === 0) return undefined;
    return gen.text(meta[m]! + meta[m + 1]! + Math.max(0, meta[m + 3]!), n - 1);
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
    // Counted first: the old entry of this key may be the scope's last, and marking it gone
    // below must not free the scope the new entry goes into.
    scope.refs++;
    let h: number;
    if (this.missVersion === this.version && this.missKey === key && this.missScope === scope) {
      h = this.missHash; // `find` just missed this key and nothing changed since: no old entry
    } else {
      h = hashOf(scope, key);
      const old = this.locate(scope.id, key, h);
      if (old >= 0) this.kill(this.gens[old >>> this.genShift]!, old & (this.genSize - 1));
    }
    this.missKey = null;
    this.missScope = null;
    this.version++;
    const asBits = idMs >= 0;
    const fpLength = fingerprint === undefined ? 0 : fingerprint.length;
    const n = key.length + (asBits ? 0 : traceId.length) + fpLength;
    const gen = this.current();
    const r = this.append(gen, h, scope.id, n);
    const m = STRIDE * r;
    const meta = gen.meta;
    meta[m + 1] = key.length;
    meta[m + 2] = fingerprint === undefined ? 0 : fpLength + 1;
    meta[m + 3] = asBits ? -1 : traceId.length;
    if (asBits) {
      gen.idMs[r] = idMs;
      const bits = gen.idBits;
      bits[3 * r] = idA;
      bits[3 * r + 1] = idB;
      bits[3 * r + 2] = idC;
    }
    let at = gen.put(meta[m]!, key);
    if (!asBits) at = gen.put(at, traceId);
    if (fingerprint !== undefined) gen.put(at, fingerprint);
    gen.expires[r] = now + this.ttlMs;
    this.liveCount++;
    this.sweep(now);
  }

  /** Removes the entry; false when there was none. */
  delete(flow: string, tenant: string, key: string): boolean {
    const scope = this.scope(flow, tenant, false);
    if (scope === null) return false;
    const found = this.locate(scope.id, key, hashOf(scope, key));
    if (found < 0) return false;
    this.kill(this.gens[found >>> this.genShift]!, found & (this.genSize - 1));
    return true;
  }

  /** Evicts expired entries, then the oldest while over the cap. */
  sweep(now: number): void {
    while (this.gens.length > 0) {
      const gen = this.gens[0]!;
      if (this.cursor === gen.count) {
        if (this.gens.length === 1) {
          if (gen.count > 0 && this.liveCount === 0) this.recycle(); // empty: start it again
          return;
        }
        this.recycle();
        continue;
      }
      const r = this.cursor;
      if (gen.live[r] === 1) {
        if (gen.expires[r]! > now && this.liveCount <= this.max) return;
        this.kill(gen, r);
      }
      this.cursor++;
    }
  }

  /** The live entry for (`scopeId`, `key`) with hash `h`, newest generation first, as a handle; or -1. */
  private locate(scopeId: number, key: string, h: number): number {
    const gens = this.gens;
    const filter = this.filter;
    const base = ((h >>> 16) & this.filterMask) * this.maxGenerations;
    const bits = bloomBits(h);
    for (let g = gens.length - 1; g >= 0; g--) {
      const gen = gens[g]!;
      if ((filter[base + gen.column]! & bits) !== bits) continue;
      const r = gen.lookup(scopeId, key, h);
      if (r >= 0) return (g << this.genShift) | r;
    }
    return -1;
  }

  /** Appends a record to `gen` (see {@link Generation.append}) and adds its hash to the filter. */
  private append(gen: Generation, h: number, scopeId: number, n: number): number {
    this.filter[((h >>> 16) & this.filterMask) * this.maxGenerations + gen.column]! |= bloomBits(h);
    return gen.append(h, scopeId, n);
  }

  /** Marks record `r` of `gen` gone. */
  private kill(gen: Generation, r: number): void {
    gen.live[r] = 0;
    this.liveCount--;
    this.version++;
    this.unref(gen.meta[STRIDE * r + 4]!);
  }

  /** The generation that takes the next insert: the newest, or a new one when it is full. */
  private current(): Generation {
    const last = this.gens[this.gens.length - 1];
    if (last !== undefined && last.count < last.size) return last;
    if (this.gens.length >= this.maxGenerations) {
      this.compact();
      const after = this.gens[this.gens.length - 1];
      if (after !== undefined && after.count < after.size) return after;
    }
    return this.fresh();
  }

  private fresh(): Generation {
    const spare = this.spares.pop();
    if (spare !== undefined) spare.reset();
    const gen = spare ?? new Generation(this.genSize);
    const column = this.freeColumns.pop()!; // gens never outnumber the columns (see `current`, `compact`)
    if (this.filter.length === 0) this.filter = new Int32Array((this.filterMask + 1) * this.maxGenerations);
    const filter = this.filter;
    const stride = this.maxGenerations;
    for (let i = column; i < filter.length; i += stride) filter[i] = 0;
    gen.column = column;
    this.gens.push(gen);
    return gen;
  }

  /** The oldest generation is used up: it goes (kept as a spare). */
  private recycle(): void {
    this.spare(this.gens.shift()!);
    this.cursor = 0;
  }

  /** `gen` is no longer one of `gens`: its column is free, and it is kept for reuse. */
  private spare(gen: Generation): void {
    this.releaseColumn(gen);
    if (this.spares.length < this.maxGenerations) this.spares.push(gen);
  }

  private releaseColumn(gen: Generation): void {
    if (gen.column >= 0) this.freeColumns.push(gen.column);
    gen.column = -1;
  }

  /**
   * Marked records fill whole generations (deletes, or keys set again): copies the live
   * records, in order, into fresh generations and drops the old ones.
   */
  private compact(): void {
    const old = this.gens;
    const start = this.cursor;
    // The old generations are only read from here on (no lookups): their columns go to the new
    // ones, which are never more than the old (the live records, packed).
    for (const gen of old) this.releaseColumn(gen);
    this.gens = [];
    this.cursor = 0;
    this.version++;
    for (let g = 0; g < old.length; g++) {
      const from = old[g]!;
      for (let r = g === 0 ? start : 0; r < from.count; r++) {
        if (from.live[r] !== 1) continue;
        const last = this.gens[this.gens.length - 1];
        const to = last !== undefined && last.count < last.size ? last : this.fresh();
        const m = STRIDE * r;
        const n = from.length(r);
        const w = this.append(to, from.meta[m + 5]!, from.meta[m + 4]!, n);
        const mw = STRIDE * w;
        to.meta[mw + 1] = from.meta[m + 1]!;
        to.meta[mw + 2] = from.meta[m + 2]!;
        to.meta[mw + 3] = from.meta[m + 3]!;
        const src = from.meta[m]!;
        const dst = to.meta[mw]!;
        for (let i = 0; i < n; i++) to.chars[dst + i] = from.chars[src + i]!;
        to.idMs[w] = from.idMs[r]!;
        for (let f = 0; f < 3; f++) to.idBits[3 * w + f] = from.idBits[3 * r + f]!;
        to.expires[w] = from.expires[r]!;
      }
    }
    for (const gen of old) this.spare(gen);
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

  /** A live entry of scope `id` is gone: the scope goes with its last one. */
  private unref(id: number): void {
    const scope = this.scopeById[id]!;
    if (--scope.refs === 0) {
      const byTenant = this.scopes.get(scope.flow)!;
      byTenant.delete(scope.tenant);
      if (byTenant.size === 0) this.scopes.delete(scope.flow);
      this.scopeById[scope.id] = undefined;
      this.freeScopeIds.push(scope.id);
      if (this.lastScope === scope) this.lastScope = null;
    }
  }
}

/** The table hash of `key` in `scope`. */
function hashOf(scope: Scope, key: string): number {
  let h = scope.seed;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return avalanche(h);
}
