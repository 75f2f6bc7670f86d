/**
 * Every store operation behind a timeout and a circuit breaker. The runtime wraps its store in
 * this: an operation that takes longer than `timeoutMs` fails with `ROOST_ERR_STORE_UNAVAILABLE`;
 * after `breaker.failures` failures in a row the breaker opens and operations are refused at
 * once (so `emit` refuses new work at once) until a probe after `breaker.cooldownMs` succeeds.
 * A bad argument (an invalid cursor, a closed store) is the caller's fault, not the store's: it
 * does not count against the breaker.
 */
import { RoostError, ensureError, isRoostError } from '../errors.js';
import { CircuitBreaker, type BreakerState } from '../resilience/breaker.js';
import type {
  Fence,
  OutboxEntry,
  IdempotentTrace,
  Lease,
  PendingEnvelope,
  Store,
  StoreBatch,
  StoredDeadLetter,
  StoredCheckpoint,
  StoredEvent,
  StoredTrace,
  TracePage,
  TraceQuery,
  Versioned,
} from './store.js';

/** See the module comment. */
export class GuardedStore implements Store {
  readonly breaker: CircuitBreaker;

  /** Told of every operation that ran: its name, how long it took (ms) and whether it failed (metrics). */
  private observers: ((operation: string, ms: number, ok: boolean) => void)[] = [];

  constructor(
    readonly inner: Store,
    private readonly timeoutMs: number,
    breaker: { failures: number; cooldownMs: number },
    onBreaker: (state: BreakerState, failures: number, error: Error | null) => void,
  ) {
    this.breaker = new CircuitBreaker(breaker, onBreaker);
  }

  /** Subscribes to every operation's duration and outcome; returns the unsubscribe function. */
  observe(observer: (operation: string, ms: number, ok: boolean) => void): () => void {
    this.observers = [...this.observers, observer];
    return () => {
      this.observers = this.observers.filter((o) => o !== observer);
    };
  }

  private report(operation: string, started: number, ok: boolean): void {
    const observers = this.observers;
    if (observers.length === 0) return;
    const ms = performance.now() - started;
    for (const o of observers) o(operation, ms, ok);
  }

  get durable(): boolean {
    return this.inner.durable;
  }
  get shared(): boolean {
    return this.inner.shared;
  }

  /** The inner store's {@link Store.ready}: neither under the timeout nor counted by the breaker. */
  ready(): Promise<void> {
    return this.inner.ready?.() ?? Promise.resolve();
  }

  /** Throws `ROOST_ERR_STORE_UNAVAILABLE` while the breaker is open (new work is refused at once). */
  assertAvailable(): void {
    if (this.breaker.state === 'open') throw openError(this.breaker.failures);
  }

  /**
   * Aborted when a commit times out (then replaced). The journal never runs two commits at
   * once, so one controller serves them all: making an AbortSignal per commit cost more than
   * a small commit's bookkeeping.
   */
  private commitAbort = new AbortController();

