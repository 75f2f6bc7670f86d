/**
 * The runtime: hosts agents and flows, owns the timers, the dead-letter queue, the idempotency
 * window, the limits and the event stream, and has a lifecycle
 * `created → starting → running → draining → stopped` (`failed` if start fails).
 */
import { assertName } from '../envelope/names.js';
import { RoostError, ensureError, invalidOption, isRoostError } from '../errors.js';
import { eventError, type EventListener, type RoostEvent } from '../flow/events.js';
import { Singletons, type SingletonFn, type SingletonHandle, type SingletonOptions } from '../fleet/singleton.js';
import { Flow, type EmitOptions, type EmitResult, type FlowOptions } from '../flow/flow.js';
import { Fleet } from '../fleet/fleet.js';
import { Protocol2389 } from '../protocol2389/protocol.js';
import type { FlowHost, RemoteNode } from '../flow/host.js';
import type { Middleware } from '../flow/handler.js';
import { OVERFLOW_POLICIES } from '../flow/bounded-queue.js';
import { resolvePolicy } from '../flow/policy.js';
import { TimerQueue } from '../resilience/timer-queue.js';
import { GuardedStore } from '../store/guarded.js';
import { traceHistory } from '../store/history.js';
import { Journal } from '../store/journal.js';
import { openStore } from '../store/open.js';
import { addRequest, takeRequests } from '../store/requests.js';
import { ownerLeaseName, type DispatchLease, type Store, type StoredEvent, type StoredTrace, type TracePage, type TraceQuery } from '../store/store.js';
import { createLogger, type Logger } from '../telemetry/logger.js';
import { checkObject, optBool, optEnum, optInt } from '../validate-options.js';
import { Agent, type AgentInfo, type AgentOptions } from './agent.js';
import { DeadLetterQueue, type DeadLetter } from './dead-letters.js';
import { IdempotencyWindow } from './idempotency-window.js';
import { resolveQuarantine, resolveRuntimeOptions, type ResolvedRuntimeOptions, type RuntimeOptions } from './options.js';

/** A deletion asked through the journal that no running runtime holds is dropped after this long. */
const DELETE_REQUEST_TTL_MS = 60_000;

/** Where a runtime is in its life. */
export type RuntimeState = 'created' | 'starting' | 'running' | 'draining' | 'stopped' | 'failed';

/** Options of {@link Runtime.drain}. */
export interface DrainOptions {
  /** Cancel what is still running after this many ms (default: wait for all of it). */
  readonly timeoutMs?: number;
}

/** A snapshot of the runtime's counters. */
export interface RuntimeStats {
  readonly state: RuntimeState;
  readonly inFlightTraces: number;
  readonly reservedRuns: number;
  readonly agents: number;
  readonly quarantinedAgents: number;
  readonly deadLetters: number;
  readonly timers: number;
}

const AGENT_KEYS = ['name', 'capabilities', 'description', 'handler', 'policy', 'quarantine'];
const FLOW_KEYS = ['name', 'edges', 'ingress', 'queueCapacity', 'overflow', 'ingressQueue', 'allowCycles', 'maxHops'];

/** Creates a runtime. Options are validated now (`ROOST_ERR_INVALID_OPTION`) and frozen. */
export function createRuntime(options: RuntimeOptions = {}): Runtime {
  return new Runtime(options);
}

/** See the module comment. Made by {@link createRuntime}. */
export class Runtime implements FlowHost, AsyncDisposable {
  readonly options: ResolvedRuntimeOptions;
  readonly timers: TimerQueue;
  readonly logger: Logger;
  /** Random numbers for backoff jitter (the `random` option). */
  readonly random: () => number;
  readonly deadLetters: DeadLetterQueue;
  readonly idempotency: IdempotencyWindow | null;
  /** The store behind the journal, or null without one. */
  readonly store: GuardedStore | null;
  readonly journal: Journal | null;
  /** This process's part in a fleet (the `fleet` option), or null. */
  readonly fleet: Fleet | null;
  /** The 2389 Agent Protocol over MQTT (the `protocol2389` option), or null. */
  readonly protocol2389: Protocol2389 | null;
  listening = false;
  private readonly ownsStore: boolean;
  private stateValue: RuntimeState = 'created';
  private readonly agents = new Map<string, Agent>();
  private readonly inlineAgents = new WeakMap<AgentOptions, Agent>();
  private readonly flows = new Map<string, Flow>();
  private listeners: EventListener[] = [];
  private inFlight = 0;
  private cutOffValue = 0;
  private reservedRuns = 0;
  private idle: (() => void)[] = [];
  private draining: Promise<void> | null = null;
  private closing: Promise<void> | null = null;
  private readonly singletons = new Singletons(this);

