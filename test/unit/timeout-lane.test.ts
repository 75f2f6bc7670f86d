import { afterEach, describe, expect, it, vi } from 'vitest';
import { TimeoutLane, type LaneMember } from '../../src/resilience/timeout-lane.js';
import { TimerQueue } from '../../src/resilience/timer-queue.js';
import { useFakeClock, useRealClock } from '../helpers/clock.js';

class Member implements LaneMember {
  laneAt = -1;
  timedOutAt = -1;
  onTimeout(): void {
    this.timedOutAt = Date.now();
  }
}

afterEach(() => {
  useRealClock();
});

describe('TimeoutLane', () => {
  it('times out armed members at their due time, in order, and never a disarmed one', () => {
    useFakeClock(['setTimeout', 'clearTimeout']);
    const timers = new TimerQueue();
    const lane = new TimeoutLane(timers);
    const start = Date.now();
    const members = Array.from({ length: 10 }, () => new Member());
    members.forEach((m, i) => {
      if (i > 0) vi.advanceTimersByTime(10);
      lane.arm(m, Date.now() + 100);
    });
    for (const i of [0, 2, 4, 6, 8]) lane.disarm(members[i]!);
    expect(lane.size).toBe(5);
    vi.advanceTimersByTime(100 - 90 + 5); // now = start + 105: member 1 (due start+110) not yet
    expect(members.every((m) => m.timedOutAt < 0)).toBe(true);
    vi.advanceTimersByTime(100);
    expect(members.map((m) => m.timedOutAt - start)).toEqual([-1 - start, 110, -1 - start, 130, -1 - start, 150, -1 - start, 170, -1 - start, 190]);
    expect(lane.size).toBe(0);
    timers.close();
  });

  it('stays bounded behind a stuck member while many others finish', () => {
    useFakeClock(['setTimeout', 'clearTimeout']);
    const timers = new TimerQueue();
    const lane = new TimeoutLane(timers);
    const stuck = new Member();
    lane.arm(stuck, Date.now() + 1000);
    for (let i = 0; i < 100_000; i++) {
      const m = new Member();
      lane.arm(m, Date.now() + 1000);
      lane.disarm(m);
    }
    expect(lane.size).toBe(1);
    // Finished members were compacted away: the queue holds little more than the live ones.
    expect(lane.queued).toBeLessThan(200);
    vi.advanceTimersByTime(1000);
    expect(stuck.timedOutAt).toBeGreaterThan(0);
    timers.close();
  });

  it('a member re-armed (a retry) is timed out by its new due time only', () => {
    useFakeClock(['setTimeout', 'clearTimeout']);
    const timers = new TimerQueue();
    const lane = new TimeoutLane(timers);
    const m = new Member();
    lane.arm(m, Date.now() + 100);
    lane.disarm(m);
    vi.advanceTimersByTime(50);
    lane.arm(m, Date.now() + 100); // due at +150
    vi.advanceTimersByTime(60); // +110: the stale entry is due, the member is not
    expect(m.timedOutAt).toBe(-1);
    vi.advanceTimersByTime(40);
    expect(m.timedOutAt).toBeGreaterThan(0);
    timers.close();
  });

  it('an idle lane stays parked in the queue without keeping the process alive, and wakes for the next run', () => {
    useFakeClock(['setTimeout', 'clearTimeout']);
    const timers = new TimerQueue();
    const lane = new TimeoutLane(timers);
    const a = new Member();
    lane.arm(a, Date.now() + 100);
    expect(timers.keepsAlive).toBe(true);
    lane.disarm(a); // idle: parked, not removed
    expect(timers.size).toBe(1);
    expect(timers.keepsAlive).toBe(false);
    vi.advanceTimersByTime(50);
    const b = new Member();
    lane.arm(b, Date.now() + 100); // due at +150; the parked entry (due +100) wakes where it is
    expect(timers.keepsAlive).toBe(true);
    vi.advanceTimersByTime(60); // +110: the entry fires early, finds b not due, and moves to +150
    expect(b.timedOutAt).toBe(-1);
    expect(timers.size).toBe(1);
    vi.advanceTimersByTime(40);
    expect(b.timedOutAt).toBeGreaterThan(0);
    expect(a.timedOutAt).toBe(-1);
    // Parked and then due: dropped without a call, and nothing keeps the process alive.
    const c = new Member();
    lane.arm(c, Date.now() + 100);
    lane.disarm(c);
    vi.advanceTimersByTime(200);
    expect(timers.size).toBe(0);
    expect(timers.keepsAlive).toBe(false);
    timers.close();
  });
});
