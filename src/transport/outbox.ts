/**
 * The outbox of a transport: an envelope published while the broker is away is kept in the
 * journal (the store's `outbox` table) and the publish resolves — accepted, not lost. When the
 * connection is back, the kept envelopes are sent in the order they were accepted, and each is
 * forgotten once the broker has it. While any wait, later publishes go behind them, so the order
 * per destination holds. A crash between a send and its forgetting sends that envelope again at
 * the next start: receivers dedup by envelope id (dedup.ts).
 *
 * Kept writes of one turn share one commit; the outbox is bounded (`max` entries, one more is
 * refused with `ROOST_ERR_TRANSPORT_UNAVAILABLE`, never dropped). An entry the broker refuses
 * for good (not for being away: a payload over its limit, say) is logged as an error, counted in
 * `stats().outboxFailed` and forgotten, so that it does not hold the ones behind it for ever.
 */
import type { Envelope } from '../envelope/envelope.js';
import { RoostError, ensureError, invalidOption, isRoostError } from '../errors.js';
import type { Store } from '../store/store.js';
import type { Logger } from '../telemetry/logger.js';
import { checkObject, optInt } from '../validate-options.js';

/** Options of a transport's outbox. */
export interface TransportOutboxOptions {
  /** Where kept envelopes go: a durable store (SQLite, PostgreSQL) keeps them across a crash. */
  readonly store: Store;
  /**
   * Whose entries these are: one name per transport of a process, the same after a restart (the
   * restarted process sends what its predecessor kept). Letters, digits and `_ - : .`, 1 to 128.
   */
  readonly source: string;
  /** Entries kept at most (default 100,000). */
  readonly max?: number;
  /** Entries sent per round while draining (default 256). */
  readonly batch?: number;
}

const SOURCE = /^[A-Za-z0-9_\-:.]{1,128}$/;

/** Whether an error says the broker is away (the entry waits) rather than refusing it for good. */
export function isUnavailable(error: unknown): boolean {
  // INVALID_STATE: not connected yet (a connection coming up); it waits like any other.
  return isRoostError(error) && (error.code === 'ROOST_ERR_TRANSPORT_UNAVAILABLE' || error.code === 'ROOST_ERR_TRANSPORT_CLOSED' || error.code === 'ROOST_ERR_INVALID_STATE');
}

/** See the module comment. */
export class Outbox {
  private readonly store: Store;
  readonly source: string;
  private readonly max: number;
  private readonly batch: number;
  /** Entries in the store now (as this process counts them, from the store's count at start). */
  private size = 0;
  /** True while entries wait: publishes go behind them. */
  private backlog = false;
  private loading: Promise<void> | null = null;
  private draining: Promise<void> | null = null;
  private retry: NodeJS.Timeout | null = null;
  private stopped = false;
  /** Writes of this turn, committed together; `written` settles once they are stored. */
  private writes: { topic: string; envelope: Envelope }[] = [];
  private written: Promise<void> | null = null;
  private chain: Promise<void> = Promise.resolve();
  keptCount = 0;
  failedCount = 0;

  constructor(
    /** The transport's kind (read when needed: a subclass sets it after this is made). */
    private readonly kindOf: () => string,
    options: TransportOutboxOptions,
    private readonly send: (topic: string, envelope: Envelope) => Promise<void>,
    private readonly connected: () => boolean,
    private readonly logger: Logger | null,
  ) {
    const o = checkObject('outbox', options, ['store', 'source', 'max', 'batch']);
    if (typeof options.store?.commit !== 'function' || typeof options.store.outboxEntries !== 'function') {
      throw invalidOption('outbox.store', 'a Store (openStore, SqliteStore, PostgresStore or MemoryStore)', options.store);
    }
    if (typeof options.source !== 'string' || !SOURCE.test(options.source)) {
      throw invalidOption('outbox.source', 'a name of 1 to 128 letters, digits and _ - : .', options.source);
    }
    this.store = options.store;
    this.source = options.source;
    this.max = optInt('outbox', o, 'max', 1, Number.MAX_SAFE_INTEGER, 100_000);
    this.batch = optInt('outbox', o, 'batch', 1, 10_000, 256);
  }