  constructor(options: RuntimeOptions = {}) {
    this.options = resolveRuntimeOptions(options);
    this.logger = createLogger(this.options.logger);
    this.random = this.options.random;
    this.timers = new TimerQueue((error) => this.logger.error({ err: ensureError(error) }, 'a timer callback threw'));
    this.deadLetters = new DeadLetterQueue(this.options.deadLetters.max, (e) => this.publish(e));
    const i = this.options.idempotency;
    this.idempotency = i === false ? null : new IdempotencyWindow(i.max, i.ttlMs);
    const store = this.options.store;
    this.ownsStore = typeof store === 'string';
    const inner =
      store === null ? null : typeof store === 'string' ? openStore(store, { postgres: { statementTimeoutMs: this.options.storeTimeoutMs } }, 'store') : store;
    this.store =
      inner === null
        ? null
        : new GuardedStore(inner, this.options.storeTimeoutMs, this.options.storeBreaker, (state, failures, error) =>
            this.publish({
              type: `store_breaker_${state}`,
              ts: Date.now(),
              failures,
              error: error === null ? null : eventError(error),
            }),
          );
    this.journal =
      this.store === null
        ? null
        : new Journal(
            this.store,
            (error) => this.logger.error({ err: error }, 'journal commit failed'),
            () => this.checkStoreSize(),
          );
    const fleet = this.options.fleet;
    this.fleet =
      fleet === null
        ? null
        : new Fleet(fleet, {
            logger: this.logger,
            journal: this.journal,
            maxPayloadBytes: this.options.maxPayloadBytes,
            publish: (e) => this.publish(e),
            workerNode: (flow, node) => this.flows.get(flow)?.workerNode(node),
            sharedStore: this.store?.shared === true,
            localRuns: () => this.localRuns(),
          });
    const p2389 = this.options.protocol2389;
    this.protocol2389 =
      p2389 === null
        ? null
        : new Protocol2389(p2389, {
            logger: this.logger,
            journal: this.journal,
            owner: this.options.owner,
            ownerLeaseMs: this.options.ownerLeaseMs,
            flow: (name) => this.flows.get(name),
            accepting: () => this.stateValue === 'running',
            publish: (e) => this.publish(e),
          });
  }

  /** The agents of the nodes that run here (not remote ones), and their runs now and at most. */
  private localRuns(): { agents: Agent[]; running: number; capacity: number } {
    const agents = new Set<Agent>();
    let running = 0;
    let capacity = 0;
    for (const flow of this.flows.values()) {
      const r = flow.localRuns();
      for (const a of r.agents) agents.add(a);
      running += r.running;
      capacity += r.capacity;
    }
    return { agents: [...agents], running, capacity };
  }

  /** @internal (FlowHost) */
  resumedLease(envelopeId: string, lease: DispatchLease): void {
    this.fleet?.resumedLease(envelopeId, lease);
  }

  /** @internal how the fleet runs a node remotely, or null (FlowHost). */
  remoteNode(flow: string, node: string, timeoutMs: number | null): RemoteNode | null {
    return this.fleet === null ? null : this.fleet.remoteNode(flow, node, timeoutMs);
  }

  get journalEvents(): 'state' | 'all' | 'none' {
    return this.options.journalEvents;
  }
  get owner(): string {
    return this.options.owner;
  }

  get state(): RuntimeState {
    return this.stateValue;
  }

  // ---- FlowHost ---------------------------------------------------------------------------------
  get maxPayloadBytes(): number {
    return this.options.maxPayloadBytes;
  }
  get streamBuffer(): number {
    return this.options.streamBuffer;
  }
  get results(): { ttlMs: number; max: number } {
    return this.options.results;
  }
  get correlate(): boolean {
    return this.options.correlate;
  }
  get middlewares(): readonly Middleware[] {
    return this.options.middlewares;
  }

  /** @internal */
  assertAccepting(operation: string, internal = false): void {
    if (!internal) this.assertWorkAllowed(operation);
    this.assertRunning(operation);
  }

  private assertWorkAllowed(operation: string): void {
    if (this.fleet !== null && this.fleet.options.role === 'worker') {
      // A worker's traces would have no owner to resume them: it runs nodes for others only.
      throw new RoostError('ROOST_ERR_INVALID_STATE', `${operation}: this process is a worker of the fleet; it runs nodes for the owners of their traces and takes no tasks`, {
        field: 'fleet.role',
        expected: 'owner',
        received: 'worker',
        retryable: false,
      });
    }
  }

  private assertRunning(operation: string): void {
    if (this.stateValue !== 'running') {
      throw new RoostError('ROOST_ERR_INVALID_STATE', `${operation}: the runtime is ${this.stateValue}, not running`, {
        field: 'runtime.state',
        expected: 'running',
        received: this.stateValue,
      });
    }
  }