  /** Runs `fn` under the timeout and the breaker; `abort`, if given, is aborted when the timeout fires. */
  private call<T>(operation: string, fn: () => Promise<T>, abort?: AbortController): Promise<T> {
    if (!this.breaker.allow()) return Promise.reject(openError(this.breaker.failures));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        const error = new RoostError('ROOST_ERR_STORE_UNAVAILABLE', `store: ${operation} timed out after ${this.timeoutMs} ms`, {
          details: { operation, timeoutMs: this.timeoutMs },
        });
        abort?.abort(error);
        reject(error);
      }, this.timeoutMs);
      timer.unref();
    });
    const started = this.observers.length === 0 ? 0 : performance.now();
    return Promise.race([fn(), timeout]).then(
      (value) => {
        clearTimeout(timer);
        this.breaker.success();
        if (started !== 0) this.report(operation, started, true);
        return value;
      },
      (thrown: unknown) => {
        clearTimeout(timer);
        if (started !== 0) this.report(operation, started, false);
        const error = ensureError(thrown);
        if (!isRoostError(error) || error.code === 'ROOST_ERR_STORE_UNAVAILABLE') this.breaker.failure(error);
        else this.breaker.success(); // the store answered; the call was wrong
        throw error;
      },
    );
  }

  commit(batch: StoreBatch): Promise<void> {
    if (batch.fence !== undefined) {
      // A fenced batch is a singleton's write, not the journal's: it may run beside a journal
      // commit, so its timeout aborts a signal of its own rather than the journal's.
      const own = new AbortController();
      return this.call('commit', () => this.inner.commit(batch, own.signal), own);
    }
    // A commit that timed out must not land later, after the journal retried it and went on.
    if (this.commitAbort.signal.aborted) this.commitAbort = new AbortController();
    const abort = this.commitAbort;
    return this.call('commit', () => this.inner.commit(batch, abort.signal), abort);
  }
  getTrace(flow: string, traceId: string): Promise<StoredTrace | null> {
    return this.call('getTrace', () => this.inner.getTrace(flow, traceId));
  }
  findTrace(traceId: string): Promise<StoredTrace | null> {
    return this.call('findTrace', () => this.inner.findTrace(traceId));
  }
  listTraces(query?: TraceQuery): Promise<TracePage> {
    return this.call('listTraces', () => this.inner.listTraces(query));
  }
  findIdempotent(flow: string, tenant: string, key: string, since: number): Promise<IdempotentTrace | null> {
    return this.call('findIdempotent', () => this.inner.findIdempotent(flow, tenant, key, since));
  }
  runningTraces(flow: string, owner?: string): Promise<readonly StoredTrace[]> {
    return this.call('runningTraces', () => this.inner.runningTraces(flow, owner));
  }
  pendingEnvelopes(flow: string): Promise<readonly PendingEnvelope[]> {
    return this.call('pendingEnvelopes', () => this.inner.pendingEnvelopes(flow));
  }
  pendingOutputs(flow: string): Promise<readonly { readonly traceId: string; readonly value: unknown }[]> {
    return this.call('pendingOutputs', () => this.inner.pendingOutputs(flow));
  }
  outboxEntries(source: string, afterSeq: number, limit: number): Promise<readonly OutboxEntry[]> {
    return this.call('outboxEntries', () => this.inner.outboxEntries(source, afterSeq, limit));
  }

  outboxSize(source: string): Promise<number> {
    return this.call('outboxSize', () => this.inner.outboxSize(source));
  }

  getStep(stepKey: string): Promise<{ readonly value: unknown } | undefined> {
    return this.call('getStep', () => this.inner.getStep(stepKey));
  }
  getCheckpoint(key: string): Promise<{ readonly value: unknown } | undefined> {
    return this.call('getCheckpoint', () => this.inner.getCheckpoint(key));
  }
  listCheckpoints(prefix: string, after: string | null, limit: number): Promise<readonly StoredCheckpoint[]> {
    return this.call('listCheckpoints', () => this.inner.listCheckpoints(prefix, after, limit));
  }
  history(traceId: string): Promise<readonly StoredEvent[]> {
    return this.call('history', () => this.inner.history(traceId));
  }
  listDeadLetters(query?: { flow?: string; tenant?: string; limit?: number }): Promise<readonly StoredDeadLetter[]> {
    return this.call('listDeadLetters', () => this.inner.listDeadLetters(query));
  }
  getDeadLetter(id: string): Promise<StoredDeadLetter | null> {
    return this.call('getDeadLetter', () => this.inner.getDeadLetter(id));
  }
  acquireLease(name: string, holder: string, ttlMs: number, now: number): Promise<Lease | null> {
    return this.call('acquireLease', () => this.inner.acquireLease(name, holder, ttlMs, now));
  }
  getLease(name: string): Promise<Lease | null> {
    return this.call('getLease', () => this.inner.getLease(name));
  }
  runningOwners(flow: string): Promise<readonly (string | null)[]> {
    return this.call('runningOwners', () => this.inner.runningOwners(flow));
  }
  claimTraces(flow: string, from: string | null, to: string): Promise<readonly string[]> {
    return this.call('claimTraces', () => this.inner.claimTraces(flow, from, to));
  }
  releaseLease(name: string, holder: string, token: number): Promise<void> {
    return this.call('releaseLease', () => this.inner.releaseLease(name, holder, token));
  }
  getValue(key: string): Promise<Versioned | undefined> {
    return this.call('getValue', () => this.inner.getValue(key));
  }
  putValue(key: string, value: unknown, expectedVersion: number, fence?: Fence): Promise<number | null> {
    return this.call('putValue', () => this.inner.putValue(key, value, expectedVersion, fence));
  }
  usedBytes(): Promise<number | null> {
    return this.call('usedBytes', () => this.inner.usedBytes());
  }
  prune(before: number): Promise<number> {
    return this.call('prune', () => this.inner.prune(before));
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

function openError(failures: number): RoostError {
  return new RoostError('ROOST_ERR_STORE_UNAVAILABLE', `store: unavailable (circuit open after ${failures} failures in a row); new work is refused until it answers again`, {
    details: { breaker: 'open' },
  });
}
