/**
 * The worker's side of a remote node: takes tasks from the node's worker group (and from its own
 * topic, where the registry's router sends them), runs the node's handler on them with the
 * node's input validation, middlewares and concurrency, and answers the owner of the trace.
 *
 * - It acknowledges a task shortly after it took it (`ACK_DELAY_MS`, at most a tenth of the
 *   lease), all the tasks of an owner taken meanwhile by one `beat`, and leaves out those it has
 *   answered by then (the answer says more: a short task costs no acknowledgement at all). It
 *   sends a heartbeat for every task it holds every third of the lease, so the owner sends a task
 *   again only when this worker is gone. Its answers of one turn of the event loop go out
 *   together at the end of the turn, to share one socket write (see `send`).
 * - A task it holds already (the broker's own redelivery, or the owner's after a missed
 *   heartbeat) is not run twice: it is acknowledged again, and the answer goes to whichever owner
 *   asked last. A task it finished lately gets the same answer again.
 * - `ctx.step` and `ctx.checkpoint` go to this process's store: with the fleet's shared
 *   PostgreSQL, a step recorded by a worker that died is not run again by the next one.
 * - The node's `timeoutMs` is the worker's to enforce, from when the run starts here (time a task
 *   waits for a slot does not count): at it, the handler's signal aborts and the owner gets
 *   `ROOST_ERR_NODE_TIMEOUT` at once (its retries apply), as for a local run. The envelope's
 *   deadline aborts it here too. A cancel of the trace, or an abort from the owner, aborts the
 *   handler's signal; a task whose abort came first is refused.
 */
import type { Envelope } from '../envelope/envelope.js';
import { toJsonWithin } from '../envelope/codec.js';
import { RoostError, ensureError, invalidOption } from '../errors.js';
import type { ContextEmitOptions, HandlerContext, StepInfo } from '../flow/handler.js';
import { runKey, stepKey } from '../flow/keys.js';
import type { ResolvedNodePolicy } from '../flow/policy.js';
import type { Agent } from '../runtime/agent.js';
import type { Journal } from '../store/journal.js';
import type { Logger } from '../telemetry/logger.js';
import { topicSegments, type Subscription, type Transport } from '../transport/transport.js';
import {
  H_EPOCH,
  H_FLOW,
  H_REPLY,
  controlTopic,
  dispatchKey,
  fromWire,
  messageEnvelope,
  readControlMessage,
  readRelayedMessage,
  wireError,
  workGroup,
  workTopic,
  workerTopic,
  type WireError,
  type WorkerMessage,
} from './protocol.js';

/** What a worker needs of a node it runs (the flow's node runner). */
export interface WorkerNode {
  readonly name: string;
  readonly policy: ResolvedNodePolicy;
  readonly agent: Agent | null;
  readonly outByName: ReadonlyMap<string, unknown>;
  invoke(env: Envelope, ctx: HandlerContext): unknown;
}

export interface WorkerOptions {
  readonly namespace: string;
  /** This process, as the registry knows it. */
  readonly id: string;
  readonly transport: Transport;
  readonly leaseMs: number;
  readonly logger: Logger;
  readonly journal: Journal | null;
  readonly maxPayloadBytes: number;
  /** Tasks held beyond those running, per node, before the worker answers `busy` (default 1,024). */
  readonly maxQueued?: number;
}

/** What a worker counted. */
export interface WorkerStats {
  /** Tasks running or waiting for a slot here now. */
  readonly held: number;
  readonly running: number;
  readonly completed: number;
  readonly failed: number;
  /** Tasks it held or had finished already, received again. */
  readonly duplicates: number;
  readonly busy: number;
  /** Messages that were not tasks or control messages (dropped). */
  readonly dropped: number;
}

/** Finished tasks whose answer is kept to answer a redelivery: at most this many, for at most {@link RECENT_LEASES} leases. */
const RECENT_MAX = 2_000;
const RECENT_LEASES = 3;
/** Step results and checkpoints a worker without a store keeps at most (the oldest go first). */
const MEMORY_MAX = 2_000;
/**
 * How long after it takes a task the worker acknowledges it, at most (and at most a tenth of the
 * lease): a task answered by then needs no acknowledgement, and those taken meanwhile share one.
 */
const ACK_DELAY_MS = 20;
/** How long an abort or cancel is remembered for a task that comes after it. */
const ABORT_MEMORY_MS = 60_000;

