/**
 * One run of a node's handler on one envelope, across its attempts. The run is also the
 * first attempt's `ctx` (one object per hop on the fast path) and its own timer entry; a retry
 * gets a context of its own, so an abandoned attempt's `ctx` stays dead (its signal aborted, its
 * `emit`/`reply` refused) while the next attempt runs.
 *
 * Timeouts really abort: at the earlier of the node's timeout and the envelope's deadline the
 * signal fires, the attempt is abandoned (its slot is free again, or taken by the retry), and
 * whatever it returns later is discarded and counted as a late result. A handler that keeps
 * running after its abort counts against its agent's `maxAbandoned` until it settles.
 */
import type { Envelope } from '../envelope/envelope.js';
import { toJsonWithin } from '../envelope/codec.js';
import { RoostError, ensureError, invalidOption, isRoostError } from '../errors.js';
import type { Agent } from '../runtime/agent.js';
import { backoffDelay } from '../resilience/backoff.js';
import { clockNow, lastMonotonic } from '../resilience/clock.js';
import type { Timed } from '../resilience/timer-queue.js';
import type { LaneMember, TimeoutLane } from '../resilience/timeout-lane.js';
import { logContext } from '../telemetry/context.js';
import type { Logger } from '../telemetry/logger.js';
import type { Edge, Msg, RunnerFlow, RunnerInfo, Source } from './edge.js';
import type { ContextEmitOptions, HandlerContext, StepInfo } from './handler.js';
import { runKey, stepKey } from './keys.js';
import { checkSchema, type ResolvedNodePolicy } from './policy.js';
import type { Trace, TraceRun } from './trace.js';

/** @internal what a run needs from the runner of its node. */
export interface RunOwner extends RunnerInfo {
  readonly flow: RunnerFlow;
  /** The node's timeouts (runs whose deadline comes first use the timer heap instead). */
  readonly lane: TimeoutLane;
  readonly agent: Agent | null;
  readonly policy: ResolvedNodePolicy;
  readonly outEdges: readonly Edge[];
  readonly outByName: ReadonlyMap<string, Edge>;
  running: number;
  pump(now?: number): void;
  invoke(env: Envelope, ctx: HandlerContext): unknown;
  forward(src: Source, payload: unknown, edges: readonly Edge[], now?: number): Promise<void> | undefined;
}

const IDLE = 0;
const RUNNING = 1;
const BACKOFF = 2;
const FORWARDING = 3;
const DONE = 4;

function noop(): void {}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as { then?: unknown }).then === 'function';
}

/** A copy of `env` for its next attempt (no object spread: it is slow and erratic on Node 20). */
function withAttempt(env: Envelope, attempt: number): Envelope {
  return {
    v: 1,
    id: env.id,
    traceId: env.traceId,
    parentId: env.parentId,
    tenant: env.tenant,
    from: env.from,
    to: env.to,
    kind: env.kind,
    payload: env.payload,
    headers: env.headers,
    deadline: env.deadline,
    createdAt: env.createdAt,
    attempt,
    idempotencyKey: env.idempotencyKey,
  };
}

/** The `ctx` of a retry (attempt 2 and later); the first attempt's `ctx` is the {@link Run}. */
class AttemptContext implements HandlerContext {
  private controller: AbortController | null = null;
  private abortReason: RoostError | null = null;

  constructor(
    private readonly run: Run,
    private readonly token: number,
    private readonly env: Envelope,
  ) {}

