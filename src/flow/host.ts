/**
 * What a flow needs from the runtime that hosts it. The runtime implements this; flows depend on
 * the interface only, so `runtime/` imports `flow/` and never the other way round.
 */
import type { ErrorCode } from '../errors.js';
import type { IdempotencyWindow } from '../runtime/idempotency-window.js';
import type { Agent, AgentOptions } from '../runtime/agent.js';
import type { DeadLetterQueue } from '../runtime/dead-letters.js';
import type { TimerQueue } from '../resilience/timer-queue.js';
import type { Journal } from '../store/journal.js';
import type { DispatchLease } from '../store/store.js';
import type { Logger } from '../telemetry/logger.js';
import type { RoostEvent } from './events.js';
import type { Handler, Middleware } from './handler.js';

/** @internal the runtime as its flows see it. */
export interface FlowHost {
  readonly maxPayloadBytes: number;
  readonly streamBuffer: number;
  readonly results: { readonly ttlMs: number; readonly max: number };
  readonly timers: TimerQueue;
  readonly logger: Logger;
  readonly middlewares: readonly Middleware[];
  readonly deadLetters: DeadLetterQueue;
  /** The runtime-wide idempotency window (key: flow, tenant, caller's key → trace id), or null when off. */
  readonly idempotency: IdempotencyWindow | null;
  /** True when at least one event listener is subscribed (events are only built then). */
  readonly listening: boolean;
  /** Handlers run inside `logContext` (the `correlate` option). */
  readonly correlate: boolean;
  publish(event: RoostEvent): void;
  /**
   * Throws `ROOST_ERR_INVALID_STATE` unless the runtime accepts new work (`internal`: a task a
   * protocol adapter of this process admits, which a worker of a fleet takes too).
   */
  assertAccepting(operation: string, internal?: boolean): void;
  /** Counts a new in-flight trace, or throws `ROOST_ERR_RESOURCE_LIMIT`. */
  traceStarted(): void;
  traceEnded(): void;
  /** The agent a node runs: an existing one, or a new one registered from inline options. */
  resolveAgent(agent: Agent | AgentOptions): Agent;
  /** Reserves `concurrency` run slots out of the runtime's limit, or throws `ROOST_ERR_RESOURCE_LIMIT`. */
  reserveRuns(flow: string, concurrency: number): void;
  readonly random: () => number;
  /** The journal (group commit over the store), or null when the runtime has no store. */
  readonly journal: Journal | null;
  /** Which events are journaled. */
  readonly journalEvents: 'state' | 'all' | 'none';
  /** This process, as the owner of the traces it runs. */
  readonly owner: string;
  /** Throws `ROOST_ERR_STORE_FULL` while the journal is over its size cap. */
  assertStoreRoom(): void;
  /** Counts a trace resumed from the journal (not refused by the in-flight limit: it was accepted already). */
  traceResumed(flow: string, traceId: string, idempotencyKey: string | null): void;
  /** How the fleet runs the handler node `node` of `flow` on its workers, or null when it runs here. */
  remoteNode(flow: string, node: string, timeoutMs: number | null): RemoteNode | null;
  /** A pending envelope of a remote node, resumed from the journal, had this lease (a worker may hold it still). */
  resumedLease(envelopeId: string, lease: DispatchLease): void;
}

/** A node of a flow whose handler runs on the fleet's workers (src/fleet/dispatcher.ts). */
export interface RemoteNode {
  /** Sends the envelope to a worker and settles with what its handler returned or threw. */
  readonly handler: Handler;
  /** Envelopes out with workers at once, for this node of this process. */
  readonly concurrency: number;
}

/** The outcome of a finished trace, kept until fetched or expired. */
export interface Outcome {
  readonly status: 'succeeded' | 'failed' | 'cancelled';
  readonly result: unknown;
  readonly error: { readonly code: ErrorCode; readonly message: string } | null;
  readonly errorValue: Error | null;
  readonly finishedAt: number;
  /** The time in the trace's UUIDv7 id (what "expired" is judged by). */
  readonly traceCreatedAt: number;
}
