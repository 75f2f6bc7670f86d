/**
 * UUIDv7 (RFC 9562): a 48-bit Unix-millisecond timestamp, then randomness, so ids sort by time.
 *
 * Ids made by one process are strictly increasing: within one millisecond the 12-bit `rand_a`
 * field counts up from a random start (RFC 9562 §6.2, method 1), and when it overflows the
 * timestamp borrows the next millisecond. The timestamp part is written once per millisecond and
 * the 62 random bits of `rand_b` come from a pooled `randomFillSync` buffer, one system call per
 * 8,192 ids (ids are made on every hop of every message).
 */
import { hash, randomFillSync, randomInt } from 'node:crypto';

/** Byte → its two lower-case hex digits as ASCII codes, at [2b] and [2b + 1]. */
const HEX_CODES = new Uint8Array(512);
for (let i = 0; i < 256; i++) {
  const hex = i.toString(16).padStart(2, '0');
  HEX_CODES[2 * i] = hex.charCodeAt(0);
  HEX_CODES[2 * i + 1] = hex.charCodeAt(1);
}
const DIGITS = '0123456789abcdef';

const pool = Buffer.allocUnsafe(64 * 1024);
let offset = pool.length;

/**
 * The id is written as ASCII into this buffer and read out as one flat string: building it from
 * a dozen string pieces left a chain of intermediate strings per id (about 350 bytes of garbage,
 * with three ids per message on a 3-node flow).
 */
const text = Buffer.alloc(36, 0x2d); // '-' where the dashes go

const MAX_MS = 2 ** 48 - 1; // 48 bits of milliseconds
let lastMs = -1;
let seq = 0;

/** Writes "tttttttt-tttt-7" for `ms` into `text`. */
function setMs(ms: number): void {
  lastMs = ms;
  const hex = ms.toString(16).padStart(12, '0');
  for (let i = 0; i < 8; i++) text[i] = hex.charCodeAt(i);
  for (let i = 0; i < 4; i++) text[9 + i] = hex.charCodeAt(8 + i);
  text[14] = 0x37; // version 7
}

/** A new UUIDv7 string in lower-case hex, later than every id this process made before. */
export function uuidv7(now: number = Date.now()): string {
  // A fractional or out-of-range time would corrupt the hex prefix of every later id.
  now = Math.floor(now);
  if (!(now >= 0 && now <= MAX_MS)) now = Date.now();
  if (now > lastMs) {
    setMs(now);
    seq = randomInt(2048); // start in the lower half, leaving room to count up
  } else if (++seq > 0xfff) {
    setMs(lastMs + 1);
    seq = 0;
  }
  if (offset === pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  const o = offset;
  offset += 8;
  const p = pool;
  const t = text;
  const h = HEX_CODES;
  // rand_a: the 12-bit counter.
  t[15] = DIGITS.charCodeAt(seq >> 8);
  t[16] = DIGITS.charCodeAt((seq >> 4) & 15);
  t[17] = DIGITS.charCodeAt(seq & 15);
  // rand_b: 62 random bits behind the variant bits 10.
  let b = 0x80 | (p[o]! & 0x3f);
  t[19] = h[2 * b]!;
  t[20] = h[2 * b + 1]!;
  b = p[o + 1]!;
  t[21] = h[2 * b]!;
  t[22] = h[2 * b + 1]!;
  for (let k = 2, w = 24; k < 8; k++, w += 2) {
    b = p[o + k]!;
    t[w] = h[2 * b]!;
    t[w + 1] = h[2 * b + 1]!;
  }
  return t.toString('latin1', 0, 36);
}

/**
 * A UUIDv7 derived from `parent` (a UUIDv7) and `salt`: the parent's time, then 74 bits of
 * SHA-256(parent, salt). The same inputs give the same id, so a node that runs again after a
 * crash (its outputs were not committed) sends its outputs on under the ids they had the first
 * time: the journal's insert-or-ignore and every `stepKey` downstream stay the same.
 */
export function deriveUuidv7(parent: string, salt: string): string {
  const h = hash('sha256', `${parent}\u0000${salt}`, 'hex');
  const variant = '89ab'[parseInt(h[3]!, 16) & 3]!;
  return `${parent.slice(0, 13)}-7${h.slice(0, 3)}-${variant}${h.slice(4, 7)}-${h.slice(7, 19)}`;
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