  get signal(): AbortSignal {
    if (this.controller === null) {
      this.controller = new AbortController();
      if (this.abortReason !== null) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }
  get traceId(): string {
    return this.env.traceId;
  }
  get tenant(): string {
    return this.env.tenant;
  }
  get flow(): string {
    return this.run.flow;
  }
  get node(): string {
    return this.run.node;
  }
  get attempt(): number {
    return this.env.attempt;
  }
  get deadline(): number | null {
    return this.env.deadline;
  }
  get idempotencyKey(): string {
    return this.run.idempotencyKey;
  }
  get logger(): Logger {
    return this.run.logger;
  }
  emit(payload: unknown, options?: ContextEmitOptions): Promise<void> {
    return this.run.emitAs(this.token, payload, options);
  }
  reply(payload: unknown): Promise<void> {
    return this.run.replyAs(this.token, payload);
  }
  chunk(data: unknown): void {
    this.run.chunkAs(this.token, data);
  }
  step<T>(name: string, fn: (step: StepInfo) => T | Promise<T>): Promise<T> {
    return this.run.stepAs(this.token, name, fn);
  }
  checkpoint(state: unknown): Promise<void> {
    return this.run.checkpointAs(this.token, state);
  }
  lastCheckpoint<T = unknown>(): Promise<T | undefined> {
    return this.run.lastCheckpoint<T>();
  }
  /** @internal */
  abort(reason: RoostError): void {
    if (this.controller !== null) this.controller.abort(reason);
    else this.abortReason ??= reason;
  }
}

/** `owner.invoke(env, ctx)`, as a function of its own: what `logContext.run` calls (no closure per run). */
function invokeOn(owner: RunOwner, env: Envelope, ctx: HandlerContext): unknown {
  return owner.invoke(env, ctx);
}

/** The parts of a {@link Run} few runs need, kept apart so that a run on the fast path is small. */
class RunExtra {
  /** The first attempt's signal (the Run is its `ctx`). */
  controller: AbortController | null = null;
  abortReason: RoostError | null = null;
  /** The running retry's `ctx` (null during the first attempt). */
  current: AttemptContext | null = null;
  /** Attempts abandoned while their handler still runs: +token timed out, -token cancelled. */
  abandonedTokens: number[] | null = null;
  logger: Logger | null = null;
  key: string | null = null;
}

/** The first attempt's token: the Run itself is that attempt's `ctx`. */
const FIRST_TOKEN = 1;

/** @internal see the module comment. */
export class Run implements HandlerContext, Timed, LaneMember, TraceRun, Source, Msg {
  timerAt = 0;
  timerIndex = -1;
  laneAt = -1;
  jBatch = -1;
  jSlot = -1;
  tracePrev: TraceRun | null = null;
  traceNext: TraceRun | null = null;
  inTrace = false;
  outputSeq = 0;
  idA = -1;
  idB = 0;
  idC = 0;
  env: Envelope;
  readonly trace: Trace;
  readonly hops: number;
  /** The attempt the retry budget counts from. */
  readonly firstAttempt: number;
  /** The envelope's attempt when this run was made: the first attempt's `ctx.attempt`. */
  private readonly firstEnvAttempt: number;
  private token = 0;
  private phase = IDLE;
  private startedAt = 0;
  /** What most runs never need (a signal asked for, a retry, a logger): made on first use. */
  private extra: RunExtra | null = null;

  constructor(
    private readonly owner: RunOwner,
    env: Envelope,
    trace: Trace,
    hops: number,
    /** The attempt the retry budget counts from: `env.attempt` but for an envelope resumed mid-retry. */
    firstAttempt: number,
  ) {
    this.env = env;
    this.trace = trace;
    this.hops = hops;
    this.firstAttempt = firstAttempt;
    this.firstEnvAttempt = env.attempt;
  }

  // ---- HandlerContext ---------------------------------------------------------------------

  get signal(): AbortSignal {
    const x = this.more();
    if (x.controller === null) {
      x.controller = new AbortController();
      if (x.abortReason !== null) x.controller.abort(x.abortReason);
    }
    return x.controller.signal;
  }
  get traceId(): string {
    return this.env.traceId;
  }
  get tenant(): string {
    return this.env.tenant;
  }
  get flow(): string {
    return this.owner.flow.name;
  }
  get node(): string {
    return this.owner.name;
  }
  get attempt(): number {
    return this.firstEnvAttempt; // this object is the first attempt's ctx
  }
  get deadline(): number | null {
    return this.env.deadline;
  }
  get idempotencyKey(): string {
    const x = this.more();
    if (x.key === null) {
      x.key = runKey(this.env.traceId, this.owner.flow.name, this.owner.name, this.env.id);
    }
    return x.key;
  }
  get logger(): Logger {
    const x = this.more();
    if (x.logger === null) {
      x.logger = this.owner.flow.host.logger.child({
        traceId: this.env.traceId,
        tenant: this.env.tenant,
        flow: this.owner.flow.name,
        node: this.owner.name,
        agent: this.owner.agent?.name ?? this.owner.name,
      });
    }
    return x.logger;
  }

