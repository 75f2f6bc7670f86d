/**
 * UUIDv7 (RFC 9562): a 48-bit Unix-millisecond timestamp, then randomness, so ids sort by time.
 *
 * Ids made by one process are strictly increasing (RFC 9562 §6.2, method 2, "monotonic
 * random"): at the first id of each millisecond `rand_a` and `rand_b` are drawn at random, and
 * later ids of that millisecond add one to the low 48 bits of `rand_b`, which start in their
 * lower half (47 random bits), so they cannot run out within a millisecond; if they ever did, the
 * timestamp would borrow the next millisecond. A first id carries 73 random bits; ids of one
 * millisecond are as guessable from each other as any counter (they are not secrets).
 *
 * Ids are made on every hop of every message, so making one costs one string concatenation: the
 * first 33 characters are kept as a string and rebuilt once per millisecond (or every 4,096 ids),
 * and the last three hex digits come from a table. (Writing 36 bytes into a buffer and decoding
 * it, or joining a dozen pieces, cost several times more.)
 */
import { randomFillSync } from 'node:crypto';

/** 0 … 4095 as three lower-case hex digits. */
const HEX3: readonly string[] = Array.from({ length: 4096 }, (_, i) => i.toString(16).padStart(3, '0'));
/** 0 … 255 as two. */
const HEX2: readonly string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Random bytes for the first id of each millisecond, refilled one system call per 6,553 ms. */
const pool = new Uint8Array(64 * 1024);
let offset = pool.length;

const MAX_MS = 2 ** 48 - 1; // 48 bits of milliseconds
const COUNTER_HI = 2 ** 36; // the counter's upper 36 bits (9 hex digits in `head`)
let lastMs = -1;
/** "tttttttt-tttt-7aaa-vbbb-": time, version, rand_a and the top 14 bits of rand_b. */
let fixed = '';
/** `fixed` and the counter's upper 36 bits: all but the last three hex digits of the next id. */
let head = '';
let hi = 0;
let lo = 0;
/** rand_a and the top 14 bits of rand_b of this millisecond's ids (see {@link IdBits}). */
let bitsA = 0;
/** The counter's upper 24 bits (changes every 4,096 ids). */
let bitsB = 0;