interface Hosted {
  readonly flow: string;
  readonly node: WorkerNode;
  running: number;
  readonly queue: Job[];
}

class Job {
  readonly controller = new AbortController();
  timer: ReturnType<typeof setTimeout> | null = null;
  over = false;
  /** Timed out here while its handler still runs (it counts as abandoned until it settles). */
  abandoned = false;
  /** `ctx.emit` calls waiting for their owner to say they went on (its backpressure), by number. */
  readonly waiting = new Map<number, { readonly resolve: () => void; readonly reject: (error: Error) => void; readonly message: WorkerMessage }>();
  /** ctx.emit, ctx.reply and ctx.chunk calls so far: numbered, so an owner skips those a rerun repeats. */
  relays = 0;
  constructor(
    readonly key: string,
    readonly env: Envelope,
    readonly hosted: Hosted,
    /** Where the answer goes: the owner that asked last. */
    public reply: string,
    public epoch: string,
  ) {}
}

/** The `ctx` of a task run here. */
class WorkerContext implements HandlerContext {
  private loggerValue: Logger | null = null;
  constructor(
    private readonly worker: Worker,
    private readonly job: Job,
  ) {}
  get signal(): AbortSignal {
    return this.job.controller.signal;
  }
  get traceId(): string {
    return this.job.env.traceId;
  }
  get tenant(): string {
    return this.job.env.tenant;
  }
  get flow(): string {
    return this.job.hosted.flow;
  }
  get node(): string {
    return this.job.hosted.node.name;
  }
  get attempt(): number {
    return this.job.env.attempt;
  }
  get deadline(): number | null {
    return this.job.env.deadline;
  }
  get idempotencyKey(): string {
    const env = this.job.env;
    return runKey(env.traceId, this.flow, this.node, env.id);
  }
  get logger(): Logger {
    return (this.loggerValue ??= this.worker.logger.child({ traceId: this.traceId, tenant: this.tenant, flow: this.flow, node: this.node, worker: this.worker.id }));
  }
  emit(payload: unknown, options?: ContextEmitOptions): Promise<void> {
    const to = options?.to;
    if (to !== undefined && !this.job.hosted.node.outByName.has(to)) {
      return Promise.reject(
        new RoostError('ROOST_ERR_INVALID_OPTION', `ctx.emit: node ${this.node} has no edge to ${to}`, {
          field: 'options.to',
          expected: `one of ${[...this.job.hosted.node.outByName.keys()].join(', ') || '(no successors)'}`,
          received: to,
        }),
      );
    }
    return this.worker.relay(this.job, 'emit', payload, to);
  }
  reply(payload: unknown): Promise<void> {
    return this.worker.relay(this.job, 'reply', payload);
  }
  chunk(data: unknown): void {
    this.worker.relay(this.job, 'chunk', data).catch(() => {});
  }
  step<T>(name: string, fn: (step: StepInfo) => T | Promise<T>): Promise<T> {
    if (typeof name !== 'string' || name.length === 0 || name.length > 200) return Promise.reject(invalidOption('ctx.step.name', 'a string of 1 to 200 characters', name));
    if (typeof fn !== 'function') return Promise.reject(invalidOption('ctx.step.fn', 'a function', fn));
    const env = this.job.env;
    return this.worker.step(this.job, stepKey(env.traceId, this.flow, this.node, env.id, name), fn);
  }
  checkpoint(state: unknown): Promise<void> {
    return this.worker.checkpoint(this.job, `checkpoint:${this.idempotencyKey}`, state);
  }
  lastCheckpoint<T = unknown>(): Promise<T | undefined> {
    return this.worker.lastCheckpoint<T>(`checkpoint:${this.idempotencyKey}`);
  }
}