  private more(): RunExtra {
    return (this.extra ??= new RunExtra());
  }

  emit(payload: unknown, options?: ContextEmitOptions): Promise<void> {
    return this.emitAs(FIRST_TOKEN, payload, options);
  }

  reply(payload: unknown): Promise<void> {
    return this.replyAs(FIRST_TOKEN, payload);
  }

  chunk(data: unknown): void {
    this.chunkAs(FIRST_TOKEN, data);
  }

  step<T>(name: string, fn: (step: StepInfo) => T | Promise<T>): Promise<T> {
    return this.stepAs(FIRST_TOKEN, name, fn);
  }

  checkpoint(state: unknown): Promise<void> {
    return this.checkpointAs(FIRST_TOKEN, state);
  }

  /** @internal `ctx.checkpoint` of the attempt with `token` (an abandoned attempt may not overwrite). */
  checkpointAs(token: number, state: unknown): Promise<void> {
    const over = this.overError(token, 'checkpoint');
    if (over !== null) return Promise.reject(over);
    let value: unknown;
    try {
      value = JSON.parse(toJsonWithin('ctx.checkpoint.state', state, this.owner.flow.host.maxPayloadBytes)) as unknown;
    } catch (error) {
      return Promise.reject(ensureError(error));
    }
    const journal = this.owner.flow.journal;
    const key = `checkpoint:${this.idempotencyKey}`;
    if (journal === null) {
      (this.trace.more().checkpoints ??= new Map()).set(key, value);
      return Promise.resolve();
    }
    journal.checkpoint({ key, traceId: this.trace.id, value, ts: clockNow() });
    return journal.committed();
  }

  lastCheckpoint<T = unknown>(): Promise<T | undefined> {
    const journal = this.owner.flow.journal;
    const key = `checkpoint:${this.idempotencyKey}`;
    if (journal === null) return Promise.resolve(this.trace.extra?.checkpoints?.get(key) as T | undefined);
    return journal.getCheckpoint(key).then((found) => found?.value as T | undefined);
  }

  /** @internal `ctx.step` of the attempt with `token`. */
  stepAs<T>(token: number, name: string, fn: (step: StepInfo) => T | Promise<T>): Promise<T> {
    const over = this.overError(token, 'step');
    if (over !== null) return Promise.reject(over);
    if (typeof name !== 'string' || name.length === 0 || name.length > 200) {
      return Promise.reject(invalidOption('ctx.step.name', 'a string of 1 to 200 characters', name));
    }
    if (typeof fn !== 'function') return Promise.reject(invalidOption('ctx.step.fn', 'a function', fn));
    return this.runStep(stepKey(this.env.traceId, this.owner.flow.name, this.owner.name, this.env.id, name), fn);
  }

  /**
   * Runs a step once. A step still running for an attempt that timed out is waited for, not
   * started again: a retry gets its result (or, if it failed, runs `fn` itself). So `fn` runs
   * twice only across a crash (see the README).
   */
  private async runStep<T>(stepKey: string, fn: (step: StepInfo) => T | Promise<T>): Promise<T> {
    const extra = this.trace.more();
    const inFlight = extra.stepsInFlight?.get(stepKey);
    if (inFlight !== undefined) {
      try {
        return (await inFlight) as T;
      } catch {
        // The earlier attempt's fn failed: this attempt runs it anew.
      }
    }
    const running = this.recordStep(stepKey, fn);
    const steps = (extra.stepsInFlight ??= new Map());
    steps.set(stepKey, running);
    try {
      return await running;
    } finally {
      if (steps.get(stepKey) === running) steps.delete(stepKey);
    }
  }

