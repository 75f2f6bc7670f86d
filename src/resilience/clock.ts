/**
 * The runtime's clock: one reading gives both the epoch time in milliseconds (deadlines,
 * timeouts, timestamps) and the monotonic sub-millisecond time behind it (latencies).
 *
 * Why not `Date.now()` and `performance.now()`: on Node 20 each costs about 100 ns here (the
 * second validates its receiver and builds an array), and a message through a three-node flow
 * read them ten times, a tenth of its whole cost. This clock reads `performance.now()` once and
 * adds an offset to the wall clock that it takes again from `Date.now()` once a second, or when
 * the monotonic time goes backwards (fake timers in tests). Between two syncs it follows the
 * monotonic clock, so a wall-clock step shows up within a second.
 */

/** How often the offset to the wall clock is taken again. */
const RESYNC_MS = 1_000;

let offset = 0;
let syncedAt = -Infinity;
let last = 0;

/** Takes the wall-clock offset again now (fake timers installed or removed: tests call this). */
export function syncClock(): void {
  const p = performance.now();
  offset = Date.now() - p;
  syncedAt = p;
  last = p;
}

/** Epoch milliseconds (an integer, as `Date.now()`); {@link lastMonotonic} gives the same reading's monotonic time. */
export function clockNow(): number {
  const p = performance.now();
  if (p - syncedAt > RESYNC_MS || p < last) {
    offset = Date.now() - p;
    syncedAt = p;
  }
  last = p;
  return Math.floor(p + offset);
}

/**
 * The monotonic time (ms, sub-millisecond) of the latest {@link clockNow} reading: the start
 * or end of a latency measured without reading the clock again.
 */
export function lastMonotonic(): number {
  return last;
}
