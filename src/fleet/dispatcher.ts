/**
 * The owner's side of a remote node: its handler sends the input envelope to a worker and
 * settles with what the worker's handler returned or threw. Everything else about the run (its
 * timeout and deadline, retries with backoff, dead letters, the trace, the edges after it) stays
 * with the owner, in the flow, as for a local node.
 *
 * Redelivery is Roost's, not the broker's: each envelope handed to a worker holds a lease
 * (`leaseMs`) that the worker's acknowledgement starts and its heartbeats renew. When the lease
 * runs out (the worker died, or is cut off), the envelope is sent again to the node's worker group
 * as the next delivery of the same attempt, so the same `ctx.idempotencyKey` and step keys apply
 * and `ctx.step` keeps the effects single. A redelivery is not a retry: it does not spend the
 * node's retry budget.
 */
import { randomBytes } from 'node:crypto';
import type { Envelope } from '../envelope/envelope.js';
import { RoostError, ensureError, isRoostError } from '../errors.js';
import type { DispatchEvent, RedeliveryReason } from '../flow/events.js';
import type { Handler, HandlerContext } from '../flow/handler.js';
import type { Journal } from '../store/journal.js';
import type { DispatchLease } from '../store/store.js';
import type { Logger } from '../telemetry/logger.js';
import type { Subscription, Transport } from '../transport/transport.js';
import {
  H_DEDUP_ID,
  H_DELIVERY,
  H_EPOCH,
  H_FLOW,
  H_REPLY,
  controlTopic,
  dispatchKey,
  fromWire,
  messageEnvelope,
  ownerTopic,
  readWorkerMessage,
  wireError,
  workTopic,
  workerTopic,
  type ControlMessage,
  type RelayedMessage,
  type WorkerMessage,
} from './protocol.js';

/** The first backoff after a `busy` answer; it doubles with each one in a row, up to half a lease. */
const BUSY_BASE_MS = 50;
/** `ROOST_ERR_QUARANTINED` answers a run sends elsewhere before it fails with one. */
const MAX_QUARANTINED_ANSWERS = 3;

/** A worker that missed a lease is avoided by the router for this many leases (or until it answers). */
const SUSPECT_MS_PER_LEASE = 3;
/** The load a suspect counts as when the router compares workers. */
const SUSPECT_LOAD = 1_000_000_000;

/** Leases of resumed envelopes kept at most (a bound on memory; normally far fewer). */
const MAX_JOURNALED = 100_000;

/** What the dispatcher counted. */
export interface DispatcherStats {
  /** Envelopes out with workers now. */
  readonly outstanding: number;
  readonly dispatched: number;
  readonly redelivered: number;
  /** Worker messages that were not understood (dropped) or came for no outstanding dispatch (late). */
  readonly dropped: number;
  readonly late: number;
}

export interface DispatcherOptions {
  readonly namespace: string;
  /** This process (the owner of its traces). */
  readonly id: string;
  readonly transport: Transport;
  readonly leaseMs: number;
  readonly logger: Logger;
  readonly publish: (event: DispatchEvent) => void;
  /** Where leases are journaled (null: no journal), so that a new owner knows what a worker may still hold. */
  readonly journal: Journal | null;
  /**
   * The worker to send a first delivery of `flow`/`node` to (capability routing by the fleet's
   * registry), or null to let the broker pick a member of the node's worker group.
   */
  readonly pick: ((flow: string, node: string, extraLoad: (worker: string) => number) => string | null) | null;
}

class Dispatch {
  delivery = 1;
  worker: string | null = null;
  /** A worker picked for it by the registry: counted against that worker's load until it settles or goes again. */
  picked: string | null = null;
  /** The worker this delivery goes to directly (the picked one, or the holder a resumed lease names); null: the group. */
  direct: string | null = null;
  /** Relayed ctx calls so far (their `n`): a rerun's repeats are skipped. */
  relayed = 0;
  /** `busy` answers in a row (the backoff grows with them). */
  busy = 0;
  /** `ROOST_ERR_QUARANTINED` answers: sent elsewhere a few times, then the run fails with it. */
  quarantined = 0;
  leaseUntil: number;
  /** ctx.emit / reply / chunk relayed from the worker, in order: the result waits for them. */
  chain: Promise<unknown> = Promise.resolve();
  busyTimer: ReturnType<typeof setTimeout> | null = null;
  constructor(
    readonly key: string,
    readonly flow: string,
    readonly node: string,
    readonly env: Envelope,
    readonly ctx: HandlerContext,
    readonly resolve: (value: unknown) => void,
    readonly reject: (error: Error) => void,
    now: number,
    leaseMs: number,
    /** The node's timeout: the longest it may go unheld (see {@link unheldSince}), or null. */
    readonly timeoutMs: number | null,
  ) {
    this.leaseUntil = now + leaseMs;
    this.unheldSince = now;
  }
  /** Since when no worker has acknowledged this delivery (null while one holds it). */
  unheldSince: number | null;
}