  private async recordStep<T>(stepKey: string, fn: (step: StepInfo) => T | Promise<T>): Promise<T> {
    const journal = this.owner.flow.journal;
    const trace = this.trace;
    if (journal === null) {
      const steps = (trace.more().steps ??= new Map());
      if (steps.has(stepKey)) return steps.get(stepKey) as T;
      const value = await fn({ stepKey });
      steps.set(stepKey, value);
      return value;
    }
    const found = await journal.getStep(stepKey);
    if (found !== undefined) return found.value as T;
    const value = await fn({ stepKey });
    journal.step({ stepKey, traceId: trace.id, value: value === undefined ? null : value, ts: clockNow() });
    await journal.committed();
    return value;
  }

  /** @internal `ctx.emit` of the attempt with `token`. */
  emitAs(token: number, payload: unknown, options?: ContextEmitOptions): Promise<void> {
    const over = this.overError(token, 'emit');
    if (over !== null) return Promise.reject(over);
    let edges = this.owner.outEdges;
    if (options?.to !== undefined) {
      const edge = this.owner.outByName.get(options.to);
      if (edge === undefined) {
        return Promise.reject(
          new RoostError('ROOST_ERR_INVALID_OPTION', `ctx.emit: node ${this.owner.name} has no edge to ${options.to}`, {
            field: 'options.to',
            expected: `one of ${[...this.owner.outByName.keys()].join(', ') || '(no successors)'}`,
            received: options.to,
          }),
        );
      }
      edges = [edge];
    }
    const sent = this.owner.forward(this, payload, edges);
    // The send itself can end the trace (a full edge that rejects or drops this trace's oldest
    // envelope, the hop budget): then the payload did not go on, and the handler must know.
    const ended = this.trace.error;
    if (ended !== null) {
      sent?.catch(noop); // a wait on another edge is rejected by the same failure: reported here once
      return Promise.reject(ended);
    }
    return sent ?? Promise.resolve();
  }

  /** @internal `ctx.reply` of the attempt with `token`. */
  replyAs(token: number, payload: unknown): Promise<void> {
    const over = this.overError(token, 'reply');
    if (over !== null) return Promise.reject(over);
    this.owner.flow.output(this.trace, payload);
    return Promise.resolve();
  }

  /** @internal `ctx.chunk` of the attempt with `token`. */
  chunkAs(token: number, data: unknown): void {
    if (token !== this.token || this.phase !== RUNNING) return;
    this.owner.flow.chunk(this.trace, this.owner.name, data);
  }

