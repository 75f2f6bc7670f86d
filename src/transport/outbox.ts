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
 * for good (`ROOST_ERR_PUBLISH_REFUSED` or `ROOST_ERR_PAYLOAD_TOO_LARGE`: not authorised, a full
 * stream that takes nothing new, over its size limit) is logged as an error, counted in
 * `stats().outboxFailed` and forgotten, so that it does not hold the ones behind it for ever; any
 * other failure leaves it waiting. A drain stops at once when the connection goes or the
 * transport closes, whatever sends it still awaits (the client may hold those until it is back:
 * they stay kept, and the receiver's dedup drops a second copy).
 */
import type { Envelope } from '../envelope/envelope.js';
import { RoostError, ensureError, invalidOption, isRoostError } from '../errors.js';
import type { OutboxEntry, Store } from '../store/store.js';
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

/** Whether the broker refused a publish for good (a retry will not change it). */
export function isRefused(error: unknown): boolean {
  return isRoostError(error) && (error.code === 'ROOST_ERR_PUBLISH_REFUSED' || error.code === 'ROOST_ERR_PAYLOAD_TOO_LARGE');
}

/** What {@link Interrupts.race} gives when it was interrupted. */
export const INTERRUPTED = Symbol('interrupted');

/**
 * Races promises against an event (the connection lost, a stop) without leaving anything behind:
 * each race registers one callback and removes it when it settles either way, so a long-lived
 * connection collects no reactions.
 */
export class Interrupts {
  private readonly waiters = new Set<() => void>();

  race<T>(work: Promise<T>): Promise<T | typeof INTERRUPTED> {
    return new Promise((resolve, reject) => {
      const fire = (): void => resolve(INTERRUPTED);
      this.waiters.add(fire);
      work.then(
        (value) => {
          this.waiters.delete(fire);
          resolve(value);
        },
        (error: unknown) => {
          this.waiters.delete(fire);
          reject(ensureError(error));
        },
      );
    });
  }

  /** Interrupts every race in progress. */
  fire(): void {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const fire of waiters) fire();
  }

  /** Races in progress (for tests). */
  get size(): number {
    return this.waiters.size;
  }
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
  private readonly stopping = new Interrupts();
  /** Kept envelopes accepted and not yet committed. */
  private unstored = 0;
  /** Rises with every kept envelope: a drain that read nothing knows whether one came meanwhile. */
  private generation = 0;
  /** Writes of this turn, committed together; `written` settles once they are stored. */
  private writes: { topic: string; envelope: Envelope }[] = [];
  private written: Promise<void> | null = null;
  private chain: Promise<void> = Promise.resolve();
  private keptTotal = 0;
  private failedTotal = 0;
  /** True once what an earlier run left has been read. */
  private loaded = false;

  constructor(
    /** The transport's kind (read when needed: a subclass sets it after this is made). */
    private readonly kindOf: () => string,
    options: TransportOutboxOptions,
    private readonly send: (topic: string, envelope: Envelope) => Promise<void>,
    private readonly connected: () => boolean,
    /** Fired by the transport when its connection goes. */
    private readonly away: Interrupts,
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

  /** Envelopes kept in all. */
  get keptCount(): number {
    return this.keptTotal;
  }

  /** Kept envelopes the broker refused for good when they were sent. */
  get failedCount(): number {
    return this.failedTotal;
  }

  /** Whether what an earlier run left has been read (then {@link ready} need not be awaited). */
  get isReady(): boolean {
    return this.loaded;
  }

  /** Entries waiting now. */
  get waiting(): number {
    return this.size;
  }

  /** Reads what an earlier run left (once; tried again after a failure). */
  ready(): Promise<void> {
    this.loading ??= this.store.outboxSize(this.source).then(
      (n) => {
        this.loaded = true;
        this.size += n;
        if (this.size > 0) this.backlog = true;
      },
      (error: unknown) => {
        this.loading = null;
        throw new RoostError('ROOST_ERR_TRANSPORT_UNAVAILABLE', `${this.kindOf()}: the outbox cannot read the journal: ${ensureError(error).message}`, {
          details: { transport: this.kindOf() },
          cause: error,
        });
      },
    );
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
    this.unstored++;
    this.generation++;
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
      this.keptTotal++;
    } catch (error) {
      this.size = Math.max(0, this.size - 1);
      throw new RoostError('ROOST_ERR_TRANSPORT_UNAVAILABLE', `${this.kindOf()}: the broker is away and the outbox could not keep the envelope: ${ensureError(error).message}`, {
        details: { transport: this.kindOf() },
        cause: error,
      });
    } finally {
      this.unstored--;
    }
    this.wake(); // the broker may be back already (a drain in progress sees it by the generation)
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
      const generation = this.generation;
      const page = await this.store.outboxEntries(this.source, after, this.batch);
      if (page.length === 0) {
        // Kept while this read ran, or not committed yet: read again.
        if (this.unstored > 0 || this.generation !== generation) continue;
        this.backlog = false; // nothing waits: publishes go straight out again
        this.size = 0;
        return;
      }
      // One after another per destination (a send that fails must not be overtaken by a later
      // one to the same topic), destinations side by side.
      const outcome = await this.stopping.race(this.away.race(this.sendPage(page)));
      if (outcome === INTERRUPTED) return; // the connection went, or the transport closes: they stay kept
      const { done, wait } = outcome;
      if (done.length > 0) {
        await this.store.commit({ outboxSent: done });
        this.size = Math.max(0, this.size - done.length);
      }
      if (wait) return;
      after = page[page.length - 1]!.seq;
    }
  }

  /** Sends a page; says which entries are done with (sent, or refused for good) and whether any must wait. */
  private async sendPage(page: readonly OutboxEntry[]): Promise<{ done: number[]; wait: boolean }> {
    const byTopic = new Map<string, OutboxEntry[]>();
    for (const entry of page) {
      const list = byTopic.get(entry.topic);
      if (list === undefined) byTopic.set(entry.topic, [entry]);
      else list.push(entry);
    }
    const done: number[] = [];
    let wait = false;
    await Promise.all(
      [...byTopic.values()].map(async (entries) => {
        for (const entry of entries) {
          try {
            await this.send(entry.topic, entry.envelope);
          } catch (error) {
            if (!isRefused(error)) {
              wait = true; // away again, or not known to be for good: this one and the rest of its topic wait
              return;
            }
            this.failedTotal++;
            this.logger?.error(
              { err: error, transport: this.kindOf(), topic: entry.topic, envelopeId: entry.envelope.id },
              'the broker refused a kept envelope for good; it is dropped from the outbox',
            );
          }
          done.push(entry.seq);
        }
      }),
    );
    return { done, wait };
  }

  /** Stops draining; what waits stays in the store for the next start. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopping.fire();
    if (this.retry !== null) clearTimeout(this.retry);
    await this.chain.catch(() => {});
    await this.draining;
  }
}