function randomBytes(n: number): number {
  if (offset + n > pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  const o = offset;
  offset += n;
  return o;
}

/** Starts millisecond `ms`: fresh random bits and a counter in the lower half of its range. */
function startMs(ms: number): void {
  lastMs = ms;
  const p = pool;
  const o = randomBytes(11);
  // The 48-bit time as 12 hex digits, from two 24-bit halves (no number-to-string conversion).
  const t1 = Math.floor(ms / 2 ** 24);
  const t0 = ms % 2 ** 24;
  const randA = (p[o]! << 4) | (p[o + 1]! >> 4); // 12 bits
  const randB = 0x8000 | ((p[o + 2]! & 0x3f) << 8) | p[o + 3]!; // the variant 10, then 14 bits
  fixed =
    HEX2[t1 >> 16]! + HEX2[(t1 >> 8) & 255]! + HEX2[t1 & 255]! + HEX2[t0 >> 16]! + '-' + HEX2[(t0 >> 8) & 255]! + HEX2[t0 & 255]! +
    '-7' + HEX3[randA]! + '-' + HEX2[randB >> 8]! + HEX2[randB & 255]! + '-';
  bitsA = (randA << 14) | (randB & 0x3fff);
  // 47 random bits: 35 for the upper part (below 2^35, the lower half), 12 for the lower.
  hi = (p[o + 4]! & 0x07) * 2 ** 32 + (((p[o + 5]! << 24) | (p[o + 6]! << 16) | (p[o + 7]! << 8) | p[o + 8]!) >>> 0);
  lo = (p[o + 9]! << 4) | (p[o + 10]! >> 4);
  setHead();
}

function setHead(): void {
  bitsB = Math.floor(hi / 4096);
  head = fixed + HEX3[Math.floor(hi / 2 ** 24)]! + HEX3[Math.floor(hi / 4096) % 4096]! + HEX3[hi % 4096]!;
  // Reading a character flattens the concatenation once here, rather than in every id made from it.
  head.charCodeAt(0);
}

/** A new UUIDv7 string in lower-case hex, later than every id this process made before. */
export function uuidv7(now: number = Date.now()): string {
  // A fractional or out-of-range time would corrupt the hex prefix of every later id.
  now = Math.floor(now);
  if (!(now >= 0 && now <= MAX_MS)) now = Date.now();
  if (now > lastMs) startMs(now);
  else if (++lo === 4096) {
    lo = 0;
    if (++hi === COUNTER_HI) startMs(lastMs + 1);
    else setHead();
  }
  lastIdBits.a = bitsA;
  lastIdBits.b = bitsB;
  lastIdBits.c = (hi % 4096) * 4096 + lo;
  return head + HEX3[lo]!;
}

/**
 * The 74 bits of a UUIDv7 after its version, as three integers: `a`, rand_a (12 bits) then the
 * 14 free bits of rand_b's first group; `b` and `c`, the next 24 bits each (the id's last twelve
 * hex digits). What derived ids are made from, so that deriving one reads no string.
 */
export interface IdBits {
  a: number;
  b: number;
  c: number;
}

/** The bits of the id the last {@link uuidv7} or {@link deriveId} call made (read them at once). */
export const lastIdBits: IdBits = { a: 0, b: 0, c: 0 };

/** The {@link IdBits} of any UUIDv7 string (for ids made elsewhere, or read back from a journal). */
export function idBits(id: string, into: IdBits = { a: 0, b: 0, c: 0 }): IdBits {
  into.a = (parseInt(id.slice(15, 18), 16) << 14) | (parseInt(id.slice(19, 23), 16) & 0x3fff);
  into.b = parseInt(id.slice(24, 30), 16);
  into.c = parseInt(id.slice(30, 36), 16);
  return into;
}

/** MurmurHash3's 32-bit finaliser: every input bit affects every output bit. */
function avalanche(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** A 32-bit hash of a string (FNV-1a, finalised): a send's place, hashed once per edge. */
export function saltHash(salt: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < salt.length; i++) h = Math.imul(h ^ salt.charCodeAt(i), 0x01000193);
  return avalanche(h);
}

/**
 * A UUIDv7 derived from a parent id (its first 13 characters, the time, and its {@link IdBits}
 * `pa`, `pb`, `pc`) and a salt (`salt`, a {@link saltHash}, and `n`): the parent's time, then 74 bits mixed from
 * the parent's 74, the salt and `n` by multiply-xor rounds with Murmur's finaliser. The same
 * inputs give the same id. Not cryptographic (nothing here is secret or chosen by an adversary);
 * ids of different inputs collide about as often as random 74-bit values would. Sets
 * {@link lastIdBits} to the new id's bits.
 */
export function deriveId(parentTime: string, pa: number, pb: number, pc: number, salt: number, n: number): string {
  // Two rounds over four words (the parent's three, the salt with n): after them every output
  // bit depends on every input bit (ids made in one millisecond share pa and pb, so a mix in
  // which pc reached only the last word would leave 24 bits to tell their children apart).
  let h0 = pa;
  let h1 = pb;
  let h2 = pc;
  let h3 = salt ^ Math.imul(n + 1, 0x9e3779b1);
  for (let round = 0; round < 2; round++) {
    h0 = avalanche(h0 ^ Math.imul(h3, 0x85ebca6b));
    h1 = avalanche(h1 ^ Math.imul(h0, 0xc2b2ae35));
    h2 = avalanche(h2 ^ Math.imul(h1, 0x27d4eb2f));
    h3 = avalanche(h3 ^ Math.imul(h2, 0x165667b1));
  }
  const a = h0 >>> 6; // 26 bits
  const b = h1 >>> 8; // 24 bits
  const c = h2 >>> 8; // 24 bits
  lastIdBits.a = a;
  lastIdBits.b = b;
  lastIdBits.c = c;
  const randB = a & 0x3fff;
  return (
    parentTime + '-7' + HEX3[a >>> 14]! + '-' + DIGITS[8 | (randB >>> 12)]! + HEX3[randB & 0xfff]! + '-' +
    HEX3[b >>> 12]! + HEX3[b & 0xfff]! + HEX3[c >>> 12]! + HEX3[c & 0xfff]!
  );
}

const DIGITS = '0123456789abcdef';

/**
 * The UUIDv7 with time `ms` and {@link IdBits} `a`, `b`, `c`: what {@link uuidv7} returned when
 * {@link lastUuidv7Time} and {@link lastIdBits} read so (a store of ids can keep five numbers
 * instead of a 36-character string).
 */
export function formatUuidv7(ms: number, a: number, b: number, c: number): string {
  const t1 = Math.floor(ms / 2 ** 24);
  const t0 = ms % 2 ** 24;
  const randB = a & 0x3fff;
  return (
    HEX2[t1 >> 16]! + HEX2[(t1 >> 8) & 255]! + HEX2[t1 & 255]! + HEX2[t0 >> 16]! + '-' + HEX2[(t0 >> 8) & 255]! + HEX2[t0 & 255]! +
    '-7' + HEX3[a >>> 14]! + '-' + DIGITS[8 | (randB >>> 12)]! + HEX3[randB & 0xfff]! + '-' +
    HEX3[b >>> 12]! + HEX3[b & 0xfff]! + HEX3[c >>> 12]! + HEX3[c & 0xfff]!
  );
}

/**
 * A UUIDv7 derived from `parent` (a UUIDv7) and `salt`: {@link deriveId} with the parent's bits,
 * `saltHash(salt)` and `n` (default 0). A node's `n`th send to node `to` gets
 * `deriveUuidv7(input id, "<from>><to>", n)`, so a node that runs again after a crash (its
 * outputs were not committed) sends its outputs on under the ids they had the first time: the
 * journal's insert-or-ignore and every `stepKey` downstream stay the same.
 */
export function deriveUuidv7(parent: string, salt: string, n = 0): string {
  const bits = idBits(parent);
  return deriveId(parent.slice(0, 13), bits.a, bits.b, bits.c, saltHash(salt), n);
}

/**
 * The last eight hex digits of the last id {@link uuidv7} made, as a number (what
 * `traceIdHash` computes from the string), without reading the string.
 */
export function lastUuidv7Low32(): number {
  return ((hi % 2 ** 20) * 4096 + lo) >>> 0;
}

/** The time (epoch ms) encoded in the last id {@link uuidv7} made: `uuidv7Time` without parsing. */
export function lastUuidv7Time(): number {
  return lastMs;
}

/** Matches a lower-case UUIDv7 (version 7, RFC variant). */
export const UUIDV7_PATTERN = '^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$';
const UUIDV7_RE = new RegExp(UUIDV7_PATTERN);

/** True when `value` is a lower-case UUIDv7 string. */
export function isUuidV7(value: unknown): value is string {
  return typeof value === 'string' && UUIDV7_RE.test(value);
}

/** The creation time (epoch ms) encoded in a UUIDv7. */
export function uuidv7Time(id: string): number {
  return parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
}
