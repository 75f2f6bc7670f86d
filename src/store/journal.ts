/**
 * Group commit over a {@link Store}: every write the runtime makes during one turn of the event
 * loop goes into one batch, committed in one transaction on the next turn (`setImmediate`).
 * `committed()` resolves once everything written so far is durable, which is what `emit` (the
 * accepted envelope) and `fetch` (the trace's result) wait for; node outputs and events ride in
 * the same commits and cost a message no extra wait. Commits never overlap: writes made while
 * one is in flight go into the next. A commit that fails is held and tried again with backoff
 * (50 ms doubling to 2 s) before anything newer: accepted work is never dropped for an outage.
 */
import { RoostError, ensureError, isRoostError } from '../errors.js';
import type { CheckpointWrite, EventWrite, LeaseWrite, OutputWrite, PendingWrite, Store, StoredDeadLetter, StepWrite, TraceWrite } from './store.js';

/**
 * What the journal keeps on a trace while its batches are open: where its write sits in the
 * open batch, and whether the trace was created in it. The runtime's trace object carries these
 * fields (owned by the journal), so a write finds its place without a lookup by id.
 */
export interface JournalTrace {
  /** Number of the batch holding this trace's write, and its slot in that batch's traces. */
  jBatch: number;
  jSlot: number;
  /** Number of the batch the trace was created in. */
  jFresh: number;
  /** Number of the batch it was created and ended in: none of its rows there need writing but the trace's own. */
  jGone: number;
}

/** What the journal keeps on an accepted envelope (the run that will take it): its slot in the open batch. */
export interface JournalEnvelope {
  jBatch: number;
  jSlot: number;
}

/** A trace write as the batch holds it: merged in place when the same trace writes again. */
type HeldTraceWrite = { -readonly [K in keyof TraceWrite]: TraceWrite[K] };

interface Batch {
  /** Increasing per journal: what the handles' `jBatch` fields refer to. */
  no: number;
  traces: HeldTraceWrite[];
  /** Accepted envelopes; null where one was consumed in this same batch (it never needs a row). */
  accepted: (PendingWrite | null)[];
  /** The trace of each accepted envelope (same index). */
  acceptedTrace: JournalTrace[];
  /** Some trace was created and ended in this batch: its envelopes and outputs are left out. */
  gone: boolean;
  consumed: string[];
  leases: LeaseWrite[];
  /** The slot in `leases` of each envelope's lease: a later write for it replaces the earlier one. */
  leaseSlots: Map<string, number>;
  attempts: { envelopeId: string; attempt: number }[];
  outputs: OutputWrite[];
  outputTrace: JournalTrace[];
  ended: { flow: string; traceId: string }[];
  events: EventWrite[];
  steps: StepWrite[];
  checkpoints: CheckpointWrite[];
  checkpointsRemoved: string[];
  deadLetters: StoredDeadLetter[];
  deadLettersRemoved: string[];
  /** Settles when this batch is committed. */
  done: Promise<void>;
  resolve: () => void;
  reject: (error: Error) => void;
}

function newBatch(no: number): Batch {
  let resolve!: () => void;
  let reject!: (error: Error) => void;
  const done = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  done.catch(() => {}); // a batch nobody waits for must not be an unhandled rejection
  return {
    no,
    traces: [],
    accepted: [],
    acceptedTrace: [],
    gone: false,
    consumed: [],
    leases: [],
    leaseSlots: new Map(),
    attempts: [],
    outputs: [],
    outputTrace: [],
    ended: [],
    events: [],
    steps: [],
    checkpoints: [],
    checkpointsRemoved: [],
    deadLetters: [],
    deadLettersRemoved: [],
    done,
    resolve,
    reject,
  };
}

/** A fresh {@link JournalTrace} (for a trace object that has none of its own). */
export function journalTrace(): JournalTrace {
  return { jBatch: -1, jSlot: -1, jFresh: -1, jGone: -1 };
}

/** See the module comment. */
export class Journal {
  private batch: Batch | null = null;
  private batches = 0;
  /** The batch being committed, if any (later writes wait for it). */
  private inFlight: Promise<void> | null = null;
  private flushScheduled = false;
  /** A batch whose commit failed: tried again before anything newer. */
  private failed: Batch | null = null;
  private retryDelay = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  /** Steps written but maybe not committed yet: `ctx.step` must see them too. */
  private readonly recentSteps = new Map<string, unknown>();
  private readonly recentCheckpoints = new Map<string, unknown>();

  constructor(
    readonly store: Store,
    private readonly onError: (error: Error) => void,
    /** Told after every successful commit (the runtime checks the store's size then). */
    private readonly onCommitted: () => void = () => {},
  ) {}

