/**
 * One run of a node's handler on one envelope, across its attempts. The run is also the
 * handler's `ctx` (one object per run, not two) and its own timer entry.
 *
 * Timeouts really abort: at the earlier of the node's timeout and the envelope's deadline the
 * signal fires, the attempt is abandoned (its slot is free again, or taken by the retry), and
 * whatever it returns later is discarded and counted as a late result. A handler that keeps
 * running after its abort counts against its agent's `maxAbandoned` until it settles.
 */
import { createHash } from 'node:crypto';
import type { Envelope } from '../envelope/envelope.js';
import { RoostError, ensureError, isRoostError } from '../errors.js';
import type { Agent } from '../runtime/agent.js';
import { backoffDelay } from '../resilience/backoff.js';
import type { Timed } from '../resilience/timer-queue.js';
import type { LaneMember, TimeoutLane } from '../resilience/timeout-lane.js';
import type { Logger } from '../telemetry/logger.js';
import type { Edge, Msg, RunnerFlow, RunnerInfo, Source } from './edge.js';
import type { ContextEmitOptions, HandlerContext } from './handler.js';
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
  pump(): void;
  invoke(env: Envelope, ctx: HandlerContext): unknown;
  forward(src: Source, payload: unknown, edges: readonly Edge[], now?: number): Promise<void> | undefined;
}

const IDLE = 0;
const RUNNING = 1;
const BACKOFF = 2;
const FORWARDING = 3;
const DONE = 4;

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

/** @internal see the module comment. */
export class Run implements HandlerContext, Timed, LaneMember, TraceRun, Source, Msg {
  timerAt = 0;
  timerIndex = -1;
  laneAt = -1;
  traceSlot = -1;
  env: Envelope;
  readonly trace: Trace;
  readonly hops: number;
  private readonly firstAttempt: number;
  private token = 0;
  private phase = IDLE;
  private startedAt = 0;
  private controller: AbortController | null = null;
  private abortReason: RoostError | null = null;
  private abandonedTokens: number[] | null = null;
  private loggerValue: Logger | null = null;
  private keyValue: string | null = null;

  constructor(
    private readonly owner: RunOwner,
    env: Envelope,
    trace: Trace,
    hops: number,
  ) {
    this.env = env;
    this.trace = trace;
    this.hops = hops;
    this.firstAttempt = env.attempt;
  }