/** See the module comment. */
export class Worker {
  private readonly hosted = new Map<string, Hosted>();
  private readonly active = new Map<string, Job>();
  private readonly recent = new Map<string, { readonly message: WorkerMessage; readonly at: number }>();
  /** Steps running now, by step key, across tasks: a retry waits for its timed-out attempt's step instead of running it again. */
  private readonly steps = new Map<string, Promise<unknown>>();
  /** `epoch|key` or `epoch|trace:<id>` → when the memory of that abort ends. */
  private readonly aborts = new Map<string, { readonly until: number; readonly e: WireError }>();
  /** Steps and checkpoints when the runtime has no store (this process only; the newest {@link MEMORY_MAX}). */
  private readonly memory = new Map<string, unknown>();
  private readonly subs: Subscription[] = [];
  private control: Subscription | null = null;
  /** Closing past the grace: what still runs is aborted and not answered (the owner sends it again). */
  private abandoning = false;
  private beatTimer: ReturnType<typeof setInterval> | null = null;
  private closing = false;
  private idle: (() => void)[] = [];
  private counts = { completed: 0, failed: 0, duplicates: 0, busy: 0, dropped: 0 };
  private readonly maxQueued: number;
  /** The answers this turn of the event loop sends at its end (see {@link send}). */
  private outbox: { readonly topic: string; readonly about: Envelope; readonly message: WorkerMessage }[] = [];
  private flushTimer: ReturnType<typeof setImmediate> | null = null;
  /** Tasks taken and not yet acknowledged, per owner topic (see {@link acknowledge}). */
  private taken = new Map<string, { readonly about: Envelope; readonly ks: string[] }>();
  private ackTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly ackDelayMs: number;

  constructor(private readonly options: WorkerOptions) {
    this.maxQueued = options.maxQueued ?? 1_024;
    this.ackDelayMs = Math.min(ACK_DELAY_MS, Math.floor(options.leaseMs / 10));
  }

  get id(): string {
    return this.options.id;
  }
  get logger(): Logger {
    return this.options.logger;
  }

  /** Hosts `node` of `flow` (before {@link start}). */
  host(flow: string, node: WorkerNode): void {
    this.hosted.set(`${flow}/${node.name}`, { flow, node, running: 0, queue: [] });
  }

  /** The agents of the nodes it hosts. */
  agents(): Agent[] {
    const out = new Set<Agent>();
    for (const h of this.hosted.values()) if (h.node.agent !== null) out.add(h.node.agent);
    return [...out];
  }

  /** The `flow/node` names it works on. */
  nodes(): string[] {
    return [...this.hosted.keys()];
  }

  /** Runs in progress and held, and the run slots of every hosted node: its load and capacity. */
  load(): { load: number; capacity: number } {
    let capacity = 0;
    for (const h of this.hosted.values()) capacity += h.node.policy.concurrency;
    return { load: this.active.size, capacity };
  }

  /** Subscribes: the control topic first (so no abort is missed), then its own topic and each node's group. */
  async start(): Promise<void> {
    const { transport, namespace: ns } = this.options;
    this.control = await transport.subscribe(controlTopic(ns), (env) => this.onControl(env));
    this.subs.push(await transport.subscribe(workerTopic(ns, this.options.id), (env) => this.onTask(env)));
    for (const h of this.hosted.values()) {
      this.subs.push(await transport.subscribe(workTopic(ns, h.flow, h.node.name), (env) => this.onTask(env), { group: workGroup(ns, h.flow, h.node.name) }));
    }
    const every = Math.max(10, Math.floor(this.options.leaseMs / 3));
    this.beatTimer = setInterval(() => this.beat(), every);
    this.beatTimer.unref();
  }

  stats(): WorkerStats {
    let running = 0;
    for (const h of this.hosted.values()) running += h.running;
    return { held: this.active.size, running, ...this.counts };
  }

  // ---- tasks --------------------------------------------------------------------------------