  /** @internal */
  traceStarted(): void {
    if (this.inFlight >= this.options.limits.maxInFlightTraces) {
      throw new RoostError('ROOST_ERR_RESOURCE_LIMIT', `limits.maxInFlightTraces: ${this.inFlight} traces are in flight already`, {
        field: 'limits.maxInFlightTraces',
        details: { limit: this.options.limits.maxInFlightTraces },
      });
    }
    this.inFlight++;
  }

  /** @internal */
  assertStoreRoom(): void {
    this.store?.assertAvailable();
    if (!this.storeFull) return;
    const max = this.options.retention.maxStoreBytes;
    throw new RoostError('ROOST_ERR_STORE_FULL', `the journal holds ${this.storeUsedBytes} bytes, over retention.maxStoreBytes (${max}): new work is refused`, {
      field: 'retention.maxStoreBytes',
      details: { usedBytes: this.storeUsedBytes, maxStoreBytes: max },
    });
  }

  private storeFull = false;
  private storeUsedBytes = 0;
  private sizeCheck: Promise<void> | null = null;

  /** Reads the journal's size (after a commit or a prune) when a cap is set; one read at a time. */
  private checkStoreSize(): void {
    const max = this.options.retention.maxStoreBytes;
    if (max === null || this.store === null || this.sizeCheck !== null) return;
    this.sizeCheck = this.store
      .usedBytes()
      .then((used) => {
        if (used === null) return;
        this.storeUsedBytes = used;
        const full = used > max;
        if (full !== this.storeFull) this.logger.warn({ usedBytes: used, maxStoreBytes: max }, full ? 'journal full: refusing new work' : 'journal has room again');
        this.storeFull = full;
      })
      .catch((error: unknown) => this.logger.error({ err: ensureError(error) }, 'journal size check failed'))
      .finally(() => {
        this.sizeCheck = null;
      });
  }

  private pruneTimer: ReturnType<typeof setInterval> | null = null;
  private requestsTimer: ReturnType<typeof setInterval> | null = null;
  private servingRequests = false;

  /**
   * Carries out what the CLI asked through the journal (`roost replay`, `roost dlq replay` and
   * `roost dlq delete`) for the flows this runtime hosts. A replay asked for a letter that is no
   * longer in the journal (deleted, or replayed elsewhere) is dropped; one that fails for a
   * passing reason (the store, a limit) is asked again, one that cannot succeed is logged and
   * dropped. A deletion is taken by the runtime that holds the letter in memory, or dropped
   * after a minute when none does (the CLI already deleted it from the journal).
   */
  private async serveRequests(): Promise<void> {
    const store = this.store;
    // A worker of the fleet takes no replays (they start traces): the owners serve the requests.
    if (store === null || this.servingRequests || this.stateValue !== 'running' || this.fleet?.options.role === 'worker') return;
    this.servingRequests = true;
    try {
      const now = Date.now();
      const gone = new Set<string>();
      const requests = await takeRequests(store, async (request) => {
        if (request.op === 'delete') return this.deadLetters.has(request.id) || now - request.at > DELETE_REQUEST_TTL_MS;
        const letter = await store.getDeadLetter(request.id);
        if (letter === null) gone.add(request.id);
        return letter === null || this.flows.has(letter.flow);
      });
      for (const request of requests) {
        if (request.op === 'delete') {
          if (this.deadLetters.delete(request.id, now)) this.logger.info({ deadLetterId: request.id }, 'deleted a dead letter on request');
          continue;
        }
        if (gone.has(request.id)) {
          this.logger.warn({ deadLetterId: request.id }, 'a requested replay was dropped: the dead letter is no longer in the journal');
          continue;
        }
        try {
          const traceId = await this.replayDeadLetter(request.id);
          this.logger.info({ deadLetterId: request.id, traceId }, 'replayed a dead letter on request');
        } catch (error) {
          const err = ensureError(error);
          if (isRoostError(err) && err.retryable) {
            this.logger.warn({ err, deadLetterId: request.id }, 'a requested replay failed for now; asking again');
            await addRequest(store, 'replay', request.id, request.at);
          } else {
            this.logger.error({ err, deadLetterId: request.id }, 'a requested replay failed and was dropped');
          }
        }
      }
    } catch (error) {
      this.logger.error({ err: ensureError(error) }, 'reading requests from the journal failed');
    } finally {
      this.servingRequests = false;
    }
  }

  /** Deletes finished traces older than `retention.finishedMs`; returns how many. */
  async prune(): Promise<number> {
    if (this.store === null) return 0;
    const n = await this.store.prune(Date.now() - this.options.retention.finishedMs);
    if (n > 0) this.logger.info({ traces: n }, 'pruned finished traces from the journal');
    this.checkStoreSize();
    return n;
  }