  private overError(token: number, operation: string): RoostError | null {
    if (token === this.token && this.phase === RUNNING && this.trace.running) return null;
    return new RoostError('ROOST_ERR_INVALID_STATE', `ctx.${operation}: the run of ${this.owner.name} is over (timed out, cancelled or finished)`, {
      field: `ctx.${operation}`,
      expected: 'a call while the handler runs',
    });
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  /** Starts an attempt; `now` is the {@link clockNow} reading the caller just took. */
  begin(now: number): void {
    const token = ++this.token;
    const owner = this.owner;
    this.phase = RUNNING;
    const ctx: HandlerContext = token === FIRST_TOKEN ? this : (this.more().current = new AttemptContext(this, token, this.env));
    const observed = owner.flow.host.listening || this.trace.streams !== null;
    this.startedAt = observed ? lastMonotonic() : 0; // latency is only reported in events; `now`'s reading
    if (observed) owner.flow.nodeEvent('node_start', owner, this, now, null, null, null);
    const timeoutAt = owner.policy.timeoutMs === null ? Infinity : now + owner.policy.timeoutMs;
    const deadline = this.env.deadline;
    if (deadline !== null && deadline < timeoutAt) owner.flow.host.timers.schedule(this, deadline);
    else if (timeoutAt !== Infinity) owner.lane.arm(this, timeoutAt);
    try {
      const result = owner.flow.host.correlate ? logContext.run(ctx, invokeOn, owner, this.env, ctx) : owner.invoke(this.env, ctx);
      // Reading `then` and calling it run user code too (a getter, a thenable): a throw there is
      // the attempt's failure, never an escape from here.
      if (isThenable(result)) {
        result.then(
          (value) => this.succeeded(token, value),
          (error: unknown) => this.failed(token, error),
        );
      } else {
        this.succeeded(token, result);
      }
    } catch (error) {
      this.failed(token, error);
    }
  }

  /** Since the attempt began, as of the latest {@link clockNow} reading (take one first). */
  private latency(): number {
    return this.startedAt === 0 ? 0 : lastMonotonic() - this.startedAt;
  }

  private succeeded(token: number, value: unknown): void {
    if (token !== this.token || this.phase !== RUNNING) {
      this.settledLate(token, null);
      return;
    }
    const owner = this.owner;
    this.stopTimer();
    if (owner.policy.validateOutput !== null && value !== undefined) {
      try {
        checkSchema(owner.policy.validateOutput, value, `${owner.name}.output`);
      } catch (error) {
        this.failed(token, error);
        return;
      }
    }
    const now = clockNow();
    owner.agent?.recordRun(false, now);
    if (owner.flow.host.listening || this.trace.streams !== null) owner.flow.nodeEvent('node_success', owner, this, now, this.latency(), null, null);
    this.phase = FORWARDING;
    const sent = value === undefined ? undefined : owner.forward(this, value, owner.outEdges, now);
    if (sent === undefined) this.finish(now);
    else
      sent.then(
        () => this.finish(),
        () => this.finish(), // only a cancelled or failed trace rejects a waiting send; it is ending anyway
      );
  }

  private failed(token: number, thrown: unknown): void {
    if (token !== this.token || this.phase !== RUNNING) {
      this.settledLate(token, ensureError(thrown));
      return;
    }
    this.stopTimer();
    const error = ensureError(thrown);
    this.owner.flow.nodeEvent('node_error', this.owner, this, clockNow(), this.latency(), error, null);
    this.afterFailure(error);
  }

  private stopTimer(): void {
    if (this.laneAt >= 0) this.owner.lane.disarm(this);
    else if (this.timerIndex >= 0) this.owner.flow.host.timers.remove(this);
  }

  /** The heap timer fired: the deadline while running, or the end of a backoff. */
  onTimer(): void {
    if (this.phase === BACKOFF) {
      this.env = withAttempt(this.env, this.env.attempt + 1);
      this.owner.flow.journal?.attempt(this.env.id, this.env.attempt, this);
      this.begin(clockNow());
      return;
    }
    this.onTimeout();
  }

  /** The timeout or the deadline passed while running: abandon this attempt. */
  onTimeout(): void {
    if (this.phase !== RUNNING) return;
    const owner = this.owner;
    const now = clockNow();
    const byDeadline = this.env.deadline !== null && this.env.deadline <= now;
    const error = byDeadline
      ? new RoostError('ROOST_ERR_DEADLINE_EXCEEDED', `trace ${this.env.traceId}: deadline passed while node ${owner.name} ran`, {
          details: { node: owner.name, deadline: this.env.deadline },
        })
      : new RoostError('ROOST_ERR_NODE_TIMEOUT', `node ${owner.name} timed out after ${owner.policy.timeoutMs} ms`, {
          details: { node: owner.name, timeoutMs: owner.policy.timeoutMs, attempt: this.env.attempt },
        });
    this.phase = IDLE; // whatever the handler returns from now on is late
    (this.more().abandonedTokens ??= []).push(this.token);
    owner.agent?.abandonedStarted();
    this.abort(error);
    owner.flow.nodeEvent('node_timeout', owner, this, now, this.latency(), error, null);
    this.afterFailure(error);
  }

  private afterFailure(error: Error): void {
    const owner = this.owner;
    const flow = owner.flow;
    const now = clockNow();
    owner.agent?.recordRun(true, now);
    if (!this.trace.running) {
      this.finish(now);
      return;
    }
    const attempts = this.env.attempt - this.firstAttempt + 1;
    const deadline = this.env.deadline;
    const delay = attempts <= owner.policy.retries && !isRoostError(error, 'ROOST_ERR_DEADLINE_EXCEEDED') ? this.retryDelay(error, attempts) : -1;
    if (delay >= 0) {
      if (deadline === null || now + delay < deadline) {
        flow.nodeEvent('node_retry', owner, this, now, null, error, delay);
        this.phase = BACKOFF;
        flow.host.timers.schedule(this, now + delay);
        return;
      }
    }
    const final = isRoostError(error)
      ? error
      : new RoostError('ROOST_ERR_NODE_FAILED', `node ${owner.name} failed after ${attempts} attempt(s): ${error.message}`, {
          cause: error,
          details: { node: owner.name, attempts },
        });
    flow.nodeEvent('node_failed', owner, this, now, this.latency(), final, null);
    if (final.code !== 'ROOST_ERR_DEADLINE_EXCEEDED') flow.deadLetter(owner.name, this.env, final, attempts);
    this.trace.removeRun(this); // this run ends itself below; failTrace must not cancel it
    flow.failTrace(this.trace, final);
    this.finish(now);
  }

  /**
   * The backoff before the next attempt, or -1 when `error` is not to be retried. The policy's
   * `retryable` and the host's random source are user code: when one throws, the run is not
   * retried (the attempt's own error stands) and the throw is logged.
   */
  private retryDelay(error: Error, attempts: number): number {
    const owner = this.owner;
    try {
      if (!owner.policy.retryable(error, this.env.attempt)) return -1;
      const delay = backoffDelay(owner.policy.backoff, attempts, owner.flow.host.random);
      return Number.isFinite(delay) && delay >= 0 ? delay : -1;
    } catch (thrown) {
      owner.flow.host.logger.error({ err: ensureError(thrown), node: owner.name }, 'retry policy threw; not retrying');
      return -1;
    }
  }

  private settledLate(token: number, error: Error | null): void {
    const tokens = this.extra?.abandonedTokens ?? null;
    if (tokens === null) return;
    let i = tokens.indexOf(token);
    if (i < 0) {
      // A cancelled attempt settling: it no longer counts as abandoned; nothing is published.
      i = tokens.indexOf(-token);
      if (i < 0) return;
      tokens.splice(i, 1);
      this.owner.agent?.abandonedSettled();
      return;
    }
    tokens.splice(i, 1);
    this.owner.agent?.abandonedSettled();
    this.owner.flow.lateResult();
    this.owner.flow.nodeEvent('node_late_result', this.owner, this, clockNow(), this.latency(), error, null);
  }

  /** Aborts the signal of the attempt now running. */
  private abort(reason: RoostError): void {
    const x = this.more();
    if (this.token !== FIRST_TOKEN) x.current!.abort(reason);
    else if (x.controller !== null) x.controller.abort(reason);
    else x.abortReason ??= reason;
  }

  /** The trace ends (cancelled or failed elsewhere): abort and free the slot now. */
  cancel(reason: RoostError): void {
    if (this.phase === DONE) return;
    const owner = this.owner;
    const now = clockNow();
    this.stopTimer();
    if (this.phase === RUNNING) {
      // The handler is still running: it counts as abandoned until it settles, as a timed-out
      // one does (a handler that ignores its abort holds resources all the same).
      (this.more().abandonedTokens ??= []).push(-this.token);
      owner.agent?.abandonedStarted();
    }
    this.abort(reason);
    owner.flow.nodeEvent('node_cancelled', owner, this, now, this.latency(), reason, null);
    this.phase = DONE;
    this.trace.removeRun(this);
    owner.running--;
    owner.pump();
  }

  private finish(now?: number): void {
    if (this.phase === DONE) return;
    this.phase = DONE;
    this.owner.flow.journal?.consume(this.env.id, this);
    this.trace.removeRun(this);
    this.owner.running--;
    this.owner.flow.release(this.trace, now);
    this.owner.pump(now);
  }
}
