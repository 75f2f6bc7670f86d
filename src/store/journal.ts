/**
 * Group commit over a {@link Store}: every write the runtime makes during one turn of the event
 * loop goes into one batch, committed in one transaction on the next turn (`setImmediate`).
 * `committed()` resolves once everything written so far is durable, which is what `emit` (the
 * accepted envelope) and `fetch` (the trace's result) wait for; node outputs and events ride in
 * the same commits and cost a message no extra wait. Commits never overlap: writes made while
 * one is in flight go into the next.
 */
import { RoostError, ensureError, isRoostError } from '../errors.js';
import type { EventWrite, OutputWrite, PendingWrite, Store, StoredDeadLetter, StepWrite, TraceWrite } from './store.js';

interface Batch {
  traces: TraceWrite[];
  accepted: PendingWrite[];
  consumed: string[];
  attempts: { envelopeId: string; attempt: number }[];
  outputs: OutputWrite[];
  ended: { flow: string; traceId: string }[];
  events: EventWrite[];
  steps: StepWrite[];
  deadLetters: StoredDeadLetter[];
  deadLettersRemoved: string[];
  /** Settles when this batch is committed. */
  done: Promise<void>;
  resolve: () => void;
  reject: (error: Error) => void;
}

function newBatch(): Batch {
  let resolve!: () => void;
  let reject!: (error: Error) => void;
  const done = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  done.catch(() => {}); // a batch nobody waits for must not be an unhandled rejection
  return {
    traces: [],
    accepted: [],
    consumed: [],
    attempts: [],
    outputs: [],
    ended: [],
    events: [],
    steps: [],
    deadLetters: [],
    deadLettersRemoved: [],
    done,
    resolve,
    reject,
  };
}

/** See the module comment. */
export class Journal {
  private batch: Batch | null = null;
  /** The batch being committed, if any (later writes wait for it). */
  private inFlight: Promise<void> | null = null;
  private flushScheduled = false;
  /** Steps written but maybe not committed yet: `ctx.step` must see them too. */
  private readonly recentSteps = new Map<string, unknown>();

  constructor(
    readonly store: Store,
    private readonly onError: (error: Error) => void,
  ) {}

  trace(write: TraceWrite): void {
    this.open().traces.push(write);
  }
  accept(write: PendingWrite): void {
    this.open().accepted.push(write);
  }
  consume(envelopeId: string): void {
    this.open().consumed.push(envelopeId);
  }
  attempt(envelopeId: string, attempt: number): void {
    this.open().attempts.push({ envelopeId, attempt });
  }
  output(write: OutputWrite): void {
    this.open().outputs.push(write);
  }
  ended(flow: string, traceId: string): void {
    this.open().ended.push({ flow, traceId });
  }
  event(write: EventWrite): void {
    this.open().events.push(write);
  }
  step(write: StepWrite): void {
    this.recentSteps.set(write.stepKey, write.value);
    this.open().steps.push(write);
  }
  deadLetter(letter: StoredDeadLetter): void {
    this.open().deadLetters.push(letter);
  }
  deadLetterRemoved(id: string): void {
    this.open().deadLettersRemoved.push(id);
  }

  /** A step's recorded result: from a batch not yet committed, or from the store. */
  async getStep(stepKey: string): Promise<{ readonly value: unknown } | undefined> {
    if (this.recentSteps.has(stepKey)) return { value: this.recentSteps.get(stepKey) };
    return this.store.getStep(stepKey);
  }

  /**
   * Resolves when every write made so far is committed; rejects with
   * `ROOST_ERR_STORE_UNAVAILABLE` when the commit that held them failed.
   */
  committed(): Promise<void> {
    if (this.batch !== null) return this.batch.done;
    return this.inFlight ?? Promise.resolve();
  }

  /** Commits what is pending now (used on close). */
  async flush(): Promise<void> {
    for (;;) {
      if (this.inFlight !== null) await this.inFlight.catch(() => {});
      else if (this.batch !== null) await this.commitNext().catch(() => {});
      else return;
    }
  }

  private open(): Batch {
    if (this.batch === null) this.batch = newBatch();
    if (!this.flushScheduled && this.inFlight === null) {
      this.flushScheduled = true;
      setImmediate(this.onFlush);
    }
    return this.batch;
  }

  private readonly onFlush = (): void => {
    this.flushScheduled = false;
    if (this.inFlight === null && this.batch !== null) void this.commitNext().catch(() => {});
  };

  /** Commits the open batch; afterwards, the one that filled up meanwhile. */
  private commitNext(): Promise<void> {
    const batch = this.batch!;
    this.batch = null;
    const run = (async (): Promise<void> => {
      try {
        await this.store.commit({
          traces: batch.traces,
          accepted: batch.accepted,
          consumed: batch.consumed,
          attempts: batch.attempts,
          outputs: batch.outputs,
          ended: batch.ended,
          events: batch.events,
          steps: batch.steps,
          deadLetters: batch.deadLetters,
          deadLettersRemoved: batch.deadLettersRemoved,
        });
        for (const s of batch.steps) this.recentSteps.delete(s.stepKey);
        batch.resolve();
      } catch (thrown) {
        const error = isRoostError(thrown)
          ? thrown
          : new RoostError('ROOST_ERR_STORE_UNAVAILABLE', `journal commit failed: ${ensureError(thrown).message}`, { cause: thrown });
        this.onError(error);
        batch.reject(error);
        throw error;
      } finally {
        this.inFlight = null;
        if (this.batch !== null && !this.flushScheduled) {
          this.flushScheduled = true;
          setImmediate(this.onFlush);
        }
      }
    })();
    this.inFlight = run;
    return run;
  }
}
