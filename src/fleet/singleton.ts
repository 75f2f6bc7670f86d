/**
 * Singleton duties: `runtime.singleton(name, fn)` runs `fn` on one process of the fleet at a
 * time. Every process calls it; the one holding the lease `singleton:<name>` in the runtime's
 * store (PostgreSQL for a fleet; with SQLite or memory there is one process, and it always wins)
 * runs `fn(ctx)`, the others wait as candidates.
 *
 * Timing, with the defaults `heartbeatMs` 5,000 and `leaseMs` 10,000 (2 × heartbeatMs):
 * - the leader renews its lease every `heartbeatMs`, for `leaseMs` from the moment it sends the
 *   renewal;
 * - it steps down (aborts `ctx.signal`) at once when a renewal fails or finds another holder,
 *   and, whatever its renewals are doing, once `leaseMs` has passed since it sent the last one
 *   that succeeded (the clock check, on the monotonic clock, by a timer of its own and again
 *   before each renewal): a leader whose event loop stalled, or that was SIGSTOPped, stops when
 *   it wakes instead of going on;
 * - a candidate reads the lease every `heartbeatMs`, and, when the lease it saw lapses sooner
 *   than that, right when it lapses; it tries to take it when it looks free.
 *
 * Failover after the leader dies: its last renewal was sent less than `heartbeatMs` before it
 * died, and that lease lapses `leaseMs` after it was sent. A candidate that polls every
 * `heartbeatMs` tries at most `heartbeatMs` after the lapse, so a new leader runs at most
 * `leaseMs + heartbeatMs` (15 s) after the death, plus one store round trip; since candidates
 * also try at the lapse they saw, it is usually about `leaseMs` (10 s) or less. A leader that
 * stops (`handle.stop()`, `runtime.close()`) releases the lease: the next poll, within
 * `heartbeatMs`, takes over. `leaseMs` must be at least 2 × `heartbeatMs`, so that one late or
 * lost renewal does not change the leader.
 *
 * Guarantees. The lease is judged by each caller's wall clock, so "one leader at a time" holds
 * as far as the hosts' clocks agree and the leader's event loop runs. What holds regardless of
 * clocks and pauses is fencing: every write through `ctx.putValue` and `ctx.commit` carries the
 * term's token, and the store refuses it with `ROOST_ERR_FENCED` unless that term still holds
 * the lease, checked in the write's own transaction. A deposed leader's late writes never land
 * after a newer leader began. Side effects outside the store are not fenced: hand `ctx.token`
 * to the outside system where it can check it, or make them idempotent.
 *
 * `fn` is a duty, not a job: it should run until `ctx.signal` aborts. If it returns or throws
 * while this process still leads, that is logged and it runs again after `restartDelayMs`, in
 * the same term (same token); leadership is kept, since handing it to another process would
 * not make a failing duty work and would churn elections. A process whose `fn` has not returned
 * since its signal aborted does not try for the lease again until it has, so one process never
 * runs two copies of `fn`.
 *
 * Its timers do not hold the process open (as every timer of the runtime): a process that
 * should keep campaigning is held open by its server, its transport, or its own code.
 */
import { assertName } from '../envelope/names.js';
import { RoostError, ensureError, invalidOption } from '../errors.js';
import type { Fence, Lease, Store, StoreBatch } from '../store/store.js';
import type { Logger } from '../telemetry/logger.js';
import { checkObject, optInt } from '../validate-options.js';
import type { LeaderEvent, LeaderLostReason } from './events.js';

/** The default of {@link SingletonOptions.heartbeatMs}. */
export const DEFAULT_HEARTBEAT_MS = 5_000;
/** The default of {@link SingletonOptions.leaseMs}: 2 × the default heartbeat (see the module comment). */
export const DEFAULT_LEASE_MS = 10_000;
/** setTimeout's largest delay. */
const MAX_MS = 2_147_483_647;
/** The shortest heartbeat: a store round trip must fit in it many times over. */
const MIN_HEARTBEAT_MS = 10;

/** Options of `runtime.singleton(name, fn, options)`. */
export interface SingletonOptions {
  /** How often the leader renews its lease and a candidate tries for it, ms (default 5,000). */
  readonly heartbeatMs?: number;
  /** How long a lease lasts without renewal, ms: at least 2 × heartbeatMs (default 2 × heartbeatMs: 10,000). */
  readonly leaseMs?: number;
  /** How long after `fn` returned or threw, while still leading, it runs again, ms (default: heartbeatMs). */
  readonly restartDelayMs?: number;
}

