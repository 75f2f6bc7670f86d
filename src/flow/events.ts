/**
 * Typed runtime events: a union tagged by `type`. Events are the one source that metrics, logs
 * and trace streams derive from. Every field is listed in `docs/reference/events.md`.
 */
import type { LeaderEvent } from '../fleet/events.js';
import type { Agent2389Event } from '../protocol2389/events.js';

/** An error as it appears in an event: code and message, never a stack. */
export interface EventError {
  /** A `ROOST_ERR_…` code (see `docs/reference/errors.md`). */
  readonly code: string;
  readonly message: string;
}

/** Types of the events about one node run or one queued envelope of a trace. */
export type NodeEventType =
  | 'node_start'
  | 'node_success'
  | 'node_error'
  | 'node_retry'
  | 'node_timeout'
  | 'node_failed'
  | 'node_cancelled'
  | 'node_late_result'
  | 'deadline_skip'
  | 'queue_overflow'
  | 'join_surplus';

/** An event about a node of a flow, for one trace. */
export interface NodeEvent {
  readonly type: NodeEventType;
  /** Epoch ms. */
  readonly ts: number;
  readonly flow: string;
  readonly node: string;
  readonly traceId: string;
  readonly tenant: string;
  /** Id of the envelope concerned. */
  readonly envelopeId: string;
  /** Attempt number of that envelope (1 for the first run). */
  readonly attempt: number;
  /** The attempt it came to this node with (equal to `attempt` on its first run here; lower on a retry). */
  readonly firstAttempt: number;
  /** Run time so far, ms (`node_success`, `node_error`, `node_timeout`, `node_failed`), else null. */
  readonly latencyMs: number | null;
  /** Envelopes queued on the node's incoming edges. */
  readonly queueDepthIn: number;
  /** Envelopes queued on the node's outgoing edges. */
  readonly queueDepthOut: number;
  /** Envelopes of the trace queued or running. */
  readonly tracePending: number;
  /** The error, for error-like events; else null. */
  readonly error: EventError | null;
  /** Delay before the next attempt, ms (`node_retry`), else null. */
  readonly delayMs: number | null;
}

/** Types of the events about a whole trace. */
export type TraceEventType =
  | 'trace_start'
  | 'trace_success'
  | 'trace_failed'
  | 'trace_cancel_start'
  | 'trace_cancel_drop'
  | 'trace_cancel_finish';

/** An event about a trace as a whole. */
export interface TraceEvent {
  readonly type: TraceEventType;
  readonly ts: number;
  readonly flow: string;
  readonly traceId: string;
  readonly tenant: string;
  /** Time since the trace was accepted, ms. */
  readonly elapsedMs: number;
  /** `trace_cancel_drop`: envelopes dropped from queues; `trace_cancel_finish`: runs aborted. Else 0. */
  readonly count: number;
  readonly error: EventError | null;
}

/** Types of the events about an agent's state. */
export type AgentEventType = 'agent_quarantined' | 'agent_restored';

/** Why an agent was quarantined. */
export type QuarantineReason = 'failure_ratio' | 'abandoned_runs' | 'manual';

/** An agent changed state. */
export interface AgentEvent {
  readonly type: AgentEventType;
  readonly ts: number;
  readonly agent: string;
  /** Why (`agent_quarantined`); null for `agent_restored`. */
  readonly reason: QuarantineReason | null;
  /** Runs in the sliding window when it happened. */
  readonly runs: number;
  /** Failed runs (errors and timeouts) in the window. */
  readonly failures: number;
  /** Timed-out handlers that ignored their abort and are still running. */
  readonly abandoned: number;
}

/** Types of the events about the dead-letter queue. */
export type DeadLetterEventType = 'dead_letter_added' | 'dead_letter_evicted' | 'dead_letter_replayed' | 'dead_letter_deleted';

/** The dead-letter queue changed. */
export interface DeadLetterEvent {
  readonly type: DeadLetterEventType;
  readonly ts: number;
  readonly deadLetterId: string;
  readonly flow: string;
  readonly node: string;
  readonly traceId: string;
  readonly tenant: string;
  readonly error: EventError;
  /** `dead_letter_replayed`: the new trace; else null. */
  readonly replayTraceId: string | null;
}

/** Types of the events about the journal's circuit breaker. */
export type StoreEventType = 'store_breaker_open' | 'store_breaker_half_open' | 'store_breaker_closed';

/** The journal's circuit breaker changed state. */
export interface StoreEvent {
  readonly type: StoreEventType;
  readonly ts: number;
  /** Failures in a row when it happened. */
  readonly failures: number;
  /** `store_breaker_open`: the failure that opened it; else null. */
  readonly error: EventError | null;
}

/** Why an envelope handed to a fleet worker went out again. */
export type RedeliveryReason = 'lease_expired' | 'busy' | 'resumed';

/** Types of the events about envelopes handed to the fleet's workers. */
export type DispatchEventType = 'dispatch_redelivered';

/** An envelope handed to a worker of the fleet was sent again (src/fleet/dispatcher.ts). */
export interface DispatchEvent {
  readonly type: DispatchEventType;
  readonly ts: number;
  readonly flow: string;
  readonly node: string;
  readonly traceId: string;
  readonly tenant: string;
  readonly envelopeId: string;
  /** The attempt (a redelivery does not start a new one). */
  readonly attempt: number;
  /** The delivery now going out: 2 for the first redelivery. */
  readonly delivery: number;
  /** The worker that held it, or null when none had acknowledged it. */
  readonly worker: string | null;
  /**
   * `lease_expired`: no acknowledgement or heartbeat within the lease; `busy`: the worker had no
   * room; `resumed`: resumed from the journal by a new owner (a restart or a takeover).
   */
  readonly reason: RedeliveryReason;
}

/** Every event the runtime publishes. */
export type RoostEvent = NodeEvent | TraceEvent | AgentEvent | DeadLetterEvent | StoreEvent | DispatchEvent | LeaderEvent | Agent2389Event;

/** Every event type, for docs and validation. */
export const EVENT_TYPES: readonly RoostEvent['type'][] = [
  'node_start',
  'node_success',
  'node_error',
  'node_retry',
  'node_timeout',
  'node_failed',
  'node_cancelled',
  'node_late_result',
  'deadline_skip',
  'queue_overflow',
  'join_surplus',
  'trace_start',
  'trace_success',
  'trace_failed',
  'trace_cancel_start',
  'trace_cancel_drop',
  'trace_cancel_finish',
  'agent_quarantined',
  'agent_restored',
  'dead_letter_added',
  'dead_letter_evicted',
  'dead_letter_replayed',
  'dead_letter_deleted',
  'store_breaker_open',
  'store_breaker_half_open',
  'store_breaker_closed',
  'dispatch_redelivered',
  'leader_elected',
  'leader_lost',
  'agent2389_task',
  'agent2389_call',
];

/** A function told of every event. It must not throw (a throw is logged and ignored). */
export type EventListener = (event: RoostEvent) => void;

/** Renders an error for an event. */
export function eventError(error: { code?: unknown; message: string }): EventError {
  return { code: typeof error.code === 'string' ? error.code : 'ROOST_ERR_NODE_FAILED', message: error.message };
}
