import { afterEach, describe, expect, it, vi } from 'vitest';
import { clockNow, lastMonotonic } from '../../src/resilience/clock.js';
import { useFakeClock, useRealClock } from '../helpers/clock.js';

afterEach(() => {
  useRealClock();
});

describe('clock', () => {
  it('reads the wall clock in integer ms, and the same reading in monotonic time', () => {
    for (let i = 0; i < 1_000; i++) {
      const before = Date.now();
      const now = clockNow();
      const p = lastMonotonic();
      const after = Date.now();
      expect(Number.isInteger(now)).toBe(true);
      // Within a millisecond of Date.now() (it follows performance.now() between syncs).
      expect(now).toBeGreaterThanOrEqual(before - 1);
      expect(now).toBeLessThanOrEqual(after + 1);
      expect(p).toBeLessThanOrEqual(performance.now());
    }
  });

  it('follows a wall-clock step within a second, and never runs backwards between syncs', () => {
    useFakeClock();
    const start = clockNow();
    vi.advanceTimersByTime(10);
    expect(clockNow()).toBe(start + 10);
    vi.setSystemTime(Date.now() + 60_000); // the wall clock jumps; the monotonic clock does not
    expect(clockNow()).toBe(start + 10); // not seen until the next sync
    vi.advanceTimersByTime(1_001);
    expect(clockNow()).toBe(start + 10 + 60_000 + 1_001);
    const p = lastMonotonic();
    vi.advanceTimersByTime(5);
    clockNow();
    expect(lastMonotonic() - p).toBe(5);
  });
});