  /** Entries waiting now. */
  get waiting(): number {
    return this.size;
  }

  /** Reads what an earlier run left (once). */
  ready(): Promise<void> {
    this.loading ??= this.store.outboxSize(this.source).then((n) => {
      this.size += n;
      if (this.size > 0) this.backlog = true;
    });
    return this.loading;
  }

  /** Whether a publish now must be kept instead of sent. */
  mustKeep(): boolean {
    return this.backlog || !this.connected();
  }

  /** Keeps an envelope; resolves once it is stored. */
  async keep(topic: string, envelope: Envelope): Promise<void> {
    if (this.size >= this.max) {
      throw new RoostError('ROOST_ERR_TRANSPORT_UNAVAILABLE', `${this.kindOf()}: the broker is away and the outbox holds ${this.size} envelopes already (outbox.max)`, {
        details: { transport: this.kindOf(), outbox: this.size, max: this.max },
      });
    }
    this.size++;
    this.backlog = true;
    this.writes.push({ topic, envelope });
    let written = this.written;
    if (written === null) {
      // One commit per turn, after the one before (so seqs follow the order of acceptance).
      written = this.chain.then(() => this.commitWrites());
      this.chain = written.catch(() => {});
      this.written = written;
    }
    try {
      await written;
      this.keptCount++;
    } catch (error) {
      this.size--;
      throw new RoostError('ROOST_ERR_TRANSPORT_UNAVAILABLE', `${this.kindOf()}: the broker is away and the outbox could not keep the envelope: ${ensureError(error).message}`, {
        details: { transport: this.kindOf() },
        cause: error,
      });
    }
    this.wake(); // the broker may be back already
  }

  private async commitWrites(): Promise<void> {
    const writes = this.writes;
    this.writes = [];
    this.written = null;
    const createdAt = Date.now();
    await this.store.commit({ outbox: writes.map((w) => ({ source: this.source, topic: w.topic, envelope: w.envelope, createdAt })) });
  }

  /** Starts sending what waits, when connected (one drain at a time). */
  wake(): void {
    if (this.stopped || this.draining !== null || !this.connected()) return;
    this.draining = this.drain()
      .catch((error: unknown) => this.logger?.warn({ err: error, transport: this.kindOf() }, 'the outbox could not be drained; it tries again'))
      .finally(() => {
        this.draining = null;
        // Entries left while connected (a send failed, the store failed): try again in a while.
        if (this.backlog && !this.stopped && this.connected() && this.retry === null) {
          this.retry = setTimeout(() => {
            this.retry = null;
            this.wake();
          }, 1_000);
          this.retry.unref();
        }
      });
  }

  private async drain(): Promise<void> {
    await this.ready();
    let after = 0;
    while (!this.stopped && this.connected()) {
      await this.chain; // kept envelopes are stored before they are read
      const page = await this.store.outboxEntries(this.source, after, this.batch);
      if (page.length === 0) {
        if (this.writes.length > 0) continue;
        this.backlog = false; // nothing waits: publishes go straight out again
        this.size = 0;
        return;
      }
      // Sent in order on one connection; the broker's acknowledgements come in that order.
      const results = await Promise.allSettled(page.map((e) => this.send(e.topic, e.envelope)));
      const done: number[] = [];
      let stop = false;
      for (let i = 0; i < page.length && !stop; i++) {
        const result = results[i]!;
        if (result.status === 'fulfilled') done.push(page[i]!.seq);
        else if (isUnavailable(result.reason)) stop = true; // away again: this one and the rest wait
        else {
          this.failedCount++;
          done.push(page[i]!.seq);
          this.logger?.error(
            { err: result.reason, transport: this.kindOf(), topic: page[i]!.topic, envelopeId: page[i]!.envelope.id },
            'the broker refused a kept envelope; it is dropped from the outbox',
          );
        }
      }
      if (done.length > 0) {
        await this.store.commit({ outboxSent: done });
        this.size = Math.max(0, this.size - done.length);
      }
      if (stop) return;
      after = page[page.length - 1]!.seq;
    }
  }

  /** Stops draining; what waits stays in the store for the next start. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retry !== null) clearTimeout(this.retry);
    await this.chain.catch(() => {});
    await this.draining;
  }
}