  /** @internal */
  traceResumed(flow: string, traceId: string, idempotencyKey: string | null): void {
    this.inFlight++;
    this.protocol2389?.resumed(flow, traceId, idempotencyKey);
  }

  /** @internal */
  traceEnded(): void {
    if (--this.inFlight === 0 && this.idle.length > 0) {
      const idle = this.idle;
      this.idle = [];
      for (const resolve of idle) resolve();
    }
  }

  /** @internal */
  reserveRuns(flow: string, concurrency: number): void {
    const limit = this.options.limits.maxConcurrentRuns;
    if (this.reservedRuns + concurrency > limit) {
      throw new RoostError(
        'ROOST_ERR_RESOURCE_LIMIT',
        `limits.maxConcurrentRuns: flow ${flow} needs ${concurrency} run slots, ${limit - this.reservedRuns} of ${limit} are left`,
        // Retrying the same registration can never fit: not retryable.
        { field: 'limits.maxConcurrentRuns', retryable: false, details: { limit, reserved: this.reservedRuns, requested: concurrency } },
      );
    }
    this.reservedRuns += concurrency;
  }

  /** @internal */
  resolveAgent(agent: Agent | AgentOptions): Agent {
    if (agent instanceof Agent) {
      if (this.agents.get(agent.name) !== agent) {
        throw new RoostError('ROOST_ERR_AGENT_NOT_FOUND', `agent ${agent.name} is not registered with this runtime`, { field: 'node.agent' });
      }
      return agent;
    }
    const known = this.inlineAgents.get(agent);
    if (known !== undefined) return known;
    const created = this.agent(agent);
    this.inlineAgents.set(agent, created);
    return created;
  }

  /** @internal */
  publish(event: RoostEvent): void {
    const listeners = this.listeners;
    for (let i = 0; i < listeners.length; i++) {
      try {
        listeners[i]!(event);
      } catch (error) {
        this.logger.error({ err: ensureError(error), event: event.type }, 'event listener threw');
      }
    }
  }

  // ---- registry ---------------------------------------------------------------------------------

  /** Registers an agent. Throws `ROOST_ERR_ALREADY_EXISTS` or `ROOST_ERR_RESOURCE_LIMIT`. */
  agent<I, O>(options: AgentOptions<I, O> & { quarantine?: RuntimeOptions['quarantine'] }): Agent {
    this.assertRegistering('agent');
    const o = checkObject('agent', options, AGENT_KEYS);
    const name = assertName('agent.name', o['name']);
    if (typeof o['handler'] !== 'function') throw invalidOption(`agent(${name}).handler`, 'a function', o['handler']);
    const caps = o['capabilities'] ?? [];
    if (!Array.isArray(caps) || caps.some((c) => typeof c !== 'string')) throw invalidOption(`agent(${name}).capabilities`, 'an array of strings', caps);
    if (o['description'] !== undefined && typeof o['description'] !== 'string') throw invalidOption(`agent(${name}).description`, 'a string', o['description']);
    resolvePolicy(`agent(${name}).policy`, o['policy']); // validate now, not when a flow uses it
    if (this.agents.has(name)) {
      throw new RoostError('ROOST_ERR_ALREADY_EXISTS', `an agent named ${name} is already registered`, { field: 'agent.name', received: name });
    }
    if (this.agents.size >= this.options.limits.maxAgents) {
      throw new RoostError('ROOST_ERR_RESOURCE_LIMIT', `limits.maxAgents: ${this.agents.size} agents are registered already`, {
        field: 'limits.maxAgents',
        retryable: false, // agents are not unregistered: retrying cannot help
        details: { limit: this.options.limits.maxAgents },
      });
    }
    const quarantine = resolveQuarantine(`agent(${name}).quarantine`, o['quarantine'], this.options.quarantine);
    const agent = new Agent(options as AgentOptions, quarantine, (e) => this.publish(e));
    if (this.stateValue === 'running') agent.setLifecycle('ready');
    this.agents.set(name, agent);
    return agent;
  }