/** See the module comment. */
export class Dispatcher {
  private readonly out = new Map<string, Dispatch>();
  private readonly perWorker = new Map<string, number>();
  /**
   * Workers whose lease ran out lately, until when: the registry may still list them (on NATS a
   * dead process stays until its record expires), so the router avoids them meanwhile. Any
   * message from one clears it.
   */
  private readonly suspects = new Map<string, number>();
  private readonly reply: string;
  /** Names this run of the process: a worker keys what it remembers of aborts by it. */
  readonly epoch = randomBytes(6).toString('hex');
  private sub: Subscription | null = null;
  private sweeper: ReturnType<typeof setInterval> | null = null;
  private counts = { dispatched: 0, redelivered: 0, dropped: 0, late: 0 };
  /** Leases read back from the journal for envelopes resumed here, until they are sent again. */
  private readonly journaled = new Map<string, DispatchLease>();
  /** Closing with the traces left in the journal: aborts are not sent to the workers. */
  private suspended = false;

  constructor(private readonly options: DispatcherOptions) {
    this.reply = ownerTopic(options.namespace, options.id);
  }

  /** Subscribes to what workers send back; then the lease sweep runs. */
  async start(): Promise<void> {
    this.sub = await this.options.transport.subscribe(this.reply, (env) => this.onMessage(env));
    const every = Math.max(20, Math.min(1_000, Math.floor(this.options.leaseMs / 4)));
    this.sweeper = setInterval(() => this.sweep(), every);
    this.sweeper.unref();
  }

  /**
   * The handler of the remote node `node` of `flow`. `timeoutMs` (the node's) bounds how long an
   * envelope may go without any worker holding it (none alive, none with room): then the run
   * fails with `ROOST_ERR_NODE_TIMEOUT`. The run itself is timed by the worker that holds it.
   */
  handler(flow: string, node: string, timeoutMs: number | null): Handler {
    return (env, ctx) => this.dispatch(flow, node, env, ctx, timeoutMs);
  }

  /**
   * From now on the runs that end are not aborted on the workers: the process is closing and
   * leaves its traces in the journal, so whoever resumes them gets the answer of the run a
   * worker still holds (it sends the envelope again; the worker answers it instead of running it twice).
   */
  suspend(): void {
    this.suspended = true;
  }

  /**
   * A pending envelope resumed from the journal (a restart, or a takeover of a lapsed owner's
   * traces) had this lease: when it is sent again, it goes as the next delivery, and a worker that
   * holds it still answers the new owner instead of running it again.
   */
  resumed(envelopeId: string, lease: DispatchLease): void {
    if (this.journaled.size >= MAX_JOURNALED) this.journaled.clear(); // envelopes of traces that ended before they were sent
    this.journaled.set(envelopeId, lease);
  }

  stats(): DispatcherStats {
    return { outstanding: this.out.size, ...this.counts };
  }

