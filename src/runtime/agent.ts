/**
 * An agent: a named handler with capabilities, a policy and a lifecycle state. It is quarantined
 * as a circuit breaker opens: when, within a sliding window, it has at least `minRuns` runs and
 * its failure ratio (errors plus timeouts) is over `failureRatio`, or when more than
 * `maxAbandoned` of its timed-out handlers ignored their abort and are still running.
 */
import { RoostError } from '../errors.js';
import type { AgentEvent, QuarantineReason } from '../flow/events.js';
import type { Handler } from '../flow/handler.js';
import type { NodePolicy } from '../flow/policy.js';
import { SlidingWindow } from './sliding-window.js';

/** An agent's lifecycle state. */
export type AgentState = 'starting' | 'ready' | 'draining' | 'stopped' | 'quarantined';

/** What happens to envelopes for a quarantined agent. */
export type QuarantineMode = 'reject' | 'park';

/** When an agent is quarantined and what happens to its work then. */
export interface QuarantineOptions {
  /** Length of the sliding window, ms (default 60,000). */
  readonly windowMs?: number;
  /** Runs the window must hold before the ratio counts (default 20). */
  readonly minRuns?: number;
  /** Quarantine when failures ÷ runs is over this (default 0.5). */
  readonly failureRatio?: number;
  /** Quarantine when more abandoned handlers than this are still running (default 8). */
  readonly maxAbandoned?: number;
  /**
   * `reject` (default): envelopes for it fail with `ROOST_ERR_QUARANTINED` (and are
   * dead-lettered, so they can be replayed after `restore`). `park`: they wait in the node's
   * bounded queues, and backpressure reaches the producers, until `restore`.
   */
  readonly mode?: QuarantineMode;
}

/** {@link QuarantineOptions} with defaults filled in. */
export type ResolvedQuarantineOptions = Required<QuarantineOptions>;

/** Defaults of {@link QuarantineOptions}. */
export const DEFAULT_QUARANTINE: ResolvedQuarantineOptions = Object.freeze({
  windowMs: 60_000,
  minRuns: 20,
  failureRatio: 0.5,
  maxAbandoned: 8,
  mode: 'reject',
});

/** What a user passes to `runtime.agent(…)`. */
export interface AgentOptions<I = unknown, O = unknown> {
  /** Unique in the runtime; `[A-Za-z0-9._-]{1,64}`. */
  readonly name: string;
  /** What it can do (free-form tags, used for routing by capability). */
  readonly capabilities?: readonly string[];
  readonly description?: string;
  readonly handler: Handler<I, O>;
  /** Default policy of every node that runs this agent. */
  readonly policy?: NodePolicy;
}

/** A snapshot of an agent for listings and health. */
export interface AgentInfo {
  readonly name: string;
  readonly state: AgentState;
  readonly capabilities: readonly string[];
  readonly description: string;
  readonly runs: number;
  readonly failures: number;
  readonly abandoned: number;
}

/** A registered agent. Made by `runtime.agent(…)`. */
export class Agent {
  readonly name: string;
  readonly capabilities: readonly string[];
  readonly description: string;
  readonly handler: Handler;
  readonly policy: NodePolicy | undefined;
  private stateValue: AgentState = 'starting';
  private abandonedCount = 0;
  private abandonCheckScheduled = false;
  private readonly window: SlidingWindow;
  private readonly restoreWatchers: (() => void)[] = [];

  /** @internal made by the runtime, which validates the options first. */
  constructor(
    options: AgentOptions,
    readonly quarantineOptions: ResolvedQuarantineOptions,
    private readonly publish: (event: AgentEvent) => void,
  ) {
    this.name = options.name;
    this.capabilities = Object.freeze([...(options.capabilities ?? [])]);
    this.description = options.description ?? '';
    this.handler = options.handler;
    this.policy = options.policy;
    this.window = new SlidingWindow(quarantineOptions.windowMs);
  }

  get state(): AgentState {
    return this.stateValue;
  }

  /** Handlers aborted (timed out or cancelled) that have not settled yet. */
  get abandoned(): number {
    return this.abandonedCount;
  }

  get quarantined(): boolean {
    return this.stateValue === 'quarantined';
  }

  /** @internal records a finished run and quarantines when the window says so. */
  recordRun(failed: boolean, now: number): void {
    this.window.record(failed, now);
    if (!failed || this.stateValue === 'quarantined') return;
    const runs = this.window.runCount(now);
    const failures = this.window.failureCount(now);
    if (runs >= this.quarantineOptions.minRuns && failures / runs > this.quarantineOptions.failureRatio) {
      this.quarantine('failure_ratio', now);
    }
  }

  /**
   * @internal a handler was aborted (timed out or cancelled) while running. It counts as
   * abandoned until it settles. The cap is checked one turn of the event loop later, so handlers
   * that honour their signal (they settle within microtasks of the abort) never trip it, even
   * when many are aborted at once.
   */
  abandonedStarted(): void {
    this.abandonedCount++;
    if (this.abandonedCount > this.quarantineOptions.maxAbandoned && !this.abandonCheckScheduled) {
      this.abandonCheckScheduled = true;
      setImmediate(this.checkAbandoned).unref();
    }
  }

  private readonly checkAbandoned = (): void => {
    this.abandonCheckScheduled = false;
    if (this.abandonedCount > this.quarantineOptions.maxAbandoned && this.stateValue !== 'quarantined' && this.stateValue !== 'stopped') {
      this.quarantine('abandoned_runs', Date.now());
    }
  };

  /** @internal an abandoned handler finally settled. */
  abandonedSettled(): void {
    if (this.abandonedCount > 0) this.abandonedCount--;
  }

  /** @internal runtime lifecycle. */
  setLifecycle(state: 'ready' | 'draining' | 'stopped'): void {
    if (this.stateValue === 'quarantined' && state !== 'stopped') return;
    this.stateValue = state;
  }

  /** Quarantines the agent now (also done automatically; see the class comment). */
  quarantine(reason: QuarantineReason = 'manual', now: number = Date.now()): void {
    if (this.stateValue === 'quarantined' || this.stateValue === 'stopped') return;
    this.stateValue = 'quarantined';
    this.publish(this.event('agent_quarantined', reason, now));
  }

  /** Brings a quarantined agent back: clears its window and resumes its parked work. */
  restore(now: number = Date.now()): void {
    if (this.stateValue !== 'quarantined') {
      throw new RoostError('ROOST_ERR_INVALID_STATE', `agent ${this.name} is ${this.stateValue}, not quarantined`, {
        field: 'agent',
        expected: 'a quarantined agent',
        received: this.stateValue,
      });
    }
    this.window.reset();
    this.stateValue = 'ready';
    this.publish(this.event('agent_restored', null, now));
    for (const watcher of this.restoreWatchers) watcher();
  }

  /** @internal called after each restore (node runners resume their queues). */
  onRestore(watcher: () => void): void {
    this.restoreWatchers.push(watcher);
  }

  /** A snapshot for listings. */
  info(now: number = Date.now()): AgentInfo {
    return {
      name: this.name,
      state: this.stateValue,
      capabilities: this.capabilities,
      description: this.description,
      runs: this.window.runCount(now),
      failures: this.window.failureCount(now),
      abandoned: this.abandonedCount,
    };
  }

  private event(type: AgentEvent['type'], reason: QuarantineReason | null, now: number): AgentEvent {
    return {
      type,
      ts: now,
      agent: this.name,
      reason,
      runs: this.window.runCount(now),
      failures: this.window.failureCount(now),
      abandoned: this.abandonedCount,
    };
  }
}