  /** Builds and registers a flow. Throws `ROOST_ERR_FLOW_INVALID`, `ROOST_ERR_ALREADY_EXISTS` or `ROOST_ERR_RESOURCE_LIMIT`. */
  flow(options: FlowOptions): Flow {
    this.assertRegistering('flow');
    const o = checkObject('flow', options, FLOW_KEYS);
    const name = assertName('flow.name', o['name']);
    if (this.flows.has(name)) throw new RoostError('ROOST_ERR_ALREADY_EXISTS', `a flow named ${name} is already registered`, { field: 'flow.name', received: name });
    const field = `flow(${name})`;
    const fields = {
      capacity: optInt(field, o, 'queueCapacity', 1, 1_000_000, 64),
      overflow: optEnum(field, o, 'overflow', OVERFLOW_POLICIES, 'wait'),
      allowCycles: optBool(field, o, 'allowCycles', false),
      maxHops: optInt(field, o, 'maxHops', 1, 1_000_000, 64),
    };
    const ingress = checkObject(`${field}.ingressQueue`, o['ingressQueue'], ['capacity', 'overflow']);
    optInt(`${field}.ingressQueue`, ingress, 'capacity', 1, 1_000_000, fields.capacity);
    optEnum(`${field}.ingressQueue`, ingress, 'overflow', OVERFLOW_POLICIES, fields.overflow);
    // A flow that fails to build leaves nothing behind: neither its run slots nor its inline agents.
    const agentsBefore = new Set(this.agents.keys());
    const reservedBefore = this.reservedRuns;
    try {
      const flow = new Flow(this, options, fields);
      this.flows.set(name, flow);
      return flow;
    } catch (error) {
      this.reservedRuns = reservedBefore;
      for (const agentName of [...this.agents.keys()]) if (!agentsBefore.has(agentName)) this.agents.delete(agentName);
      throw error;
    }
  }

  private assertRegistering(what: string): void {
    if (this.stateValue !== 'created' && this.stateValue !== 'running') {
      throw new RoostError('ROOST_ERR_INVALID_STATE', `${what}: cannot register while the runtime is ${this.stateValue}`, {
        field: 'runtime.state',
        expected: 'created or running',
        received: this.stateValue,
      });
    }
  }

  /** The flow named `name`, or undefined. */
  getFlow(name: string): Flow | undefined {
    return this.flows.get(name);
  }

  /** Every flow's name. */
  flowNames(): string[] {
    return [...this.flows.keys()];
  }

  /** The agent named `name`, or throws `ROOST_ERR_AGENT_NOT_FOUND`. */
  getAgent(name: string): Agent {
    const agent = this.agents.get(name);
    if (agent === undefined) throw new RoostError('ROOST_ERR_AGENT_NOT_FOUND', `no agent named ${name}`, { field: 'agent', received: name });
    return agent;
  }

  /** Snapshots of every agent. */
  listAgents(): AgentInfo[] {
    const now = Date.now();
    return [...this.agents.values()].map((a) => a.info(now));
  }

  /** Quarantines an agent by hand (reason `manual`), until {@link restore}. */
  quarantine(name: string): void {
    this.getAgent(name).quarantine('manual');
  }

  /** Brings a quarantined agent back (its parked envelopes resume). */
  restore(name: string): void {
    this.getAgent(name).restore();
  }

  /** Emits into the flow named `flow`. */
  emit(flow: string, payload: unknown, options?: EmitOptions): Promise<EmitResult> {
    const f = this.flows.get(flow);
    if (f === undefined) return Promise.reject(new RoostError('ROOST_ERR_FLOW_NOT_FOUND', `no flow named ${flow}`, { field: 'flow', received: flow }));
    return f.emit(payload, options);
  }

  /** Re-runs a dead letter as a new trace (attempt + 1) at the node that failed it; returns the new trace id. */
  async replayDeadLetter(id: string): Promise<string> {
    const letter = await this.findDeadLetter(id);
    const flow = this.flows.get(letter.flow);
    if (flow === undefined) throw new RoostError('ROOST_ERR_FLOW_NOT_FOUND', `no flow named ${letter.flow}`, { field: 'deadLetter.flow', received: letter.flow });
    const traceId = await flow.replay(letter);
    this.deadLetters.replayed(letter, traceId, Date.now());
    if (this.journal !== null) {
      this.journal.deadLetterRemoved(letter.id);
      await this.journal.committed();
    }
    return traceId;
  }

  /**
   * Removes a dead letter without replaying it, from memory and (with a journal) from the store;
   * `ROOST_ERR_DEAD_LETTER_NOT_FOUND` when neither has it.
   */
  async deleteDeadLetter(id: string): Promise<void> {
    const letter = await this.findDeadLetter(id);
    this.deadLetters.delete(letter.id, Date.now());
    if (this.journal !== null) {
      this.journal.deadLetterRemoved(letter.id);
      await this.journal.committed();
    }
    this.logger.info({ deadLetterId: letter.id, flow: letter.flow }, 'deleted a dead letter');
  }

  /** A dead letter from memory, or (with a journal) from the store. */
  private async findDeadLetter(id: string): Promise<DeadLetter> {
    try {
      return this.deadLetters.get(id);
    } catch (error) {
      const stored = this.store === null || typeof id !== 'string' ? null : await this.store.getDeadLetter(id);
      if (stored === null) throw error;
      return { id: stored.id, flow: stored.flow, node: stored.node, envelope: stored.envelope, error: stored.error, attempts: stored.attempts, failedAt: stored.createdAt };
    }
  }