  private dispatch(flow: string, node: string, env: Envelope, ctx: HandlerContext, timeoutMs: number | null): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      const key = dispatchKey(env.id, env.attempt);
      const signal = ctx.signal;
      if (signal.aborted) {
        reject(ensureError(signal.reason));
        return;
      }
      const d = new Dispatch(key, flow, node, env, ctx, resolve, reject, Date.now(), this.options.leaseMs, timeoutMs);
      this.out.set(key, d);
      this.counts.dispatched++;
      signal.addEventListener('abort', () => this.aborted(d, ensureError(signal.reason)), { once: true });
      const before = this.journaled.get(env.id);
      if (before !== undefined) {
        // Resumed: the worker that held it may be running it still; it goes to that one first
        // (which answers it instead of running it again), and to the group if its lease runs out.
        this.journaled.delete(env.id);
        d.delivery = before.delivery + 1;
        d.direct = before.worker;
        this.redelivered(d, before.worker, 'resumed');
        this.send(d);
        return;
      }
      const pick = this.options.pick;
      if (pick !== null) {
        const worker = pick(flow, node, (w) => (this.suspect(w) ? SUSPECT_LOAD : (this.perWorker.get(w) ?? 0)));
        if (worker !== null && !this.suspect(worker)) {
          d.picked = worker;
          d.direct = worker;
          this.perWorker.set(worker, (this.perWorker.get(worker) ?? 0) + 1);
        }
      }
      this.send(d);
    });
  }

  /** Sends `d`: to `d.direct` when set, else to the node's group; `journal`: its lease is journaled. */
  private send(d: Dispatch, journal = true): void {
    const ns = this.options.namespace;
    const topic = d.direct !== null ? workerTopic(ns, d.direct) : workTopic(ns, d.flow, d.node);
    const env = d.env;
    const headers = {
      ...env.headers,
      [H_REPLY]: this.reply,
      [H_DELIVERY]: String(d.delivery),
      [H_FLOW]: d.flow,
      [H_EPOCH]: this.epoch,
      // A broker that drops repeats by message id (JetStream) must not drop a redelivery or a retry.
      [H_DEDUP_ID]: `${d.key}/${d.delivery}/${this.epoch}`,
    };
    const task: Envelope = { ...env, headers };
    if (journal) this.options.journal?.lease({ envelopeId: env.id, worker: d.direct, delivery: d.delivery, until: d.leaseUntil });
    this.options.transport.publish(topic, task).catch((error: unknown) => {
      const err = ensureError(error);
      if (this.out.get(d.key) !== d) return;
      if (isRoostError(err) && !err.retryable) {
        // Refused for good (too large, not authorised): sending it again cannot help.
        this.settle(d);
        d.reject(err);
        return;
      }
      // The broker is away: the lease sends it again when it runs out.
      this.options.logger.warn({ err, traceId: env.traceId, node: d.node }, 'sending a task to the fleet failed; it goes again when its lease runs out');
    });
  }

  private aborted(d: Dispatch, reason: Error): void {
    if (this.out.get(d.key) !== d) return;
    this.settle(d);
    if (this.suspended) {
      d.reject(reason);
      return;
    }
    const cancelled = isRoostError(reason, 'ROOST_ERR_TRACE_CANCELLED');
    const message: ControlMessage = cancelled
      ? { op: 'cancel', traceId: d.env.traceId, epoch: this.epoch, e: wireError(reason) }
      : { op: 'abort', k: d.key, traceId: d.env.traceId, epoch: this.epoch, e: wireError(reason) };
    this.options.transport.publish(controlTopic(this.options.namespace), messageEnvelope(d.env, d.node, d.env.from, message)).catch((error: unknown) => {
      this.options.logger.warn({ err: ensureError(error), traceId: d.env.traceId, node: d.node }, 'telling the workers of an abort failed; the worker finds out when it answers');
    });
    d.reject(reason);
  }

  /** Forgets `d`: it settles now. */
  private settle(d: Dispatch): void {
    this.out.delete(d.key);
    if (d.busyTimer !== null) clearTimeout(d.busyTimer);
    this.unpick(d);
  }

  private onMessage(env: Envelope): void {
    const m = readWorkerMessage(env.payload);
    if (m === null) {
      this.counts.dropped++;
      this.options.logger.warn({ envelopeId: env.id, from: env.from }, 'a message on the owner topic is not a worker message; dropped');
      return;
    }
    const now = Date.now();
    if (m.t === 'beat') {
      for (const k of m.ks) {
        const d = this.out.get(k);
        if (d !== undefined) this.renew(d, m.w, now);
      }
      return;
    }
    const d = this.out.get(m.k);
    if (d === undefined) {
      this.counts.late++;
      // A late emit (its dispatch settled, elsewhere or here) still waits for a word: it went nowhere, but must not hang.
      if (m.t === 'emit') this.relayed(m.k, env, m.w, m.n);
      return;
    }
    this.handle(d, m, now);
  }

  /** Whether `worker` missed a lease lately (see {@link suspects}); with `until`, marks it so until then. */
  private suspect(worker: string, until?: number): boolean {
    if (until !== undefined) {
      this.suspects.delete(worker); // re-inserted last: the map stays in order of expiry
      this.suspects.set(worker, until);
      const now = Date.now();
      for (const [w, u] of this.suspects) {
        if (u > now) break;
        this.suspects.delete(w);
      }
      return true;
    }
    const at = this.suspects.get(worker);
    if (at === undefined) return false;
    if (at > Date.now()) return true;
    this.suspects.delete(worker);
    return false;
  }

  private renew(d: Dispatch, worker: string, now: number): void {
    d.leaseUntil = now + this.options.leaseMs;
    if (this.suspects.size > 0) this.suspects.delete(worker); // it answers: alive
    // The first worker to acknowledge this delivery holds it; another copy's beats only show it is alive.
    if (d.worker !== null) return;
    d.worker = worker;
    d.unheldSince = null;
    // Who holds it is journaled (once per holder; heartbeats renew the lease in memory only).
    this.options.journal?.lease({ envelopeId: d.env.id, worker, delivery: d.delivery, until: d.leaseUntil });
  }

  private handle(d: Dispatch, m: WorkerMessage, now: number): void {
    const ctx = d.ctx;
    switch (m.t) {
      case 'emit': {
        this.renew(d, m.w, now);
        const went = (): void => this.relayed(d.key, d.env, m.w, m.n);
        if (!this.nextRelay(d, m.n)) {
          went(); // a rerun's repeat of one that went on already
          return;
        }
        d.chain = d.chain.then(() => ctx.emit(m.v, m.to === undefined ? undefined : { to: m.to })).then(went, (error: unknown) => this.relayFailed(d, error));
        return;
      }
      case 'reply':
        this.renew(d, m.w, now);
        if (!this.nextRelay(d, m.n)) return;
        d.chain = d.chain.then(() => ctx.reply(m.v)).catch((error: unknown) => this.relayFailed(d, error));
        return;
      case 'chunk':
        this.renew(d, m.w, now);
        if (!this.nextRelay(d, m.n)) return;
        d.chain = d.chain.then(() => ctx.chunk(m.v));
        return;
      case 'done':
        this.settle(d);
        void d.chain.then(() => d.resolve(m.v));
        return;
      case 'fail':
        if (m.e.code === 'ROOST_ERR_QUARANTINED' && d.worker !== null && m.w !== d.worker) return; // a stale copy's word
        if (m.e.code === 'ROOST_ERR_QUARANTINED' && ++d.quarantined <= MAX_QUARANTINED_ANSWERS) {
          // The agent is quarantined on that worker only: another may run it. Not an attempt.
          this.suspect(m.w, now + SUSPECT_MS_PER_LEASE * this.options.leaseMs);
          this.redeliverLater(d, 'busy');
          return;
        }
        this.settle(d);
        void d.chain.then(() => d.reject(fromWire(m.e)));
        return;
      case 'busy':
        if (d.worker !== null && m.w !== d.worker) return; // a stale copy's word: another worker holds it
        this.redeliverLater(d, 'busy');
        return;
      case 'beat':
        return; // handled in onMessage
    }
  }

  /** Tells worker `w` that its emit `n` of task `k` went on (found room after the node): its `ctx.emit` resolves. */
  private relayed(k: string, about: Envelope, w: string, n: number): void {
    const message: RelayedMessage = { t: 'relayed', k, n };
    this.options.transport.publish(workerTopic(this.options.namespace, w), messageEnvelope(about, about.to, about.to, message)).catch((error: unknown) => {
      this.options.logger.warn({ err: ensureError(error), traceId: about.traceId }, 'telling a worker its emit went on failed; it sends the emit again with its next heartbeat');
    });
  }

  /** Whether relayed call `n` is new (a rerun repeats the ones relayed already: skipped). */
  private nextRelay(d: Dispatch, n: number): boolean {
    if (n < d.relayed) return false;
    d.relayed = n + 1;
    return true;
  }

  private relayFailed(d: Dispatch, error: unknown): void {
    this.options.logger.warn({ err: ensureError(error), traceId: d.env.traceId, node: d.node }, 'a ctx call relayed from a worker failed (the run is over)');
  }

  /** A busy worker: the envelope goes again soon, to the group, after a backoff that grows with each `busy` in a row. */
  private redeliverLater(d: Dispatch, reason: RedeliveryReason): void {
    if (d.busyTimer !== null) return;
    const cap = Math.max(BUSY_BASE_MS, Math.floor(this.options.leaseMs / 2));
    const delay = Math.floor(Math.min(cap, BUSY_BASE_MS * 2 ** Math.min(16, d.busy++)) * (0.5 + Math.random()));
    d.leaseUntil = Date.now() + this.options.leaseMs;
    d.busyTimer = setTimeout(() => {
      d.busyTimer = null;
      if (this.out.get(d.key) === d) this.redeliver(d, reason);
    }, delay);
    d.busyTimer.unref();
  }

  private redeliver(d: Dispatch, reason: RedeliveryReason): void {
    const previous = d.worker;
    const missed = previous ?? d.direct;
    if (reason === 'lease_expired' && missed !== null) this.suspect(missed, Date.now() + SUSPECT_MS_PER_LEASE * this.options.leaseMs);
    if (reason === 'lease_expired') d.busy = 0;
    d.delivery++;
    d.worker = null;
    d.unheldSince ??= Date.now();
    d.direct = null; // again: to the group
    this.unpick(d);
    d.leaseUntil = Date.now() + this.options.leaseMs;
    this.redelivered(d, previous, reason);
    this.send(d, reason !== 'busy'); // a busy round is not worth a journal write
  }

  /** `d` no longer counts against the worker the registry picked for it. */
  private unpick(d: Dispatch): void {
    if (d.picked === null) return;
    const n = (this.perWorker.get(d.picked) ?? 1) - 1;
    if (n <= 0) this.perWorker.delete(d.picked);
    else this.perWorker.set(d.picked, n);
    d.picked = null;
  }

  private redelivered(d: Dispatch, previous: string | null, reason: RedeliveryReason): void {
    this.counts.redelivered++;
    const env = d.env;
    this.options.publish({
      type: 'dispatch_redelivered',
      ts: Date.now(),
      flow: d.flow,
      node: d.node,
      traceId: env.traceId,
      tenant: env.tenant,
      envelopeId: env.id,
      attempt: env.attempt,
      delivery: d.delivery,
      worker: previous,
      reason,
    });
    this.options.logger.info({ traceId: env.traceId, node: d.node, delivery: d.delivery, worker: previous, reason }, 'sending a task to the fleet again');
  }

  private sweep(): void {
    const now = Date.now();
    if (this.options.transport.state !== 'connected') {
      // The broker is away from this process, not the workers from it: hold every lease until it is back.
      for (const d of this.out.values()) d.leaseUntil = Math.max(d.leaseUntil, now + this.options.leaseMs);
      return;
    }
    const lapsed: Dispatch[] = [];
    const unheld: Dispatch[] = [];
    for (const d of this.out.values()) {
      if (d.timeoutMs !== null && d.unheldSince !== null && now - d.unheldSince >= d.timeoutMs) unheld.push(d);
      else if (d.leaseUntil <= now && d.busyTimer === null) lapsed.push(d);
    }
    for (const d of unheld) {
      // No worker took it within the node's timeout (none alive, or none with room): the run fails, and the owner's retries apply.
      this.settle(d);
      d.reject(
        new RoostError('ROOST_ERR_NODE_TIMEOUT', `node ${d.node}: no worker of the fleet took the envelope within ${d.timeoutMs} ms`, {
          details: { node: d.node, timeoutMs: d.timeoutMs, attempt: d.env.attempt, deliveries: d.delivery },
        }),
      );
    }
    for (const d of lapsed) this.redeliver(d, 'lease_expired');
  }

  /**
   * Stops: what is still out is failed with `ROOST_ERR_TRANSPORT_CLOSED` (the flow has been
   * drained or stopped before this, so normally nothing is).
   */
  async close(): Promise<void> {
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const d of [...this.out.values()]) {
      this.settle(d);
      d.reject(new RoostError('ROOST_ERR_TRANSPORT_CLOSED', `the fleet of this process is closed; node ${d.node} got no answer`, { details: { node: d.node } }));
    }
    await this.sub?.unsubscribe().catch(() => {});
    this.sub = null;
  }
}
