/**
 * Prometheus metrics of a runtime, derived from its events (and a few gauges read when scraped).
 * Labels are bounded: flow, node, agent, outcome, status, store operation, HTTP route template,
 * singleton name. No trace id or other unbounded value is ever a label. Every metric here is listed in
 * `docs/reference/metrics.md`; `test/unit/metrics-doc.test.ts` keeps the two in step.
 */
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { FleetView } from '../fleet/presence-registry.js';
import { PRESENCE_STATUSES } from '../fleet/presence-record.js';
import type { RoostEvent } from '../flow/events.js';
import type { Runtime } from '../runtime/runtime.js';
import { CounterVec, HistogramVec } from './metric-vec.js';

/** Buckets for node and request durations, seconds: 0.5 ms to 60 s. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** Buckets for store operations, seconds: 0.1 ms to 10 s. */
const STORE_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 10];

const BREAKER_STATES = { closed: 0, half_open: 1, open: 2 } as const;

/** What else the metrics read besides the runtime. */
export interface RuntimeMetricsOptions {
  /** The fleet registry (presence), for `roost_fleet_processes`; none: that gauge has no series. */
  readonly fleet?: FleetView | null;
}

/** The metrics of one runtime (and its HTTP service), in a registry of their own. */
export class RuntimeMetrics {
  readonly registry = new Registry();
  private readonly off: (() => void)[] = [];

  private readonly tasksReceived = this.counter('roost_tasks_received_total', 'Tasks a flow accepted (traces started).', ['flow']);
  private readonly tasksFinished = this.counter('roost_tasks_finished_total', 'Traces that ended, by how.', ['flow', 'status']);
  private readonly received = this.counter('roost_node_messages_received_total', 'Envelopes a node began to handle (their first run there, replays and resumed work included; retries are roost_node_retries_total).', ['flow', 'node']);
  private readonly completed = this.counter('roost_node_messages_completed_total', 'Envelopes a node handled successfully.', ['flow', 'node']);
  private readonly failed = this.counter('roost_node_messages_failed_total', 'Envelopes a node failed for good (after its retries, or a terminal error).', ['flow', 'node']);
  private readonly duration = new HistogramVec(
    'roost_node_duration_seconds',
    'Handler run time per attempt, by outcome (success, error, timeout).',
    ['flow', 'node', 'outcome'],
    DURATION_BUCKETS,
    this.registry,
  );
  private readonly retries = this.counter('roost_node_retries_total', 'Retries scheduled after a failed attempt.', ['flow', 'node']);
  private readonly timeouts = this.counter('roost_node_timeouts_total', 'Attempts cut off by their timeout or the deadline.', ['flow', 'node']);
  private readonly lateResults = this.counter('roost_node_late_results_total', 'Results that arrived after their attempt was abandoned (discarded).', ['flow', 'node']);
  private readonly deadlineSkips = this.counter('roost_deadline_skips_total', 'Envelopes not run because their deadline had passed.', ['flow', 'node']);
  private readonly redeliveries = this.counter('roost_dispatch_redeliveries_total', 'Envelopes of remote nodes sent again to the fleet (lease expired, or the worker was busy).', ['flow', 'node', 'reason']);
  private readonly overflows = this.counter('roost_queue_overflows_total', 'Envelopes a full edge refused or evicted.', ['flow', 'node']);
  private readonly cancellations = this.counter('roost_trace_cancellations_total', 'Traces cancelled.', ['flow']);
  private readonly deadLettersAdded = this.counter('roost_dead_letters_added_total', 'Envelopes put in the dead-letter queue.', ['flow', 'node']);
  private readonly quarantines = this.counter('roost_agent_quarantines_total', 'Times an agent was quarantined, by reason.', ['agent', 'reason']);
  private readonly storeOps = new HistogramVec(
    'roost_store_operation_duration_seconds',
    'Journal store operations, by operation and outcome (ok, error).',
    ['operation', 'outcome'],
    STORE_BUCKETS,
    this.registry,
  );
  /** 1 while this process leads singleton `name`, 0 once it stopped (no series before it first led). */
  private readonly leader = new Gauge({ name: 'roost_leader', help: 'Whether this process leads the singleton duty: 1 leading, 0 not.', labelNames: ['name'], registers: [this.registry] });
  private readonly tasks2389 = this.counter('roost_agent2389_tasks_total', 'Tasks on the input topics of flows exposed as 2389 agents, by what became of them (accepted, duplicate, retained, rejected, completed, failed).', ['agent', 'outcome']);
  private readonly rejected2389 = this.counter('roost_agent2389_rejected_total', 'Tasks a 2389 agent refused before a trace started, by reason.', ['agent', 'reason']);
  private readonly calls2389 = this.counter('roost_agent2389_calls_total', 'Tasks this process sent to 2389 agents, by how they ended (response, error, aborted, no_agent).', ['agent', 'outcome']);
  private readonly leaderChanges = this.counter('roost_leader_changes_total', 'Times this process became the leader of the singleton duty (summed over the fleet: the changes of leader).', ['name']);
  /** HTTP requests, by method, route template and status (filled by the service). */
  readonly httpRequests = this.counter('roost_http_requests_total', 'HTTP requests served, by method, route and status.', ['method', 'route', 'status']);
  readonly httpDuration = new HistogramVec('roost_http_request_duration_seconds', 'HTTP request time, by method and route.', ['method', 'route'], DURATION_BUCKETS, this.registry);
  /** Open streaming clients (set by the service). */
  readonly streamClients = new Gauge({ name: 'roost_stream_clients', help: 'Open Server-Sent Events and WebSocket clients.', labelNames: ['kind'], registers: [this.registry] });

