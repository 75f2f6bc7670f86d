/**
 * Timeouts of one node: every run of a node has the same `timeoutMs`, so runs time out in the
 * order they started. A FIFO of (run, due time) with one entry in the timer heap (the oldest)
 * replaces a heap insert and a heap removal per run with an array push and a flag: finishing a
 * run only clears its flag, and the lane drops finished runs when its one timer fires (or when
 * finished runs pile up behind a slow one).
 */
import { clockNow } from './clock.js';
import type { Parkable, TimerQueue } from './timer-queue.js';

/** A run a lane can time out. */
export interface LaneMember {
  /** The due time it was armed with, or -1 when not armed. Owned by the lane. */
  laneAt: number;
  /** Called once when its due time passes while armed. */
  onTimeout(): void;
}

/** See the module comment. */
export class TimeoutLane implements Parkable {
  timerAt = 0;
  timerIndex = -1;
  timerParked = false;
  // A queue over two arrays that only grow: [head, tail) holds members and their due times.
  // (Truncating an array by writing `length` each time the lane empties showed up at 3 %.)
  private members: (LaneMember | undefined)[] = [];
  private dues: number[] = [];
  private head = 0;
  private tail = 0;
  private armed = 0;

  constructor(private readonly timers: TimerQueue) {}

  /** Arms `member` to time out at `at` (later than or equal to every earlier arm of this lane). */
  arm(member: LaneMember, at: number): void {
    member.laneAt = at;
    if (this.tail === this.members.length && this.head > 0) this.compact();
    this.members[this.tail] = member;
    this.dues[this.tail] = at;
    this.tail++;
    this.armed++;
    if (this.timerIndex < 0 || this.timerParked) this.timers.schedule(this, at);
    else if (this.tail - this.head > 2 * this.armed + 64) this.compact();
  }

  /** Disarms `member` (it finished in time). O(1) amortised. */
  disarm(member: LaneMember): void {
    if (member.laneAt < 0) return;
    member.laneAt = -1;
    this.armed--;
    // Runs mostly finish in the order they started: drop finished ones from the front now, so
    // the queue stays short without a compaction pass.
    this.dropFinished();
    // An idle node's entry is parked, not removed: it no longer keeps the process alive, and
    // the next run (usually at once) wakes it without a heap operation.
    if (this.armed === 0) this.timers.park(this);
  }

  /** Runs armed now. */
  get size(): number {
    return this.armed;
  }

  /** Slots in use, finished or not (for tests of boundedness). */
  get queued(): number {
    return this.tail - this.head;
  }

  onTimer(): void {
    const now = clockNow();
    while (this.head < this.tail) {
      const member = this.members[this.head]!;
      const at = this.dues[this.head]!;
      if (member.laneAt === at && at > now) {
        this.timers.schedule(this, at);
        break;
      }
      this.members[this.head] = undefined;
      this.head++;
      if (member.laneAt === at) {
        member.laneAt = -1;
        this.armed--;
        member.onTimeout();
      }
    }
    this.dropFinished();
  }

  private dropFinished(): void {
    const members = this.members;
    while (this.head < this.tail && members[this.head]!.laneAt !== this.dues[this.head]) {
      members[this.head] = undefined;
      this.head++;
    }
    if (this.head === this.tail) this.head = this.tail = 0;
  }

  /** Moves the members still armed to the front, keeping order. */
  private compact(): void {
    let w = 0;
    for (let r = this.head; r < this.tail; r++) {
      const member = this.members[r]!;
      const at = this.dues[r]!;
      this.members[r] = undefined;
      if (member.laneAt === at) {
        this.members[w] = member;
        this.dues[w] = at;
        w++;
      }
    }
    this.head = 0;
    this.tail = w;
  }
}