  /**
   * One task. The transport's handler call returns at once: a worker never holds the broker's
   * reading up for a run (that would stall control messages and its own close on MQTT, whose
   * receive maximum caps messages in handling); `maxQueued` and `busy` bound what it holds.
   */
  private onTask(env: Envelope): void {
    if (env.kind === 'event') {
      this.onRelayed(env);
      return;
    }
    const reply = env.headers[H_REPLY];
    const flow = env.headers[H_FLOW];
    const epoch = env.headers[H_EPOCH] ?? '';
    if (reply === undefined || flow === undefined || !validTopic(reply)) {
      this.counts.dropped++;
      this.logger.warn({ envelopeId: env.id, traceId: env.traceId }, 'a message on a work topic is not a task of the fleet; dropped');
      return;
    }
    const key = dispatchKey(env.id, env.attempt);
    const held = this.active.get(key);
    if (held !== undefined) {
      this.counts.duplicates++;
      const moved = held.reply !== reply || held.epoch !== epoch;
      held.reply = reply; // a new owner (after a takeover) gets the answer
      held.epoch = epoch;
      // Emits waiting for the old owner's word go to the new one, which answers them.
      if (moved) for (const w of held.waiting.values()) this.publish(reply, held.env, w.message);
      this.acknowledge(held);
      return;
    }
    const done = this.recent.get(key);
    if (done !== undefined) {
      this.counts.duplicates++;
      this.send(reply, env, done.message);
      return;
    }
    const aborted = this.aborts.get(`${epoch}|${key}`) ?? this.aborts.get(`${epoch}|trace:${env.traceId}`);
    if (aborted !== undefined && aborted.until > Date.now()) {
      this.send(reply, env, { t: 'fail', k: key, w: this.id, e: aborted.e });
      return;
    }
    const hosted = this.hosted.get(`${flow}/${env.to}`);
    if (hosted === undefined) {
      this.send(reply, env, { t: 'fail', k: key, w: this.id, e: wireError(new RoostError('ROOST_ERR_AGENT_NOT_FOUND', `worker ${this.id} does not run node ${env.to} of flow ${flow}`, { retryable: true })) });
      return;
    }
    if (this.closing || (hosted.running >= hosted.node.policy.concurrency && hosted.queue.length >= this.maxQueued)) {
      this.counts.busy++;
      this.send(reply, env, { t: 'busy', k: key, w: this.id });
      return;
    }
    const job = new Job(key, env, hosted, reply, epoch);
    this.active.set(key, job);
    this.acknowledge(job);
    if (hosted.running < hosted.node.policy.concurrency) this.run(job);
    else hosted.queue.push(job);
  }

  private run(job: Job): void {
    const hosted = job.hosted;
    const env = job.env;
    hosted.running++;
    const now = Date.now();
    const node = hosted.node;
    if (env.deadline !== null && env.deadline <= now) {
      this.finish(job, null, new RoostError('ROOST_ERR_DEADLINE_EXCEEDED', `trace ${env.traceId}: deadline passed before node ${node.name} could run`, { details: { node: node.name, deadline: env.deadline } }));
      return;
    }
    if (node.agent !== null && node.agent.quarantined) {
      this.finish(job, null, new RoostError('ROOST_ERR_QUARANTINED', `agent ${node.agent.name} is quarantined on worker ${this.id}`, { details: { agent: node.agent.name, node: node.name } }));
      return;
    }
    // The worker's own timer: the earlier of the node's timeout and the deadline, so a worker cut
    // off from the owner stops too.
    const timeoutAt = node.policy.timeoutMs === null ? Infinity : now + node.policy.timeoutMs;
    const at = Math.min(timeoutAt, env.deadline ?? Infinity);
    if (at !== Infinity) {
      job.timer = setTimeout(() => {
        job.timer = null;
        const byDeadline = env.deadline !== null && env.deadline <= Date.now();
        const error = byDeadline
          ? new RoostError('ROOST_ERR_DEADLINE_EXCEEDED', `trace ${env.traceId}: deadline passed while node ${node.name} ran`, { details: { node: node.name, deadline: env.deadline } })
          : new RoostError('ROOST_ERR_NODE_TIMEOUT', `node ${node.name} timed out after ${node.policy.timeoutMs} ms`, { details: { node: node.name, timeoutMs: node.policy.timeoutMs, attempt: env.attempt } });
        job.controller.abort(error);
        // As a local run: the attempt is over now (answered, its slot free); a handler that
        // goes on past its abort counts against its agent's abandoned runs until it settles.
        job.abandoned = true;
        node.agent?.abandonedStarted();
        this.finish(job, null, error);
      }, Math.max(0, at - now));
      job.timer.unref();
    }
    const ctx = new WorkerContext(this, job);
    let result: unknown;
    try {
      result = node.invoke(env, ctx);
    } catch (error) {
      this.finish(job, null, ensureError(error));
      return;
    }
    Promise.resolve(result).then(
      (value) => this.finish(job, value, null),
      (error: unknown) => this.finish(job, null, ensureError(error)),
    );
  }