  /** A trace as the journal has it (running or finished), or null. Needs a store. */
  getTrace(flow: string, traceId: string): Promise<StoredTrace | null> {
    return this.withStore('getTrace', (store) => store.getTrace(flow, traceId));
  }

  /** Traces from the journal, newest first, by flow, tenant, status and time, a page at a time. Needs a store. */
  listTraces(query: TraceQuery = {}): Promise<TracePage> {
    return this.withStore('listTraces', (store) => store.listTraces(query));
  }

  /**
   * The journaled events of a trace, in order (which ones: the `journalEvents` option; the
   * lifecycle events `trace_start` and `trace_success` / `trace_failed` always, from the trace
   * record). Needs a store.
   */
  loadHistory(traceId: string): Promise<readonly StoredEvent[]> {
    return this.withStore('loadHistory', (store) => traceHistory(store, traceId));
  }

  private withStore<T>(operation: string, fn: (store: Store) => Promise<T>): Promise<T> {
    if (this.store === null) {
      return Promise.reject(
        new RoostError('ROOST_ERR_INVALID_STATE', `${operation}: this runtime has no journal (set the store option)`, {
          field: 'store',
          expected: 'a runtime created with a store',
        }),
      );
    }
    return fn(this.store);
  }

  /**
   * Runs `fn` on exactly one process of the fleet at a time: every process calls this with the
   * same `name`; the one holding the lease in the store runs `fn(ctx)` until `ctx.signal` aborts,
   * and writes through `ctx.putValue` / `ctx.commit` are fenced by its term's token. Needs a
   * store and a running runtime; stopped (the lease released) on close. See src/fleet/singleton.ts.
   */
  singleton(name: string, fn: SingletonFn, options?: SingletonOptions): SingletonHandle {
    this.assertRunning('singleton'); // a worker of the fleet may hold a singleton duty too
    return this.singletons.start(name, fn, options);
  }