/** {@link SingletonOptions} validated, with defaults filled in. */
export interface ResolvedSingletonOptions {
  readonly heartbeatMs: number;
  readonly leaseMs: number;
  readonly restartDelayMs: number;
}

/** Validates the options of singleton `name` (`ROOST_ERR_INVALID_OPTION`, naming the field); returns them frozen. */
export function resolveSingletonOptions(name: string, options: unknown): ResolvedSingletonOptions {
  const field = `singleton(${name})`;
  const o = checkObject(field, options, ['heartbeatMs', 'leaseMs', 'restartDelayMs']);
  const heartbeatMs = optInt(field, o, 'heartbeatMs', MIN_HEARTBEAT_MS, Math.floor(MAX_MS / 2), DEFAULT_HEARTBEAT_MS);
  const leaseMs = o['leaseMs'] === undefined ? 2 * heartbeatMs : checkLease(field, o['leaseMs'], heartbeatMs);
  const restartDelayMs = optInt(field, o, 'restartDelayMs', 0, MAX_MS, heartbeatMs);
  return Object.freeze({ heartbeatMs, leaseMs, restartDelayMs });
}

function checkLease(field: string, value: unknown, heartbeatMs: number): number {
  const min = 2 * heartbeatMs;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_MS) {
    throw invalidOption(`${field}.leaseMs`, `an integer from ${min} (2 × heartbeatMs) to ${MAX_MS}`, value);
  }
  return value;
}

/** What `fn` gets while this process leads. */
export interface SingletonContext {
  /** The duty's name. */
  readonly name: string;
  /** This process: the runtime's owner id (`runtime.owner`). */
  readonly holder: string;
  /** The fencing token of this term: it rises with every new term, on any process. */
  readonly token: number;
  /** The fence every write of this term carries: `{ name: 'singleton:<name>', token }`. */
  readonly fence: Fence;
  /**
   * Aborts when this term ends: leadership lost (its reason is a `ROOST_ERR_FENCED` error with
   * `details.reason`), `handle.stop()`, or the runtime closing.
   */
  readonly signal: AbortSignal;
  /** `store.putValue` under this term's fence: refused with `ROOST_ERR_FENCED` once the term is over. */
  putValue(key: string, value: unknown, expectedVersion: number): Promise<number | null>;
  /** `store.commit` under this term's fence (any `fence` in `batch` is replaced): all of it lands, or none. */
  commit(batch: StoreBatch): Promise<void>;
}

/** The duty: runs while this process leads, until `ctx.signal` aborts. */
export type SingletonFn = (ctx: SingletonContext) => void | Promise<void>;

/**
 * Where a singleton is: trying for the lease (`candidate`), running `fn` (`leader`), giving it
 * up (`stopping`), or done (`stopped`). `stopped` is final.
 */
export type SingletonState = 'candidate' | 'leader' | 'stopping' | 'stopped';

/** What `runtime.singleton` returns. */
export interface SingletonHandle extends AsyncDisposable {
  readonly name: string;
  readonly state: SingletonState;
  /** True while this process leads (runs `fn`). */
  readonly isLeader: boolean;
  /** The fencing token of the current term while leading, else null. */
  readonly token: number | null;
  /** Ends the duty on this process: aborts `fn`, waits up to heartbeatMs for it, releases the lease. Repeat calls return the same promise. */
  stop(): Promise<void>;
}

/** What a singleton needs of its runtime. */
export interface SingletonHost {
  readonly store: Store | null;
  readonly owner: string;
  readonly logger: Logger;
  publish(event: LeaderEvent): void;
}

/** One term of leadership on this process. */
interface Term {
  readonly token: number;
  readonly controller: AbortController;
  /** performance.now() at which the lease lapses unless renewed: leaseMs after the last successful renewal was sent. */
  deadline: number;
}

/** The singletons of one runtime: one duty per name; {@link stopAll} on close. */
export class Singletons {
  private readonly duties = new Map<string, SingletonDuty>();
  private closed = false;

  constructor(private readonly host: SingletonHost) {}

