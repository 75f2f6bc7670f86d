/**
 * Fake timers for tests that move the clock. The runtime reads time through its own clock
 * (`src/resilience/clock.ts`: `performance.now()` plus an offset to `Date.now()`), so a test
 * that moves time fakes both, and the clock takes its offset again on install and removal.
 */
import { vi } from 'vitest';
import { syncClock } from '../../src/resilience/clock.js';

type Faked = 'setTimeout' | 'clearTimeout' | 'setImmediate' | 'setInterval' | 'clearInterval';

/** Fakes `Date` and `performance` (and the given timer functions) at once. */
export function useFakeClock(timers: readonly Faked[] = []): void {
  vi.useFakeTimers({ toFake: [...timers, 'Date', 'performance'] });
  syncClock();
}

/** Back to real time (safe to call when nothing is faked). */
export function useRealClock(): void {
  vi.useRealTimers();
  syncClock();
}