  /**
   * Creates or updates a trace (`t` is the trace's handle). Two writes of one trace in one batch
   * become one row write: a trace accepted and finished within a tick costs one insert. The
   * journal keeps `write` (the caller makes a new one per call) and may change it.
   */
  trace(write: TraceWrite, t: JournalTrace): void {
    const batch = this.open();
    if (t.jBatch !== batch.no) {
      t.jBatch = batch.no;
      t.jSlot = batch.traces.length;
      batch.traces.push(write);
      if (write.status === 'running' && write.owner !== undefined) t.jFresh = batch.no;
      return;
    }
    // Merged in place (no object spread per write): what is set once stays, the rest follows.
    const held = batch.traces[t.jSlot]!;
    held.status = write.status;
    held.updatedAt = write.updatedAt;
    if (write.owner !== undefined) held.owner = write.owner;
    if (write.result !== undefined) held.result = write.result;
    if (write.error !== undefined) held.error = write.error;
  }

  /** An envelope accepted at a node (`e`: the run that will take it; `t`: its trace). */
  accept(write: PendingWrite, e: JournalEnvelope, t: JournalTrace): void {
    const batch = this.open();
    e.jBatch = batch.no;
    e.jSlot = batch.accepted.length;
    batch.accepted.push(write);
    batch.acceptedTrace.push(t);
  }

  /** An envelope is done; accepted in this same batch, it never gets a row at all. */
  consume(envelopeId: string, e: JournalEnvelope | null = null): void {
    const batch = this.open();
    if (e !== null && e.jBatch === batch.no) {
      batch.accepted[e.jSlot] = null;
      e.jBatch = -1;
      return;
    }
    batch.consumed.push(envelopeId);
  }

  /** The lease of a pending envelope handed to a fleet worker (a write of no trace; applied after the accepted ones). */
  lease(write: LeaseWrite): void {
    const batch = this.open();
    const slot = batch.leaseSlots.get(write.envelopeId);
    if (slot !== undefined) batch.leases[slot] = write; // one row per envelope: the latest lease
    else {
      batch.leaseSlots.set(write.envelopeId, batch.leases.length);
      batch.leases.push(write);
    }
  }

  attempt(envelopeId: string, attempt: number, e: JournalEnvelope | null = null): void {
    const batch = this.open();
    const pending = e !== null && e.jBatch === batch.no ? batch.accepted[e.jSlot] : null;
    if (pending !== null && pending !== undefined) {
      batch.accepted[e!.jSlot] = {
        ...pending,
        envelope: { ...pending.envelope, attempt },
        firstAttempt: pending.firstAttempt ?? pending.envelope.attempt, // the budget still counts from acceptance
      };
      return;
    }
    batch.attempts.push({ envelopeId, attempt });
  }

  output(write: OutputWrite, t: JournalTrace): void {
    const batch = this.open();
    batch.outputs.push(write);
    batch.outputTrace.push(t);
  }

  /** A trace ended: its pending envelopes and outputs go. Created in this batch, they never get rows. */
  ended(flow: string, traceId: string, t: JournalTrace): void {
    const batch = this.open();
    if (t.jFresh === batch.no) {
      t.jGone = batch.no;
      batch.gone = true;
      return;
    }
    batch.ended.push({ flow, traceId });
  }

  event(write: EventWrite): void {
    this.open().events.push(write);
  }
  step(write: StepWrite): void {
    this.recentSteps.set(write.stepKey, write.value);
    this.open().steps.push(write);
  }
  checkpoint(write: CheckpointWrite): void {
    this.recentCheckpoints.set(write.key, write.value);
    const batch = this.open();
    // The stores apply a batch's removals after its writes: a removal of this key earlier in the
    // same batch must not delete what is written now.
    if (batch.checkpointsRemoved.length > 0 && batch.checkpointsRemoved.includes(write.key)) {
      batch.checkpointsRemoved = batch.checkpointsRemoved.filter((k) => k !== write.key);
    }
    batch.checkpoints.push(write);
  }
  /** Deletes a checkpoint (after any written in the same batch). */
  checkpointRemoved(key: string): void {
    this.recentCheckpoints.set(key, REMOVED);
    this.open().checkpointsRemoved.push(key);
  }
  /** A checkpoint: from a batch not yet committed, or from the store. */
  async getCheckpoint(key: string): Promise<{ readonly value: unknown } | undefined> {
    if (this.recentCheckpoints.has(key)) {
      const value = this.recentCheckpoints.get(key);
      return value === REMOVED ? undefined : { value };
    }
    return this.store.getCheckpoint(key);
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
   * Resolves when every write made so far is committed. A commit that fails is held and tried
   * again (with backoff), never dropped: its waiters wait on.
   */
  committed(): Promise<void> {
    if (this.batch !== null) return this.batch.done;
    if (this.failed !== null) return this.failed.done;
    return this.inFlight ?? Promise.resolve();
  }

  /** True while a failed commit waits to be tried again. */
  get holding(): boolean {
    return this.failed !== null;
  }

  /**
   * Commits what is pending now, trying a held batch again, for up to `timeoutMs` (used on
   * close). Resolves true when everything landed, false when the time ran out first.
   */
  async flush(timeoutMs = Infinity): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    while (this.inFlight !== null || this.batch !== null || this.failed !== null) {
      const left = until - Date.now();
      if (left <= 0) return false;
      if (this.inFlight !== null) {
        await this.inFlight.catch(() => {});
      } else if (this.failed !== null) {
        await new Promise((r) => setTimeout(r, Math.min(this.retryDelay, left)));
        if (this.inFlight === null && this.failed !== null) await this.commitNext().catch(() => {});
      } else {
        await this.commitNext().catch(() => {});
      }
    }
    return true;
  }