  /** A job ends; `ran`: it held a run slot (a queued job aborted before it ran did not). */
  private finish(job: Job, value: unknown, error: Error | null, ran = true): void {
    if (job.over) {
      if (job.abandoned) {
        job.abandoned = false; // the abandoned handler settled
        job.hosted.node.agent?.abandonedSettled();
      }
      return;
    }
    job.over = true;
    if (job.timer !== null) clearTimeout(job.timer);
    const hosted = job.hosted;
    if (ran) hosted.running--;
    // A run that returned: its emits go on at the owner anyway (relays come before the answer), so
    // the ones still waiting resolve; a run that failed or was aborted fails them.
    if (error === null) for (const w of job.waiting.values()) w.resolve();
    else this.settleWaiting(job, error);
    job.waiting.clear();
    hosted.node.agent?.recordRun(error !== null, Date.now());
    const w = this.id;
    let message: WorkerMessage;
    if (error === null) {
      this.counts.completed++;
      message = value === undefined ? { t: 'done', k: job.key, w } : { t: 'done', k: job.key, w, v: value };
    } else {
      this.counts.failed++;
      message = { t: 'fail', k: job.key, w, e: wireError(error) };
    }
    this.active.delete(job.key);
    if (!this.abandoning) {
      this.remember(job.key, message);
      this.send(job.reply, job.env, message);
    }
    const next = ran && !this.abandoning && !this.closing ? hosted.queue.shift() : undefined;
    if (next !== undefined) this.run(next);
    if (this.active.size === 0 && this.idle.length > 0) for (const resolve of this.idle.splice(0)) resolve();
  }

  private remember(key: string, message: WorkerMessage): void {
    const now = Date.now();
    this.recent.set(key, { message, at: now });
    // Oldest first (insertion order): drop what is over the count or older than a few leases.
    const oldest = now - RECENT_LEASES * this.options.leaseMs;
    for (const [k, r] of this.recent) {
      if (this.recent.size <= RECENT_MAX && r.at > oldest) break;
      this.recent.delete(k);
    }
  }

  // ---- what the handler's ctx sends ------------------------------------------------------------

  /** @internal ctx.emit, ctx.reply and ctx.chunk: relayed to the owner, in order. */
  relay(job: Job, t: 'emit' | 'reply' | 'chunk', value: unknown, to?: string): Promise<void> {
    if (job.over || job.controller.signal.aborted) {
      return Promise.reject(
        new RoostError('ROOST_ERR_INVALID_STATE', `ctx.${t}: the run of ${job.hosted.node.name} is over (timed out, cancelled or finished)`, { field: `ctx.${t}`, expected: 'a call while the handler runs' }),
      );
    }
    let v: unknown;
    try {
      v = JSON.parse(toJsonWithin(`ctx.${t}`, value, this.options.maxPayloadBytes)) as unknown;
    } catch (error) {
      return Promise.reject(ensureError(error));
    }
    const n = job.relays++;
    const message: WorkerMessage = t === 'emit' ? { t, k: job.key, w: this.id, n, v, ...(to === undefined ? {} : { to }) } : { t, k: job.key, w: this.id, n, v };
    const sent = this.options.transport.publish(job.reply, messageEnvelope(job.env, job.env.to, job.env.from, message));
    if (t !== 'emit') return sent;
    // An emit resolves when the owner says it went on: the flow's backpressure, as in one process.
    // Until then it is sent again with every heartbeat (a lost answer, or a new owner).
    const went = new Promise<void>((resolve, reject) => job.waiting.set(n, { resolve, reject, message }));
    const p = sent.then(
      () => went,
      (error: unknown) => {
        job.waiting.delete(n);
        throw error;
      },
    );
    p.catch(noop); // a handler that does not await its emit must not get an unhandled rejection
    return p;
  }

  /** An owner says a relayed emit went on. */
  private onRelayed(env: Envelope): void {
    const m = readRelayedMessage(env.payload);
    if (m === null) {
      this.counts.dropped++;
      return;
    }
    const job = this.active.get(m.k);
    const w = job?.waiting.get(m.n);
    if (w === undefined) return;
    job!.waiting.delete(m.n);
    w.resolve();
  }

  /** The emits of `job` still waiting for their owner fail: the run is over or aborted. */
  private settleWaiting(job: Job, reason: Error): void {
    if (job.waiting.size === 0) return;
    for (const w of job.waiting.values()) w.reject(reason);
    job.waiting.clear();
  }