  /** Subscribes to every event; returns the unsubscribe function. */
  on(listener: EventListener): () => void {
    if (typeof listener !== 'function') throw invalidOption('listener', 'a function', listener);
    this.listeners = [...this.listeners, listener];
    this.listening = true;
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener);
      this.listening = this.listeners.length > 0;
    };
  }

  /**
   * Traces a drain's timeout cut off (0 until one does): with a journal they stay unfinished in
   * it and resume on the next start; without one they were cancelled.
   */
  get cutOffTraces(): number {
    return this.cutOffValue;
  }

  /** Traces admitted and not finished, across flows (what `limits.maxInFlightTraces` caps). */
  get inFlightTraces(): number {
    return this.inFlight;
  }

  stats(): RuntimeStats {
    let quarantined = 0;
    for (const a of this.agents.values()) if (a.quarantined) quarantined++;
    return {
      state: this.stateValue,
      inFlightTraces: this.inFlight,
      reservedRuns: this.reservedRuns,
      agents: this.agents.size,
      quarantinedAgents: quarantined,
      deadLetters: this.deadLetters.size,
      timers: this.timers.size,
    };
  }

  // ---- lifecycle --------------------------------------------------------------------------------

  private transition(from: readonly RuntimeState[], to: RuntimeState, operation: string): void {
    if (!from.includes(this.stateValue)) {
      throw new RoostError('ROOST_ERR_INVALID_STATE', `${operation}: the runtime is ${this.stateValue}; expected ${from.join(' or ')}`, {
        field: 'runtime.state',
        expected: from.join(' or '),
        received: this.stateValue,
      });
    }
    this.stateValue = to;
  }

  /** Starts the runtime: flows accept tasks from now on. */
  start(): Promise<void> {
    try {
      this.transition(['created'], 'starting', 'start');
    } catch (error) {
      return Promise.reject(ensureError(error));
    }
    return this.startUp();
  }

  private async startUp(): Promise<void> {
    try {
      for (const agent of this.agents.values()) agent.setLifecycle('ready');
      // The fleet first: traces resumed below may send their remote runs at once.
      if (this.fleet !== null) await this.fleet.start();
      // A worker that exposes 2389 agents owns the traces their tasks start (its own only).
      const owns = this.fleet === null || this.fleet.options.role === 'owner' || (this.protocol2389?.options.agents.length ?? 0) > 0;
      // Resume what the journal holds before taking new work: unfinished traces go on where
      // their last commit left them.
      if (this.store !== null) {
        // Opened (migrated) first, outside storeTimeoutMs: that bounds each operation, and the
        // first would otherwise carry the migrations (and any other process's, under their lock).
        await this.store.ready();
        // The newest dead letters come back into the in-memory queue; older ones stay
        // replayable by id from the store.
        const letters = await this.store.listDeadLetters({ limit: Math.min(1000, this.options.deadLetters.max) });
        for (const d of [...letters].reverse()) {
          this.deadLetters.restore({ id: d.id, flow: d.flow, node: d.node, envelope: d.envelope, error: d.error, attempts: d.attempts, failedAt: d.createdAt });
        }
        // A worker of a fleet runs nodes for others: it neither resumes nor takes over traces.
        if (owns && this.store.shared) await this.startOwnership(this.store);
        else if (owns) for (const flow of this.flows.values()) await flow.resume(this.store);
        await this.prune();
        await this.sizeCheck;
        this.pruneTimer = setInterval(() => {
          this.prune().catch((error: unknown) => this.logger.error({ err: ensureError(error) }, 'journal prune failed'));
        }, this.options.retention.intervalMs);
        this.pruneTimer.unref();
        this.stateValue = 'running'; // replays need a running runtime
        await this.serveRequests();
        this.requestsTimer = setInterval(() => void this.serveRequests(), 1_000);
        this.requestsTimer.unref();
      }
      this.stateValue = 'running';
      // Last: 2389 agents say they are available only once the runtime takes their tasks.
      await this.protocol2389?.start();
    } catch (error) {
      this.stateValue = 'failed';
      await this.protocol2389?.close(0).catch(() => {});
      await this.fleet?.close(0).catch(() => {});
      throw ensureError(error);
    }
  }

  // ---- ownership of traces in a shared store ------------------------------------------------------

  /**
   * With a store several processes share: hold this process's owner lease, resume the traces
   * it owns, and take over those of owners whose lease lapsed (or that have none). Then, every
   * third of the lease: renew it, and take over again. A claim moves each trace to exactly one
   * process, so every unfinished trace is resumed by one of them.
   */
  private async startOwnership(store: Store): Promise<void> {
    await this.renewOwnerLease(store);
    await this.takeOver(store, true);
    const every = Math.max(10, Math.floor(this.options.ownerLeaseMs / 3));
    this.ownershipTimer = setInterval(() => {
      if (this.ownershipBusy || this.stateValue !== 'running') return;
      this.ownershipBusy = true;
      this.renewOwnerLease(store)
        .then(() => this.takeOver(store, false))
        .catch((error: unknown) => this.logger.error({ err: ensureError(error) }, 'owner lease renewal or takeover failed'))
        .finally(() => {
          this.ownershipBusy = false;
        });
    }, every);
    this.ownershipTimer.unref();
  }

  private ownershipTimer: ReturnType<typeof setInterval> | null = null;
  private ownershipBusy = false;
  private ownerLeaseToken = 0;

  private get ownerLeaseName(): string {
    return ownerLeaseName(this.options.owner);
  }

  private async renewOwnerLease(store: Store): Promise<void> {
    const lease = await store.acquireLease(this.ownerLeaseName, this.options.owner, this.options.ownerLeaseMs, Date.now());
    if (lease === null) throw new RoostError('ROOST_ERR_INVALID_STATE', `another process holds the owner lease of ${this.options.owner}: owners must be unique`, { field: 'owner' });
    this.ownerLeaseToken = lease.token;
  }

  /** Claims traces of lapsed (or no) owners and resumes them; on start, this process's own too. */
  private async takeOver(store: Store, starting: boolean): Promise<void> {
    const me = this.options.owner;
    for (const flow of this.flows.values()) {
      const claimed = new Set<string>();
      for (const owner of await store.runningOwners(flow.name)) {
        if (owner === me) continue;
        if (this.fleet?.options.role === 'worker') continue; // a worker resumes its own traces only
        if (owner !== null) {
          const lease = await store.getLease(ownerLeaseName(owner));
          if (lease !== null && lease.until > Date.now()) continue; // alive
        }
        for (const id of await store.claimTraces(flow.name, owner, me)) claimed.add(id);
      }
      if (starting) {
        // Our own unfinished traces (a process restarted under the same owner name) and the claimed ones.
        for (const t of await store.runningTraces(flow.name, me)) if (t.owner === me) claimed.add(t.traceId);
      }
      if (claimed.size > 0) {
        const n = await flow.resume(store, claimed);
        if (!starting) this.logger.info({ flow: flow.name, traces: n }, 'took over the unfinished traces of a lapsed owner');
      }
    }
  }

  private async stopOwnership(store: Store): Promise<void> {
    if (this.ownershipTimer === null) return;
    clearInterval(this.ownershipTimer);
    this.ownershipTimer = null;
    // Let the others take over what this process leaves unfinished at once, not after the lease.
    await store.releaseLease(this.ownerLeaseName, this.options.owner, this.ownerLeaseToken).catch(() => {});
  }

  /**
   * Stops admitting tasks and waits for the traces in flight to finish (or, after `timeoutMs`,
   * cancels them); then the runtime is stopped. Repeat calls return the same promise.
   */
  drain(options: DrainOptions = {}): Promise<void> {
    if (this.draining !== null) return this.draining;
    try {
      const o = checkObject('drain.options', options, ['timeoutMs']);
      if (o['timeoutMs'] !== undefined) optInt('drain.options', o, 'timeoutMs', 0, 2_147_483_647, 0);
      this.transition(['running'], 'draining', 'drain');
    } catch (error) {
      return Promise.reject(ensureError(error));
    }
    for (const agent of this.agents.values()) agent.setLifecycle('draining');
    this.fleet?.draining();
    // 2389 agents take no more tasks and say `unavailable`; the answers of the traces draining still go out.
    void this.protocol2389?.stopIntake();
    this.draining = this.waitIdle(options.timeoutMs).then(() => this.shutdown());
    return this.draining;
  }

  private async waitIdle(timeoutMs: number | undefined): Promise<void> {
    if (this.inFlight === 0) return;
    const idle = new Promise<void>((resolve) => this.idle.push(resolve));
    if (timeoutMs === undefined) return idle;
    await this.cancelAfter(idle, timeoutMs);
  }

  /** Waits for `done`, or after `timeoutMs` cancels every running trace (which ends the wait). */
  private async cancelAfter(done: Promise<void>, timeoutMs: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), timeoutMs);
    });
    const late = await Promise.race([done.then(() => false), timedOut]);
    clearTimeout(timer);
    if (late) {
      this.cutOffValue = this.inFlight;
      this.logger.warn(
        { inFlight: this.inFlight },
        this.journal !== null
          ? 'drain timed out; the traces still running stop here and resume from the journal on the next start'
          : 'drain timed out; cancelling the traces still running',
      );
      this.suspendFleet();
      for (const flow of this.flows.values()) flow.stop(this.journal !== null);
    }
  }

  /**
   * With a journal, traces stopped by a close stay unfinished in it: the fleet's workers are not
   * told to abort them, so the run a worker holds can answer the next owner that resumes them.
   */
  private suspendFleet(): void {
    if (this.journal !== null) this.fleet?.suspend();
  }

  private shutdown(): void {
    this.suspendFleet();
    for (const flow of this.flows.values()) flow.stop(this.journal !== null);
    this.timers.close();
    for (const agent of this.agents.values()) agent.setLifecycle('stopped');
    this.stateValue = 'stopped';
  }

  /**
   * Closes the runtime: a graceful drain (up to `drainTimeoutMs`) when running, then everything
   * is released. Repeat calls return the same promise; it never rejects.
   */
  close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    this.closing = (async () => {
      // Singleton duties first: their leases go to other processes at once, before the drain.
      await this.singletons.stopAll().catch((error: unknown) => this.logger.error({ err: ensureError(error) }, 'stopping singletons failed during close'));
      try {
        if (this.stateValue === 'running') await this.drain({ timeoutMs: this.options.drainTimeoutMs });
        else if (this.draining !== null) {
          // A drain() without a timeout may wait for ever; close() bounds it by drainTimeoutMs.
          await this.cancelAfter(this.draining, this.options.drainTimeoutMs);
          await this.draining;
        }
      } catch (error) {
        this.logger.error({ err: ensureError(error) }, 'drain failed during close');
      }
      try {
        if (this.stateValue !== 'stopped') this.shutdown();
      } catch (error) {
        this.logger.error({ err: ensureError(error) }, 'shutdown failed during close');
        this.stateValue = 'stopped';
      }
      if (this.protocol2389 !== null) {
        await this.protocol2389.close(this.options.drainTimeoutMs).catch((error: unknown) => this.logger.error({ err: ensureError(error) }, 'closing the 2389 protocol failed during close'));
      }
      if (this.fleet !== null) {
        await this.fleet.close(this.options.drainTimeoutMs).catch((error: unknown) => this.logger.error({ err: ensureError(error) }, 'leaving the fleet failed during close'));
      }
      if (this.journal !== null) {
        if (this.pruneTimer !== null) clearInterval(this.pruneTimer);
        if (this.requestsTimer !== null) clearInterval(this.requestsTimer);
        if (!(await this.journal.flush(this.options.drainTimeoutMs))) {
          this.logger.error('journal writes could not be committed before close (the store is unavailable): unfinished traces resume from the last commit');
          this.journal.stop();
        }
        await this.stopOwnership(this.store!);
        if (this.ownsStore) await this.store!.close().catch((error: unknown) => this.logger.error({ err: ensureError(error) }, 'store close failed'));
      }
    })();
    return this.closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