  /** Validates, then starts a duty (see the module comment). */
  start(name: unknown, fn: unknown, options: unknown): SingletonHandle {
    const n = assertName('singleton.name', name);
    if (typeof fn !== 'function') throw invalidOption(`singleton(${n}).fn`, 'a function', fn);
    const resolved = resolveSingletonOptions(n, options);
    const store = this.host.store;
    if (store === null) {
      throw new RoostError('ROOST_ERR_INVALID_STATE', `singleton(${n}): this runtime has no store to hold the lease in (set the store option)`, {
        field: 'store',
        expected: 'a runtime created with a store',
      });
    }
    if (this.closed) {
      throw new RoostError('ROOST_ERR_INVALID_STATE', `singleton(${n}): the runtime is closing`, { field: 'runtime.state', expected: 'running', received: 'closing' });
    }
    // Two duties of one name in one process would share one holder id: both would "hold" the lease.
    if (this.duties.has(n)) throw new RoostError('ROOST_ERR_ALREADY_EXISTS', `a singleton named ${n} is already running on this runtime`, { field: 'singleton.name', received: n });
    const duty: SingletonDuty = new SingletonDuty(this.host, store, n, fn as SingletonFn, resolved, () => {
      if (this.duties.get(n) === duty) this.duties.delete(n);
    });
    this.duties.set(n, duty);
    return duty;
  }

  /** Stops every duty (the runtime closes): each aborts its `fn` and releases its lease. No more start after it. */
  async stopAll(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.duties.values()].map((d) => d.stopWith('closed')));
  }
}

/** See the module comment. */
class SingletonDuty implements SingletonHandle {
  private stateValue: SingletonState = 'candidate';
  private term: Term | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private watchdog: ReturnType<typeof setTimeout> | null = null;
  /** The tick (a try for the lease, or a renewal) in flight. */
  private ticking: Promise<void> | null = null;
  /** `fn` of the current or an earlier term, until it has returned. */
  private running: Promise<void> | null = null;
  private stopping: Promise<void> | null = null;
  /** Quiets repeated warnings (a store that stays down, an `fn` that ignores its signal). */
  private warnedTry = false;
  private warnedStuck = false;
  private readonly leaseName: string;
  private readonly log: Logger;

  constructor(
    private readonly host: SingletonHost,
    private readonly store: Store,
    readonly name: string,
    private readonly fn: SingletonFn,
    private readonly o: ResolvedSingletonOptions,
    private readonly onStopped: () => void,
  ) {
    this.leaseName = `singleton:${name}`;
    this.log = host.logger.child({ singleton: name });
    this.schedule(0);
  }

  get state(): SingletonState {
    return this.stateValue;
  }
  get isLeader(): boolean {
    return this.stateValue === 'leader';
  }
  get token(): number | null {
    return this.term?.token ?? null;
  }

  stop(): Promise<void> {
    return this.stopWith('released');
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }

  /** @internal Stops with the reason `leader_lost` will give (`closed` from the runtime). */
  stopWith(reason: 'released' | 'closed'): Promise<void> {
    if (this.stopping !== null) return this.stopping;
    this.stateValue = 'stopping';
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.stopping = (async () => {
      const term = this.term;
      this.term = null;
      this.clearWatchdog();
      try {
        if (term !== null) term.controller.abort(this.endOfTerm(term, reason));
        // fn's last writes of this term still land while the lease is held: give it up to a
        // heartbeat to return (the lease, renewed less than a heartbeat ago, outlasts that).
        const running = this.running;
        if (running !== null) await Promise.race([running, delay(this.o.heartbeatMs)]);
        // A try in flight gives back what it got when it returns (see campaign and renew); wait
        // for it a little, not for a hung store.
        if (this.ticking !== null) await Promise.race([this.ticking, delay(this.o.heartbeatMs)]);
        if (term !== null) {
          await this.release(term.token);
          this.publish('leader_lost', term.token, reason);
          this.log.info({ token: term.token }, `stopped leading singleton ${this.name} (${reason}): lease released`);
        }
      } catch (error) {
        this.log.error({ err: ensureError(error) }, `stopping singleton ${this.name} failed`);
      } finally {
        this.stateValue = 'stopped';
        this.onStopped();
      }
    })();
    return this.stopping;
  }

  private get halted(): boolean {
    return this.stateValue === 'stopping' || this.stateValue === 'stopped';
  }