  // ---- HandlerContext ---------------------------------------------------------------------

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
    return this.owner.flow.name;
  }
  get node(): string {
    return this.owner.name;
  }
  get attempt(): number {
    return this.env.attempt;
  }
  get deadline(): number | null {
    return this.env.deadline;
  }
  get idempotencyKey(): string {
    if (this.keyValue === null) {
      this.keyValue = createHash('sha256')
        .update(`${this.env.traceId}\u0000${this.owner.flow.name}\u0000${this.owner.name}\u0000${this.env.id}`)
        .digest('hex')
        .slice(0, 32);
    }
    return this.keyValue;
  }
  get logger(): Logger {
    if (this.loggerValue === null) {
      this.loggerValue = this.owner.flow.host.logger.child({
        traceId: this.env.traceId,
        tenant: this.env.tenant,
        flow: this.owner.flow.name,
        node: this.owner.name,
        agent: this.owner.agent?.name ?? this.owner.name,
      });
    }
    return this.loggerValue;
  }

  emit(payload: unknown, options?: ContextEmitOptions): Promise<void> {
    const over = this.overError('emit');
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
    return this.owner.forward(this, payload, edges) ?? Promise.resolve();
  }

  reply(payload: unknown): Promise<void> {
    const over = this.overError('reply');
    if (over !== null) return Promise.reject(over);
    this.trace.addOutput(payload);
    return Promise.resolve();
  }

  chunk(data: unknown): void {
    if (this.phase !== RUNNING) return;
    this.owner.flow.chunk(this.trace, this.owner.name, data);
  }

  private overError(operation: string): RoostError | null {
    if (this.phase === RUNNING && this.trace.running) return null;
    return new RoostError('ROOST_ERR_INVALID_STATE', `ctx.${operation}: the run of ${this.owner.name} is over (timed out, cancelled or finished)`, {
      field: `ctx.${operation}`,
      expected: 'a call while the handler runs',
    });
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  /** Starts an attempt. */
  begin(): void {
    const token = ++this.token;
    const owner = this.owner;
    this.phase = RUNNING;
    this.controller = null;
    this.abortReason = null;
    const now = Date.now();
    const observed = owner.flow.host.listening || this.trace.streams !== null;
    this.startedAt = observed ? performance.now() : 0; // latency is only reported in events
    if (observed) owner.flow.nodeEvent('node_start', owner, this, now, null, null, null);
    const timeoutAt = owner.policy.timeoutMs === null ? Infinity : now + owner.policy.timeoutMs;
    const deadline = this.env.deadline;
    if (deadline !== null && deadline < timeoutAt) owner.flow.host.timers.schedule(this, deadline);
    else if (timeoutAt !== Infinity) owner.lane.arm(this, timeoutAt);
    let result: unknown;
    try {
      result = owner.invoke(this.env, this);
    } catch (error) {
      this.failed(token, error);
      return;
    }
    if (isThenable(result)) {
      result.then(
        (value) => this.succeeded(token, value),
        (error: unknown) => this.failed(token, error),
      );
    } else {
      this.succeeded(token, result);
    }
  }

  private latency(): number {
    return this.startedAt === 0 ? 0 : performance.now() - this.startedAt;
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
    const now = Date.now();
    owner.agent?.recordRun(false, now);
    if (owner.flow.host.listening || this.trace.streams !== null) owner.flow.nodeEvent('node_success', owner, this, now, this.latency(), null, null);
    this.phase = FORWARDING;
    const sent = value === undefined ? undefined : owner.forward(this, value, owner.outEdges, now);
    if (sent === undefined) this.finish();
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
    this.owner.flow.nodeEvent('node_error', this.owner, this, Date.now(), this.latency(), error, null);
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
      this.begin();
      return;
    }
    this.onTimeout();
  }

  /** The timeout or the deadline passed while running: abandon this attempt. */
  onTimeout(): void {
    if (this.phase !== RUNNING) return;
    const owner = this.owner;
    const now = Date.now();
    const byDeadline = this.env.deadline !== null && this.env.deadline <= now;
    const error = byDeadline
      ? new RoostError('ROOST_ERR_DEADLINE_EXCEEDED', `trace ${this.env.traceId}: deadline passed while node ${owner.name} ran`, {
          details: { node: owner.name, deadline: this.env.deadline },
        })
      : new RoostError('ROOST_ERR_NODE_TIMEOUT', `node ${owner.name} timed out after ${owner.policy.timeoutMs} ms`, {
          details: { node: owner.name, timeoutMs: owner.policy.timeoutMs, attempt: this.env.attempt },
        });
    this.phase = IDLE; // whatever the handler returns from now on is late
    (this.abandonedTokens ??= []).push(this.token);
    owner.agent?.abandonedStarted(now);
    this.abort(error);
    owner.flow.nodeEvent('node_timeout', owner, this, now, this.latency(), error, null);
    this.afterFailure(error);
  }

  private afterFailure(error: Error): void {
    const owner = this.owner;
    const flow = owner.flow;
    const now = Date.now();
    owner.agent?.recordRun(true, now);
    if (!this.trace.running) {
      this.finish();
      return;
    }
    const attempts = this.env.attempt - this.firstAttempt + 1;
    const deadline = this.env.deadline;
    if (attempts <= owner.policy.retries && !isRoostError(error, 'ROOST_ERR_DEADLINE_EXCEEDED') && owner.policy.retryable(error, this.env.attempt)) {
      const delay = backoffDelay(owner.policy.backoff, attempts, flow.host.random);
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
    this.finish();
  }

  private settledLate(token: number, error: Error | null): void {
    const tokens = this.abandonedTokens;
    const i = tokens === null ? -1 : tokens.indexOf(token);
    if (i < 0) return; // a cancelled run settling: nothing to count
    tokens!.splice(i, 1);
    this.owner.agent?.abandonedSettled();
    this.owner.flow.lateResult();
    this.owner.flow.nodeEvent('node_late_result', this.owner, this, Date.now(), this.latency(), error, null);
  }

  private abort(reason: RoostError): void {
    if (this.controller !== null) this.controller.abort(reason);
    else this.abortReason = reason;
  }

  /** The trace ends (cancelled or failed elsewhere): abort and free the slot now. */
  cancel(reason: RoostError): void {
    if (this.phase === DONE) return;
    const owner = this.owner;
    this.stopTimer();
    this.abort(reason);
    owner.flow.nodeEvent('node_cancelled', owner, this, Date.now(), this.latency(), reason, null);
    this.phase = DONE;
    this.trace.removeRun(this);
    owner.running--;
    owner.pump();
  }

  private finish(): void {
    if (this.phase === DONE) return;
    this.phase = DONE;
    this.trace.removeRun(this);
    this.owner.running--;
    this.owner.flow.release(this.trace);
    this.owner.pump();
  }
}
