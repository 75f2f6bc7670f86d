/** What a handler is and what it gets: the envelope and a context of its run. */
import type { Envelope } from '../envelope/envelope.js';
import type { Logger } from '../telemetry/logger.js';

/** Options of {@link HandlerContext.emit}. */
export interface ContextEmitOptions {
  /** Send only to this successor node (default: every successor). */
  readonly to?: string;
}

/** What a handler knows about its run. One per run; do not keep it after the run ends. */
export interface HandlerContext {
  /**
   * Fires at the earlier of the node's timeout and the envelope's deadline, or when the trace is
   * cancelled. Pass it to every outside call; a handler that ignores it is abandoned and counted.
   */
  readonly signal: AbortSignal;
  readonly traceId: string;
  readonly tenant: string;
  readonly flow: string;
  readonly node: string;
  /** 1 for the first run of this envelope, then 2, 3 … on retries. */
  readonly attempt: number;
  /** The envelope's absolute deadline (epoch ms) or null. */
  readonly deadline: number | null;
  /**
   * A key for side effects of this run: a hash of (trace id, node, input envelope id). The same
   * on every retry of this input, different for every other input.
   */
  readonly idempotencyKey: string;
  /** A logger bound to `traceId`, `agent` and `tenant`. */
  readonly logger: Logger;
  /** Sends `payload` on to the successors (all, or `options.to`) now, waiting for queue space. */
  emit(payload: unknown, options?: ContextEmitOptions): Promise<void>;
  /** Makes `payload` an output of the trace now (as an egress node's return value would). */
  reply(payload: unknown): Promise<void>;
  /** Streams `data` to the trace's stream readers (progress, tokens). Never blocks. */
  chunk(data: unknown): void;
  /**
   * Runs a side effect once for this input: `fn`'s result (JSON) is recorded, and on a retry of
   * this input, or after a crash and resume with a journal, the recorded result is returned and
   * `fn` does not run again. `fn` can run twice only if the process dies after `fn` finished and
   * before its result was committed: pass `stepKey` (stable for trace, node, input and step
   * name) to the outside system so it can ignore the repeat (an insert-or-ignore, an
   * `Idempotency-Key` header).
   */
  step<T>(name: string, fn: (step: StepInfo) => T | Promise<T>): Promise<T>;
  /**
   * Saves `state` (JSON) as this input's checkpoint, overwriting the previous one; resolves once
   * it is committed. A handler that runs again on the same input (a retry, or after a crash and
   * resume) reads it with {@link lastCheckpoint} and goes on from there.
   */
  checkpoint(state: unknown): Promise<void>;
  /** The last checkpoint saved for this input (by any attempt, in any process), or undefined. */
  lastCheckpoint<T = unknown>(): Promise<T | undefined>;
}

/** What `ctx.step` tells its function. */
export interface StepInfo {
  /** Stable for (trace, node, input envelope, step name): the key for the outside system's dedup. */
  readonly stepKey: string;
}

/**
 * A node's work: takes the envelope, returns the payload to send on (`undefined` sends nothing
 * on; on an egress node the value is the trace's result). Throwing fails the run.
 */
export type Handler<I = unknown, O = unknown> = (envelope: Envelope<I>, ctx: HandlerContext) => O | Promise<O>;

/**
 * Wraps every handler run of a runtime: can observe or change the envelope going in and the
 * value coming out. Call `next(envelope)` once and return (or transform) what it returns.
 */
export type Middleware = (
  envelope: Envelope,
  ctx: HandlerContext,
  next: (envelope: Envelope) => Promise<unknown>,
) => Promise<unknown>;