  private schedule(ms: number): void {
    if (this.halted) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.ticking = this.tick().finally(() => {
        this.ticking = null;
      });
    }, ms);
    this.timer.unref();
  }

  /** One step: a renewal while leading, else a try for the lease; then the next is scheduled. Never rejects. */
  private async tick(): Promise<void> {
    let next = this.o.heartbeatMs;
    try {
      next = this.term === null ? await this.campaign() : await this.renew(this.term);
    } catch (error) {
      this.log.error({ err: ensureError(error) }, `singleton ${this.name}: a lease step failed`);
    }
    this.schedule(next);
  }

  /**
   * Tries for the lease; returns the wait before the next step. It reads the lease first (a
   * candidate's poll is one read while another process holds it) and tries to take it only when
   * it looks free.
   */
  private async campaign(): Promise<number> {
    if (this.running !== null) {
      if (!this.warnedStuck) {
        this.warnedStuck = true;
        this.log.warn(`singleton ${this.name}: fn has not returned since its signal aborted; this process does not try for the lease until it has`);
      }
      return this.o.heartbeatMs;
    }
    let lease: Lease | null;
    let sentAt: number;
    try {
      const current = await this.store.getLease(this.leaseName);
      const now = Date.now();
      if (current !== null && current.until > now) {
        // Held: poll again at the next heartbeat, or right when it lapses if that is sooner.
        if (current.holder !== this.host.owner) return Math.min(this.o.heartbeatMs, Math.max(1, current.until - now + 1));
        // Held under this process's owner id, yet no term of this duty here holds it: an earlier
        // process with the same owner id left it (a restart under a stable name), or this one
        // could not release a term it gave up. Taking it as it is would continue that term,
        // token and all, so end it first.
        this.log.warn({ token: current.token }, `singleton ${this.name}: ending term ${current.token}, held under this owner id but run by no duty here; a new term follows`);
        await this.store.releaseLease(this.leaseName, this.host.owner, current.token);
      }
      sentAt = performance.now();
      lease = await this.store.acquireLease(this.leaseName, this.host.owner, this.o.leaseMs, Date.now());
    } catch (error) {
      if (!this.warnedTry) this.log.warn({ err: ensureError(error) }, `singleton ${this.name}: trying for the lease failed; trying again every heartbeat`);
      this.warnedTry = true;
      return this.o.heartbeatMs;
    }
    this.warnedTry = false;
    if (lease === null) return this.o.heartbeatMs; // another process took it first
    if (this.halted || performance.now() >= sentAt + this.o.leaseMs) {
      // Stopped while this was in flight, or the answer came so late that the lease has lapsed.
      await this.release(lease.token);
      return this.o.heartbeatMs;
    }
    this.elect(lease, sentAt);
    return this.o.heartbeatMs;
  }

  /** Renews the lease of `term`, or steps down; returns the wait before the next step. */
  private async renew(term: Term): Promise<number> {
    const sentAt = performance.now();
    if (sentAt >= term.deadline) {
      this.stepDown(term, 'lapsed'); // the event loop stalled past the lease (before the watchdog ran)
      return this.o.heartbeatMs;
    }
    let lease: Lease | null;
    try {
      lease = await this.store.acquireLease(this.leaseName, this.host.owner, this.o.leaseMs, Date.now());
    } catch (error) {
      if (this.term === term) {
        this.log.warn({ err: ensureError(error), token: term.token }, `singleton ${this.name}: renewing the lease failed; stepping down`);
        this.stepDown(term, 'renew_failed');
      }
      return this.o.heartbeatMs;
    }
    if (this.term !== term) {
      // The term ended while this was in flight (the clock check, or stop): what it got is no term's.
      if (lease !== null) await this.release(lease.token);
      return this.o.heartbeatMs;
    }
    if (lease === null) {
      this.stepDown(term, 'superseded');
    } else if (lease.token !== term.token) {
      // The lease had lapsed in the store and this renewal took it anew, as a new term: the old
      // one is over. Give the new one back; a clean try follows once fn has returned.
      this.stepDown(term, 'lapsed');
      await this.release(lease.token);
    } else {
      term.deadline = sentAt + this.o.leaseMs;
      this.armWatchdog(term);
    }
    return this.o.heartbeatMs;
  }

  private elect(lease: Lease, sentAt: number): void {
    const term: Term = { token: lease.token, controller: new AbortController(), deadline: sentAt + this.o.leaseMs };
    this.term = term;
    this.stateValue = 'leader';
    this.warnedStuck = false;
    this.armWatchdog(term);
    this.log.info({ token: term.token }, `leading singleton ${this.name}`);
    this.publish('leader_elected', term.token, null);
    this.running = this.runFn(term).finally(() => {
      this.running = null;
    });
  }

  /** Ends `term` now: aborts fn, publishes `leader_lost`, and gives the lease back (best effort) so others need not wait for it to lapse. */
  private stepDown(term: Term, reason: LeaderLostReason): void {
    if (this.term !== term) return;
    this.term = null;
    if (this.stateValue === 'leader') this.stateValue = 'candidate';
    this.clearWatchdog();
    term.controller.abort(this.endOfTerm(term, reason));
    this.log.warn({ token: term.token, reason }, `lost the leadership of singleton ${this.name} (${reason})`);
    this.publish('leader_lost', term.token, reason);
    void this.release(term.token);
  }

  /** Runs fn for `term` until its signal aborts; again after restartDelayMs when it returns or throws (see the module comment). */
  private async runFn(term: Term): Promise<void> {
    const ctx = this.context(term);
    const signal = term.controller.signal;
    while (!signal.aborted) {
      try {
        await this.fn(ctx);
        if (signal.aborted) break;
        this.log.info({ token: term.token }, `singleton ${this.name}: fn returned while this process leads; it runs again in ${this.o.restartDelayMs} ms`);
      } catch (error) {
        if (signal.aborted) {
          this.log.debug({ err: ensureError(error), token: term.token }, `singleton ${this.name}: fn ended with an error after its term ended`);
          break;
        }
        this.log.error({ err: ensureError(error), token: term.token }, `singleton ${this.name}: fn threw while this process leads; it runs again in ${this.o.restartDelayMs} ms`);
      }
      await delay(this.o.restartDelayMs, signal);
    }
  }

  private context(term: Term): SingletonContext {
    const fence: Fence = Object.freeze({ name: this.leaseName, token: term.token });
    const signal = term.controller.signal;
    const store = this.store;
    // Once the term is over, its writes are refused here already; the store refuses them anyway.
    const over = (): Promise<never> => Promise.reject(ensureError(signal.reason));
    return Object.freeze({
      name: this.name,
      holder: this.host.owner,
      token: term.token,
      fence,
      signal,
      putValue: (key: string, value: unknown, expectedVersion: number) => (signal.aborted ? over() : store.putValue(key, value, expectedVersion, fence)),
      commit: (batch: StoreBatch) => (signal.aborted ? over() : store.commit({ ...batch, fence })),
    });
  }

  private endOfTerm(term: Term, reason: LeaderLostReason): RoostError {
    return new RoostError('ROOST_ERR_FENCED', `singleton ${this.name}: this process no longer leads it (${reason}); term ${term.token} is over`, {
      field: 'fence',
      details: { lease: this.leaseName, token: term.token, reason },
    });
  }

  /** Steps down when the term's deadline passes without a renewal (the clock check). */
  private armWatchdog(term: Term): void {
    this.clearWatchdog();
    this.watchdog = setTimeout(
      () => {
        this.watchdog = null;
        if (this.term !== term) return;
        if (performance.now() >= term.deadline) this.stepDown(term, 'lapsed');
        else this.armWatchdog(term); // a timer may fire a fraction of a millisecond early
      },
      Math.max(0, Math.ceil(term.deadline - performance.now())),
    );
    this.watchdog.unref();
  }

  private clearWatchdog(): void {
    if (this.watchdog !== null) clearTimeout(this.watchdog);
    this.watchdog = null;
  }

  private async release(token: number): Promise<void> {
    try {
      await this.store.releaseLease(this.leaseName, this.host.owner, token);
    } catch (error) {
      this.log.debug({ err: ensureError(error), token }, `singleton ${this.name}: releasing the lease failed (it lapses by itself)`);
    }
  }

  private publish(type: LeaderEvent['type'], token: number, reason: LeaderLostReason | null): void {
    this.host.publish({ type, ts: Date.now(), name: this.name, holder: this.host.owner, token, reason });
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. Does not hold the process open. */
function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref();
    signal?.addEventListener('abort', done, { once: true });
  });
}
