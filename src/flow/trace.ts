/** The live state of one trace: what is pending, what came out, who waits for it. */
import type { RoostError } from '../errors.js';
import type { Timed } from '../resilience/timer-queue.js';
import type { Indexed } from './trace-index.js';
import type { TraceStream } from './trace-stream.js';

/** Where a trace is. */
export type TraceStatus = 'running' | 'succeeded' | 'failed' | 'cancelled';

/** Something of a trace that can be aborted (a running node). */
export interface TraceRun {
  cancel(reason: RoostError): void;
  /** Its index in `Trace.runs`, or -1. Owned by the trace. */
  traceSlot: number;
}

/** One waiting `fetch`. */
export interface Fetcher {
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/** @internal the live state of a trace, owned by its flow; its timer entry is its deadline. */
export class Trace implements Timed, Indexed<Trace> {
  timerAt = 0;
  timerIndex = -1;
  indexHash = -1;
  indexNext: Trace | null = null;
  /** Called when the deadline passes (set by the flow when the trace has a deadline). */
  expire: ((trace: Trace) => void) | null = null;
  /** Envelopes of the trace queued, waiting for queue space or running, plus join holds. */
  pending = 1;
  status: TraceStatus = 'running';
  /** The first output of an egress node; the rest go to `moreOutputs` (most traces have one). */
  private output: unknown = undefined;
  private outputCount = 0;
  private moreOutputs: unknown[] | null = null;
  error: RoostError | null = null;
  /** Runs of the trace now (an array with swap-remove: cheaper than a Set per trace). */
  readonly runs: TraceRun[] = [];
  /** When it ended (epoch ms), or 0 while it runs. */
  finishedAt = 0;
  /** Finished and its result not fetched yet: it counts against `results.max`. */
  held = false;
  fetchers: Fetcher[] | null = null;
  streams: TraceStream[] | null = null;
  cleanups: (() => void)[] | null = null;
  /**
   * A resumed trace: ids of the envelopes queued again from the journal. A node that runs again
   * on an older input re-creates some of them (derived ids): those are not queued a second time.
   */
  replayIds: Set<string> | null = null;
  /** Step results of this trace when there is no journal (retries reuse them). */
  steps: Map<string, unknown> | null = null;
  /** Checkpoints of this trace's inputs when there is no journal. */
  checkpoints: Map<string, unknown> | null = null;
  /** With a journal: settles when the trace's end is committed (fetch waits for it). */
  durable: Promise<void> | null = null;

  constructor(
    readonly id: string,
    readonly tenant: string,
    readonly createdAt: number,
    readonly deadline: number | null,
    /** The time encoded in the UUIDv7 id (what "expired" is judged by; can differ from `createdAt`). */
    readonly idTime: number,
  ) {}

  onTimer(): void {
    this.expire?.(this);
  }

  get running(): boolean {
    return this.status === 'running';
  }

  addRun(run: TraceRun): void {
    run.traceSlot = this.runs.length;
    this.runs.push(run);
  }

  removeRun(run: TraceRun): void {
    const i = run.traceSlot;
    if (i < 0) return;
    run.traceSlot = -1;
    const last = this.runs.pop()!;
    if (last !== run) {
      this.runs[i] = last;
      last.traceSlot = i;
    }
  }

  addOutput(value: unknown): void {
    if (this.outputCount++ === 0) this.output = value;
    else if (this.moreOutputs === null) this.moreOutputs = [this.output, value];
    else this.moreOutputs.push(value);
  }

  /** The result: the single output, an array of several in arrival order, or null for none. */
  result(): unknown {
    if (this.outputCount === 0) return null;
    return this.outputCount === 1 ? this.output : this.moreOutputs;
  }

  onEnd(cleanup: () => void): void {
    (this.cleanups ??= []).push(cleanup);
  }
}