  constructor(runtime: Runtime, options: RuntimeMetricsOptions = {}) {
    collectDefaultMetrics({ register: this.registry });
    const fleet = options.fleet ?? null;
    new Gauge({
      name: 'roost_fleet_processes',
      help: 'Processes in the fleet registry (presence not expired), by status.',
      labelNames: ['status'],
      registers: [this.registry],
      collect() {
        if (fleet === null) return;
        const counts = new Map<string, number>(PRESENCE_STATUSES.map((s) => [s, 0]));
        for (const p of fleet.list()) counts.set(p.status, (counts.get(p.status) ?? 0) + 1);
        for (const [status, n] of counts) this.set({ status }, n);
      },
    });
    new Gauge({
      name: 'roost_traces_in_flight',
      help: 'Traces admitted and not finished, across flows.',
      registers: [this.registry],
      collect() {
        this.set(runtime.inFlightTraces);
      },
    });
    new Gauge({
      name: 'roost_queue_depth',
      help: "Envelopes waiting on a node's incoming edges.",
      labelNames: ['flow', 'node'],
      registers: [this.registry],
      collect() {
        for (const flow of runtime.flowNames()) for (const n of runtime.getFlow(flow)!.nodeStats()) this.set({ flow, node: n.node }, n.queued);
      },
    });
    new Gauge({
      name: 'roost_node_running',
      help: 'Handler runs holding a slot of a node now.',
      labelNames: ['flow', 'node'],
      registers: [this.registry],
      collect() {
        for (const flow of runtime.flowNames()) for (const n of runtime.getFlow(flow)!.nodeStats()) this.set({ flow, node: n.node }, n.running);
      },
    });
    new Gauge({
      name: 'roost_dead_letters',
      help: 'Letters in the dead-letter queue (in memory).',
      registers: [this.registry],
      collect() {
        this.set(runtime.deadLetters.size);
      },
    });
    new Gauge({
      name: 'roost_agents_quarantined',
      help: 'Agents quarantined now.',
      registers: [this.registry],
      collect() {
        this.set(runtime.stats().quarantinedAgents);
      },
    });
    new Gauge({
      name: 'roost_store_breaker_state',
      help: "The journal store's circuit breaker: 0 closed, 1 half-open, 2 open.",
      registers: [this.registry],
      collect() {
        const store = runtime.store;
        this.set(store === null ? 0 : BREAKER_STATES[store.breaker.state]);
      },
    });
    this.off.push(runtime.on((event) => this.record(event)));
    if (runtime.store !== null) {
      this.off.push(runtime.store.observe((operation, ms, ok) => this.storeOps.observe([operation, ok ? 'ok' : 'error'], ms / 1000)));
    }
  }

  /** The Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** The same as JSON (prom-client's shape: one entry per metric with its values). */
  json(): Promise<unknown> {
    return this.registry.getMetricsAsJSON();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Stops listening to the runtime. */
  close(): void {
    for (const off of this.off.splice(0)) off();
  }

  private counter<L extends string>(name: string, help: string, labelNames: readonly L[]): CounterVec<L> {
    return new CounterVec(name, help, labelNames, this.registry);
  }

  private record(event: RoostEvent): void {
    switch (event.type) {
      case 'trace_start':
        this.tasksReceived.inc([event.flow]);
        return;
      case 'trace_success':
        this.tasksFinished.inc([event.flow, 'succeeded']);
        return;
      case 'trace_failed':
        this.tasksFinished.inc([event.flow, 'failed']);
        return;
      case 'trace_cancel_finish':
        this.tasksFinished.inc([event.flow, 'cancelled']);
        this.cancellations.inc([event.flow]);
        return;
      case 'node_start':
        if (event.attempt === event.firstAttempt) this.received.inc([event.flow, event.node]); // not a retry
        return;
      case 'node_success':
        this.completed.inc([event.flow, event.node]);
        this.duration.observe([event.flow, event.node, 'success'], (event.latencyMs ?? 0) / 1000);
        return;
      case 'node_error':
        this.duration.observe([event.flow, event.node, 'error'], (event.latencyMs ?? 0) / 1000);
        return;
      case 'node_timeout':
        this.timeouts.inc([event.flow, event.node]);
        this.duration.observe([event.flow, event.node, 'timeout'], (event.latencyMs ?? 0) / 1000);
        return;
      case 'node_failed':
        this.failed.inc([event.flow, event.node]);
        return;
      case 'node_retry':
        this.retries.inc([event.flow, event.node]);
        return;
      case 'node_late_result':
        this.lateResults.inc([event.flow, event.node]);
        return;
      case 'deadline_skip':
        this.deadlineSkips.inc([event.flow, event.node]);
        return;
      case 'queue_overflow':
        this.overflows.inc([event.flow, event.node]);
        return;
      case 'dead_letter_added':
        this.deadLettersAdded.inc([event.flow, event.node]);
        return;
      case 'agent_quarantined':
        this.quarantines.inc([event.agent, event.reason ?? 'manual']);
        return;
      case 'dispatch_redelivered':
        this.redeliveries.inc([event.flow, event.node, event.reason]);
        return;
      case 'leader_elected':
        this.leader.set({ name: event.name }, 1);
        this.leaderChanges.inc([event.name]);
        return;
      case 'agent2389_task':
        this.tasks2389.inc([event.agent, event.outcome]);
        if (event.reason !== null) this.rejected2389.inc([event.agent, event.reason]);
        return;
      case 'agent2389_call':
        this.calls2389.inc([event.agent, event.outcome]);
        return;
      case 'leader_lost':
        this.leader.set({ name: event.name }, 0);
        return;
      default:
        return;
    }
  }
}