  /** @internal ctx.step: recorded in the store, so no worker runs it again for this input. */
  async step<T>(job: Job, key: string, fn: (step: StepInfo) => T | Promise<T>): Promise<T> {
    const running = this.steps.get(key);
    if (running !== undefined) {
      try {
        return (await running) as T;
      } catch {
        // The earlier attempt's fn failed: this one runs it anew.
      }
    }
    const p = this.recordStep(key, job.env.traceId, fn);
    this.steps.set(key, p);
    try {
      return await p;
    } finally {
      if (this.steps.get(key) === p) this.steps.delete(key);
    }
  }

  private async recordStep<T>(key: string, traceId: string, fn: (step: StepInfo) => T | Promise<T>): Promise<T> {
    const journal = this.options.journal;
    if (journal === null) {
      if (this.memory.has(`step:${key}`)) return this.memory.get(`step:${key}`) as T;
      const value = await fn({ stepKey: key });
      this.keep(`step:${key}`, value);
      return value;
    }
    const found = await journal.getStep(key);
    if (found !== undefined) return found.value as T;
    const value = await fn({ stepKey: key });
    journal.step({ stepKey: key, traceId, value: value === undefined ? null : value, ts: Date.now() });
    await journal.committed();
    return value;
  }

  /** @internal ctx.checkpoint. */
  async checkpoint(job: Job, key: string, state: unknown): Promise<void> {
    if (job.over) throw new RoostError('ROOST_ERR_INVALID_STATE', `ctx.checkpoint: the run of ${job.hosted.node.name} is over`, { field: 'ctx.checkpoint', expected: 'a call while the handler runs' });
    const value = JSON.parse(toJsonWithin('ctx.checkpoint.state', state, this.options.maxPayloadBytes)) as unknown;
    const journal = this.options.journal;
    if (journal === null) {
      this.keep(key, value);
      return;
    }
    journal.checkpoint({ key, traceId: job.env.traceId, value, ts: Date.now() });
    await journal.committed();
  }

  /** Keeps a step result or checkpoint in memory (no store), newest last, bounded. */
  private keep(key: string, value: unknown): void {
    this.memory.delete(key);
    this.memory.set(key, value);
    if (this.memory.size > MEMORY_MAX) this.memory.delete(this.memory.keys().next().value!);
  }

  /** @internal ctx.lastCheckpoint. */
  async lastCheckpoint<T>(key: string): Promise<T | undefined> {
    const journal = this.options.journal;
    if (journal === null) return this.memory.get(key) as T | undefined;
    return (await journal.getCheckpoint(key))?.value as T | undefined;
  }

  // ---- control --------------------------------------------------------------------------------

  private onControl(env: Envelope): void {
    const m = readControlMessage(env.payload);
    if (m === null) {
      this.counts.dropped++;
      this.logger.warn({ envelopeId: env.id }, 'a message on the control topic is not a control message; dropped');
      return;
    }
    const now = Date.now();
    this.forgetAborts(now);
    const reason = fromWire(m.e);
    if (m.op === 'abort') {
      this.aborts.set(`${m.epoch}|${m.k}`, { until: now + ABORT_MEMORY_MS, e: m.e });
      const job = this.active.get(m.k);
      if (job !== undefined && job.epoch === m.epoch) this.abortJob(job, reason);
      return;
    }
    this.aborts.set(`${m.epoch}|trace:${m.traceId}`, { until: now + ABORT_MEMORY_MS, e: m.e });
    for (const job of [...this.active.values()]) if (job.env.traceId === m.traceId && job.epoch === m.epoch) this.abortJob(job, reason);
  }

  /** Aborts a job's signal; one still waiting for a slot is answered at once. */
  private abortJob(job: Job, reason: Error): void {
    job.controller.abort(reason);
    this.settleWaiting(job, reason);
    const queue = job.hosted.queue;
    const i = queue.indexOf(job);
    if (i >= 0) {
      queue.splice(i, 1);
      this.finish(job, null, reason, false);
    }
  }

  /** Forgets lapsed aborts: oldest first (all are kept equally long), so it stops at the first live one. */
  private forgetAborts(now: number): void {
    for (const [k, a] of this.aborts) {
      if (a.until > now) break;
      this.aborts.delete(k);
    }
  }

  // ---- answers --------------------------------------------------------------------------------

