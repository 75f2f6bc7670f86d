/** The live state of one trace: what is pending, what came out, who waits for it. */
import type { RoostError } from '../errors.js';
import type { Timed } from '../resilience/timer-queue.js';
import type { JournalTrace } from '../store/journal.js';
import type { Indexed } from './trace-index.js';
import type { TraceStream } from './trace-stream.js';

/** Where a trace is. */
export type TraceStatus = 'running' | 'succeeded' | 'failed' | 'cancelled';

/** Something of a trace that can be aborted (a running node). */
export interface TraceRun {
  cancel(reason: RoostError): void;
  /** Links of the trace's list of runs, and whether it is in it. Owned by the trace. */
  tracePrev: TraceRun | null;
  traceNext: TraceRun | null;
  inTrace: boolean;
}

/** One waiting `fetch`. */
export interface Fetcher {
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/** @internal the live state of a trace, owned by its flow; its timer entry is its deadline. */
export class Trace implements Timed, Indexed<Trace>, JournalTrace {
  timerAt = 0;
  timerIndex = -1;
  jBatch = -1;
  jSlot = -1;
  jFresh = -1;
  jGone = -1;
  indexHash = -1;
  indexNext: Trace | null = null;
  /** Envelopes of the trace queued, waiting for queue space or running, plus join holds. */
  pending = 1;
  status: TraceStatus = 'running';
  /** The first output of an egress node; the rest go to `extra.moreOutputs` (most traces have one). */
  private output: unknown = undefined;
  private outputCount = 0;
  error: RoostError | null = null;
  /** Runs of the trace now: a list through the runs themselves (no array or Set per trace). */
  private firstRun: TraceRun | null = null;
  /** When it ended (epoch ms), or 0 while it runs. */
  finishedAt = 0;
  /** Finished and its result not fetched yet: it counts against `results.max`. */
  held = false;
  /** The first waiting fetch (most traces have exactly one); any others are in `extra`. */
  private fetchResolve: ((value: unknown) => void) | null = null;
  private fetchReject: ((error: unknown) => void) | null = null;
  streams: TraceStream[] | null = null;
  /** With a journal: settles when the trace's end is committed (fetch waits for it). */
  durable: Promise<void> | null = null;
  /** What few traces need (a deadline, joins, several outputs or fetches, a resume): made on first use. */
  extra: TraceExtra | null = null;

  constructor(
    readonly id: string,
    readonly tenant: string,
    readonly createdAt: number,
    readonly deadline: number | null,
    /** The time encoded in the UUIDv7 id (what "expired" is judged by; can differ from `createdAt`). */
    readonly idTime: number,
  ) {}

  onTimer(): void {
    this.extra?.expire?.(this);
  }

  /** The side object, made on first use. */
  more(): TraceExtra {
    return (this.extra ??= new TraceExtra());
  }

  /** Ids queued again from the journal on resume (see {@link TraceExtra.replayIds}), or null. */
  get replayIds(): Set<string> | null {
    return this.extra === null ? null : this.extra.replayIds;
  }

  get running(): boolean {
    return this.status === 'running';
  }

  addRun(run: TraceRun): void {
    run.inTrace = true;
    run.tracePrev = null;
    run.traceNext = this.firstRun;
    if (this.firstRun !== null) this.firstRun.tracePrev = run;
    this.firstRun = run;
  }

  removeRun(run: TraceRun): void {
    if (!run.inTrace) return;
    run.inTrace = false;
    if (run.tracePrev === null) this.firstRun = run.traceNext;
    else run.tracePrev.traceNext = run.traceNext;
    if (run.traceNext !== null) run.traceNext.tracePrev = run.tracePrev;
    run.tracePrev = run.traceNext = null;
  }

  /** The runs now, as a new array (safe to cancel them while iterating it). */
  currentRuns(): TraceRun[] {
    const runs: TraceRun[] = [];
    for (let r = this.firstRun; r !== null; r = r.traceNext) runs.push(r);
    return runs;
  }

  addOutput(value: unknown): void {
    if (this.outputCount++ === 0) this.output = value;
    else {
      const x = this.more();
      if (x.moreOutputs === null) x.moreOutputs = [this.output, value];
      else x.moreOutputs.push(value);
    }
  }

  /** The result: the single output, an array of several in arrival order, or null for none. */
  result(): unknown {
    if (this.outputCount === 0) return null;
    return this.outputCount === 1 ? this.output : this.extra!.moreOutputs;
  }

  /** A fetch waits for the end of this trace. */
  addFetcher(resolve: (value: unknown) => void, reject: (error: unknown) => void): void {
    if (this.fetchResolve === null) {
      this.fetchResolve = resolve;
      this.fetchReject = reject;
    } else {
      (this.more().moreFetchers ??= []).push({ resolve, reject });
    }
  }

  /** Some fetch waits. */
  get fetched(): boolean {
    return this.fetchResolve !== null;
  }

  /** Settles every waiting fetch with the result (`ok`) or `value` as the error, and forgets them. */
  settleFetchers(ok: boolean, value: unknown): void {
    const resolve = this.fetchResolve;
    const reject = this.fetchReject;
    const more = this.extra === null ? null : this.extra.moreFetchers;
    this.fetchResolve = this.fetchReject = null;
    if (more !== null) this.extra!.moreFetchers = null;
    if (resolve === null) return;
    if (ok) resolve(value);
    else reject!(value);
    if (more !== null) {
      for (const f of more) {
        if (ok) f.resolve(value);
        else f.reject(value);
      }
    }
  }

  onEnd(cleanup: () => void): void {
    (this.more().cleanups ??= []).push(cleanup);
  }
}

/** The parts of a {@link Trace} few traces need, kept apart so that a trace on the fast path is small. */
export class TraceExtra {
  /** Called when the deadline passes (set by the flow when the trace has a deadline). */
  expire: ((trace: Trace) => void) | null = null;
  moreOutputs: unknown[] | null = null;
  moreFetchers: Fetcher[] | null = null;
  cleanups: (() => void)[] | null = null;
  /**
   * A resumed trace: ids of the envelopes queued again from the journal. A node that runs again
   * on an older input re-creates some of them (derived ids): those are not queued a second time.
   */
  replayIds: Set<string> | null = null;
  /** Step results of this trace when there is no journal (retries reuse them). */
  steps: Map<string, unknown> | null = null;
  /** Steps whose fn is running now, by step key: a retry waits for one rather than run it again. */
  stepsInFlight: Map<string, Promise<unknown>> | null = null;
  /** Checkpoints of this trace's inputs when there is no journal. */
  checkpoints: Map<string, unknown> | null = null;
}
