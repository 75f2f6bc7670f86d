/**
 * Run outcomes over the last `windowMs`, in time buckets: what quarantine decides on. A lifetime
 * count (MFP's mistake) quarantines every busy agent sooner or later; a window with a minimum
 * number of runs and a failure ratio does not.
 */

const BUCKETS = 10;

/** Counts of runs and failures in a sliding time window. */
export class SlidingWindow {
  private readonly bucketMs: number;
  private readonly runs = new Float64Array(BUCKETS);
  private readonly failures = new Float64Array(BUCKETS);
  private epoch = -1; // the bucket number (time / bucketMs) of the newest bucket
  private totalRuns = 0;
  private totalFailures = 0;

  constructor(windowMs: number) {
    this.bucketMs = Math.max(1, Math.ceil(windowMs / BUCKETS));
  }

  /** Records one run; `failed` for an error or a timeout. */
  record(failed: boolean, now: number): void {
    this.advance(now);
    const i = this.epoch % BUCKETS;
    this.runs[i]!++;
    this.totalRuns++;
    if (failed) {
      this.failures[i]!++;
      this.totalFailures++;
    }
  }

  /** Runs in the window as of `now`. */
  runCount(now: number): number {
    this.advance(now);
    return this.totalRuns;
  }

  /** Failures in the window as of `now`. */
  failureCount(now: number): number {
    this.advance(now);
    return this.totalFailures;
  }

  /** Forgets everything (on restore). */
  reset(): void {
    this.runs.fill(0);
    this.failures.fill(0);
    this.totalRuns = 0;
    this.totalFailures = 0;
    this.epoch = -1;
  }

  private advance(now: number): void {
    const epoch = Math.floor(now / this.bucketMs);
    if (epoch === this.epoch) return;
    if (this.epoch < 0 || epoch - this.epoch >= BUCKETS) {
      this.runs.fill(0);
      this.failures.fill(0);
      this.totalRuns = 0;
      this.totalFailures = 0;
    } else {
      for (let e = this.epoch + 1; e <= epoch; e++) {
        const i = e % BUCKETS;
        this.totalRuns -= this.runs[i]!;
        this.totalFailures -= this.failures[i]!;
        this.runs[i] = 0;
        this.failures[i] = 0;
      }
    }
    this.epoch = epoch;
  }
}
