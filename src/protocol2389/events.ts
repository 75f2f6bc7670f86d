/**
 * Events of the 2389 Agent Protocol adapter (src/protocol2389). They are part of the runtime's
 * event stream (`RoostEvent` in flow/events.ts) and listed in `docs/reference/events.md`; the
 * metrics `roost_agent2389_tasks_total` and `roost_agent2389_calls_total` derive from them.
 */

/** The type of the events about tasks that came in on a 2389 input topic. */
export type Agent2389TaskEventType = 'agent2389_task';

/** The type of the events about tasks Roost sent to 2389 agents. */
export type Agent2389CallEventType = 'agent2389_call';

/**
 * What became of a task that came in on an agent's input topic:
 * - `accepted`: a trace of the agent's flow started for it;
 * - `duplicate`: its `task_id` was seen already (the first trace stands; nothing is answered twice);
 * - `retained`: a retained message on the input topic, ignored as the protocol says;
 * - `rejected`: refused before a trace started (`reason` says why; the sender got an error where it could be named);
 * - `completed`: its trace succeeded and the response was published;
 * - `failed`: its trace failed and the error was published.
 */
export type Agent2389TaskOutcome = 'accepted' | 'duplicate' | 'retained' | 'rejected' | 'completed' | 'failed';

/**
 * Why a task was rejected: `too_large` (over 256 KiB), `not_json`, `invalid` (wrong types, a
 * task id that is not a UUID, …), `unknown_version`, `wrong_topic` (its `topic` is not this
 * agent's input), `pipeline_depth_exceeded`, `not_accepted` (the flow refused it: a limit,
 * quarantine, a drain).
 */
export type Agent2389RejectReason = 'too_large' | 'not_json' | 'invalid' | 'unknown_version' | 'wrong_topic' | 'pipeline_depth_exceeded' | 'not_accepted';

/** A task on a Roost agent's 2389 input topic, and what became of it. */
export interface Agent2389TaskEvent {
  readonly type: Agent2389TaskEventType;
  readonly ts: number;
  /** The 2389 agent id (`[[agent2389]] id`). */
  readonly agent: string;
  readonly flow: string;
  readonly outcome: Agent2389TaskOutcome;
  /** `rejected`: why; else null. */
  readonly reason: Agent2389RejectReason | null;
  /** `rejected` and `failed`: the 2389 error code sent (null when no conversation could be named); else null. */
  readonly code: string | null;
  readonly taskId: string | null;
  readonly conversationId: string | null;
  /** The trace, once one started (the first trace for a duplicate). */
  readonly traceId: string | null;
  /** `completed` and `failed`: from acceptance to the answer's publish, ms; else null. */
  readonly latencyMs: number | null;
}

/** A task Roost sent to a 2389 agent (a node made by `runtime.protocol2389.handler`), and its end. */
export interface Agent2389CallEvent {
  readonly type: Agent2389CallEventType;
  readonly ts: number;
  /** The agent it went to. */
  readonly agent: string;
  /** `response`, `error` (the agent answered with an error), `aborted` (no answer before the node's signal aborted: its timeout, the deadline, a cancel) or `no_agent` (no available agent had the capability). */
  readonly outcome: 'response' | 'error' | 'aborted' | 'no_agent';
  /** The agent's error code (`error`), else null. */
  readonly code: string | null;
  readonly taskId: string | null;
  readonly conversationId: string | null;
  readonly latencyMs: number | null;
}

export type Agent2389Event = Agent2389TaskEvent | Agent2389CallEvent;