  private open(): Batch {
    if (this.batch === null) this.batch = newBatch(++this.batches);
    if (!this.flushScheduled && this.inFlight === null && this.failed === null) {
      this.flushScheduled = true;
      setImmediate(this.onFlush);
    }
    return this.batch;
  }

  private readonly onFlush = (): void => {
    this.flushScheduled = false;
    if (this.inFlight === null && (this.failed !== null || this.batch !== null)) void this.commitNext().catch(() => {});
  };

  private readonly onRetry = (): void => {
    this.retryTimer = null;
    this.onFlush();
  };

  /** Commits the held batch if any, else the open one; then schedules what filled up meanwhile. */
  private commitNext(): Promise<void> {
    const batch = this.failed ?? this.batch!;
    if (batch === this.failed) this.failed = null;
    else this.batch = null;
    const run = (async (): Promise<void> => {
      try {
        await this.store.commit({
          traces: batch.traces,
          accepted: keptAccepted(batch),
          consumed: batch.consumed,
          leases: batch.leases,
          attempts: batch.attempts,
          outputs: batch.gone ? batch.outputs.filter((_, i) => batch.outputTrace[i]!.jGone !== batch.no) : batch.outputs,
          ended: batch.ended,
          events: batch.events,
          steps: batch.steps,
          checkpoints: batch.checkpoints,
          checkpointsRemoved: batch.checkpointsRemoved,
          deadLetters: batch.deadLetters,
          deadLettersRemoved: batch.deadLettersRemoved,
        });
        for (const s of batch.steps) this.recentSteps.delete(s.stepKey);
        for (const c of batch.checkpoints) if (this.recentCheckpoints.get(c.key) === c.value) this.recentCheckpoints.delete(c.key);
        for (const key of batch.checkpointsRemoved) if (this.recentCheckpoints.get(key) === REMOVED) this.recentCheckpoints.delete(key);
        this.retryDelay = 0;
        batch.resolve();
        this.onCommitted();
      } catch (thrown) {
        const error = isRoostError(thrown)
          ? thrown
          : new RoostError('ROOST_ERR_STORE_UNAVAILABLE', `journal commit failed: ${ensureError(thrown).message}`, { cause: thrown });
        // Held, not dropped: tried again first, before anything written since.
        if (this.retryDelay === 0) this.onError(error); // once per outage, not per retry
        this.failed = batch;
        this.retryDelay = Math.min(MAX_RETRY_MS, Math.max(MIN_RETRY_MS, this.retryDelay * 2));
        if (this.retryTimer === null) this.retryTimer = setTimeout(this.onRetry, this.retryDelay);
        throw error;
      } finally {
        this.inFlight = null;
        if (this.failed === null && this.batch !== null && !this.flushScheduled) {
          this.flushScheduled = true;
          setImmediate(this.onFlush);
        }
      }
    })();
    this.inFlight = run;
    return run;
  }

  /** Stops retrying (the runtime is closing and gave up on the store). */
  stop(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }
}

/** The accepted envelopes of a batch that need rows: not consumed in it, and not of a trace created and ended in it. */
function keptAccepted(batch: Batch): PendingWrite[] {
  const kept: PendingWrite[] = [];
  const { accepted, acceptedTrace, no } = batch;
  for (let i = 0; i < accepted.length; i++) {
    const p = accepted[i];
    if (p !== null && p !== undefined && (!batch.gone || acceptedTrace[i]!.jGone !== no)) kept.push(p);
  }
  return kept;
}

/** What `recentCheckpoints` holds for a checkpoint removed in a batch not yet committed. */
const REMOVED: unique symbol = Symbol('removed');

const MIN_RETRY_MS = 50;
const MAX_RETRY_MS = 2_000;
