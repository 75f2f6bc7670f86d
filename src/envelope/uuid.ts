/**
 * UUIDv7 (RFC 9562): a 48-bit Unix-millisecond timestamp, then randomness, so ids sort by time.
 *
 * Ids made by one process are strictly increasing: within one millisecond the 12-bit `rand_a`
 * field counts up from a random start (RFC 9562 §6.2, method 1), and when it overflows the
 * timestamp borrows the next millisecond. The timestamp part is built once per millisecond and
 * the 62 random bits of `rand_b` come from a pooled `randomFillSync` buffer, one system call per
 * 8,192 ids (ids are made on every hop of every message; this layout measured fastest of four).
 */
import { randomFillSync, randomInt } from 'node:crypto';

const HEX: string[] = [];
for (let i = 0; i < 256; i++) HEX.push(i.toString(16).padStart(2, '0'));
const HEX3: string[] = [];
for (let i = 0; i < 4096; i++) HEX3.push(i.toString(16).padStart(3, '0'));

const pool = Buffer.allocUnsafe(64 * 1024);
let offset = pool.length;

const MAX_MS = 2 ** 48 - 1; // 48 bits of milliseconds
let lastMs = -1;
let seq = 0;
let prefix = ''; // "tttttttt-tttt-7" for lastMs

function setMs(ms: number): void {
  lastMs = ms;
  const hex = ms.toString(16).padStart(12, '0');
  prefix = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-7`;
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
  return (
    prefix +
    HEX3[seq]! +
    '-' +
    HEX[0x80 | (p[o]! & 0x3f)]! +
    HEX[p[o + 1]!]! +
    '-' +
    HEX[p[o + 2]!]! +
    HEX[p[o + 3]!]! +
    HEX[p[o + 4]!]! +
    HEX[p[o + 5]!]! +
    HEX[p[o + 6]!]! +
    HEX[p[o + 7]!]!
  );
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