  /**
   * Answers go out at the end of the turn of the event loop, all of that turn's together: each
   * handler finishes in a callback of its own (a timer, a socket read), and a publish sent from
   * each would cost a socket write (and on NATS a flush round trip) per answer; sent together they
   * share one. Within a turn they keep their order.
   */
  private send(topic: string, about: Envelope, message: WorkerMessage): void {
    this.outbox.push({ topic, about, message });
    this.flushSoon();
  }

  /**
   * Acknowledges a task it took, `ackDelayMs` later: with the other tasks of the same owner taken
   * meanwhile, as one `beat`, and only if it still holds it.
   * An acknowledgement per task doubled the messages of a short one; the delay takes a tenth of
   * the lease at most (the owner's lease runs from when it sent the task).
   */
  private acknowledge(job: Job): void {
    let b = this.taken.get(job.reply);
    if (b === undefined) this.taken.set(job.reply, (b = { about: job.env, ks: [] }));
    b.ks.push(job.key);
    if (this.ackTimer === null) {
      this.ackTimer = setTimeout(() => this.flushAcks(), this.ackDelayMs);
      this.ackTimer.unref();
    }
  }

  private flushAcks(): void {
    if (this.ackTimer !== null) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    const taken = this.taken;
    this.taken = new Map();
    for (const [topic, b] of taken) {
      const ks = b.ks.filter((k) => this.active.has(k));
      if (ks.length > 0) this.publish(topic, b.about, { t: 'beat', ks, w: this.id });
    }
  }

  private flushSoon(): void {
    this.flushTimer ??= setImmediate(() => this.flush());
  }

  /** Sends the answers of this turn, in order. */
  private flush(): void {
    if (this.flushTimer !== null) clearImmediate(this.flushTimer);
    this.flushTimer = null;
    const outbox = this.outbox;
    this.outbox = [];
    for (const o of outbox) this.publish(o.topic, o.about, o.message);
  }

  private publish(topic: string, about: Envelope, message: WorkerMessage): void {
    this.options.transport.publish(topic, messageEnvelope(about, about.to, about.from, message)).catch((error: unknown) => {
      // The owner sends the task again when its lease runs out; the answer is kept for that.
      this.logger.warn({ err: ensureError(error), traceId: about.traceId, node: about.to }, 'answering the owner of a task failed');
    });
  }

  private beat(): void {
    if (this.active.size === 0) return;
    const byOwner = new Map<string, { about: Envelope; ks: string[] }>();
    for (const job of this.active.values()) {
      let b = byOwner.get(job.reply);
      if (b === undefined) byOwner.set(job.reply, (b = { about: job.env, ks: [] }));
      b.ks.push(job.key);
    }
    for (const [topic, b] of byOwner) this.publish(topic, b.about, { t: 'beat', ks: b.ks, w: this.id });
    // Emits whose owner has not said they went on: again (a lost answer; the owner answers repeats at once).
    for (const job of this.active.values()) for (const w of job.waiting.values()) this.publish(job.reply, job.env, w.message);
  }

  /**
   * Stops taking tasks (unsubscribes, so the broker sends them to the other members), lets the
   * ones held finish for up to `timeoutMs`, then aborts what is left (the owners send those again
   * when the lease runs out).
   */
  async close(timeoutMs: number): Promise<void> {
    this.closing = true;
    // Tasks still waiting for a slot go back at once: their owners send them to another worker.
    for (const h of this.hosted.values()) {
      for (const job of h.queue.splice(0)) {
        job.over = true;
        this.active.delete(job.key);
        this.counts.busy++;
        this.send(job.reply, job.env, { t: 'busy', k: job.key, w: this.id });
      }
    }
    for (const sub of this.subs.splice(0)) await sub.unsubscribe().catch(() => {});
    if (this.active.size > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.idle.push(resolve)),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, timeoutMs);
        }),
      ]);
      clearTimeout(timer);
    }
    this.abandoning = true;
    for (const job of [...this.active.values()]) {
      this.abortJob(job, new RoostError('ROOST_ERR_INVALID_STATE', `worker ${this.id} is closing`, { retryable: true }));
    }
    this.flushAcks();
    this.flush(); // the answers of this turn go before the transport can close
    if (this.beatTimer !== null) clearInterval(this.beatTimer);
    this.beatTimer = null;
    await this.control?.unsubscribe().catch(() => {});
    this.control = null;
  }
}

function noop(): void {}

function validTopic(topic: string): boolean {
  try {
    topicSegments(topic, false);
    return true;
  } catch {
    return false;
  }
}
