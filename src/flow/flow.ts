/**
 * A running flow: admission (`emit`), results (`fetch`), trace streams, cancellation and the end
 * of every trace. Built by `runtime.flow(…)`.
 */
import type { Envelope } from '../envelope/envelope.js';
import { toJsonWithin } from '../envelope/codec.js';
import { fitsJson } from '../envelope/json-size.js';
import { DEFAULT_TENANT } from '../envelope/names.js';
import { checkEmitOptions } from './emit-options.js';
import { isUuidV7, lastIdBits, lastUuidv7Low32, lastUuidv7Time, uuidv7, uuidv7Time } from '../envelope/uuid.js';
import { RoostError, ensureError, invalidOption } from '../errors.js';
import { clockNow } from '../resilience/clock.js';
import type { Agent } from '../runtime/agent.js';
import type { DeadLetter } from '../runtime/dead-letters.js';
import { LIFECYCLE_EVENTS } from '../store/history.js';
import type { Journal } from '../store/journal.js';
import type { Store } from '../store/store.js';
import { Edge, type Msg, type RunnerFlow, type Source } from './edge.js';
import { eventError, type NodeEvent, type NodeEventType, type TraceEvent, type TraceEventType } from './events.js';
import { buildGraph } from './graph.js';
import type { Handler } from './handler.js';
import type { FlowHost, Outcome } from './host.js';
import type { Adjacency, Node, SubflowTarget } from './node.js';
import { NodeRunner } from './node-runner.js';
import { resolvePolicy } from './policy.js';
import { Trace } from './trace.js';
import { TraceIndex } from './trace-index.js';
import { TraceStream, type TraceEndItem } from './trace-stream.js';
import type { OverflowPolicy } from './bounded-queue.js';
import type { EdgeOptions } from './node.js';

/** What a user passes to `runtime.flow(…)`. */
export interface FlowOptions {
  /** Unique in the runtime; `[A-Za-z0-9._-]{1,64}`. */
  readonly name: string;
  /** The graph: `[a.to(b, c), b.to(d)]`. */
  readonly edges: readonly Adjacency[];
  /** The first node (default: the one node without incoming edges). */
  readonly ingress?: Node;
  /** Default capacity of every edge (default 64). */
  readonly queueCapacity?: number;
  /** Default overflow policy of every edge (default `wait`). */
  readonly overflow?: OverflowPolicy;
  /** Queue settings of the edge into the ingress node (default: the flow's defaults). */
  readonly ingressQueue?: EdgeOptions;
  /** Allow cycles in the graph (default false); the hop budget then bounds each trace. */
  readonly allowCycles?: boolean;
  /** Most edges one envelope's lineage may cross (default 64): `ROOST_ERR_HOP_BUDGET` beyond. */
  readonly maxHops?: number;
}

/** Options of `flow.emit`. */
export interface EmitOptions {
  /** The trace id to use (a UUIDv7; default: a new one). */
  readonly traceId?: string;
  /** Tenant name (default `default`). */
  readonly tenant?: string;
  /** Absolute deadline, epoch ms. */
  readonly deadline?: number;
  readonly headers?: Readonly<Record<string, string>>;
  /** The caller's key for this task: a repeat within the idempotency window returns the first trace. */
  readonly idempotencyKey?: string;
  /**
   * A digest of the request the key came with (an HTTP body): a repeat of the key with another
   * fingerprint fails with `ROOST_ERR_IDEMPOTENCY_CONFLICT` instead of returning the first trace.
   */
  readonly idempotencyFingerprint?: string;
  /** Stops waiting for queue space (under the `wait` policy). */
  readonly signal?: AbortSignal;
}

/** What `emit` returns. */
export interface EmitResult {
  readonly traceId: string;
  /** True when the idempotency key matched an earlier emit and this is its trace. */
  readonly deduplicated: boolean;
}

/** @internal what a protocol adapter of this process (src/protocol2389) adds to an emit. */
export interface EmitExtra {
  /**
   * A note kept with the trace: journaled (as a checkpoint of the trace, pruned with it) in the
   * same commit as the trace's acceptance, so whichever process resumes the trace can read it.
   */
  readonly note?: { readonly key: string; readonly value: unknown };
  /** Admitted by the process itself (a worker of a fleet takes these too). */
  readonly internal?: boolean;
}

/** Counters of a flow. */
export interface FlowStats {
  readonly activeTraces: number;
  readonly queued: number;
  readonly running: number;
  readonly lateResults: number;
  /** Traces a join node is still collecting envelopes for. */
  readonly joinsWaiting: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly cancelled: number;
}

const EMPTY_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

/** A flow of a runtime; see the module comment. */
export class Flow implements RunnerFlow, SubflowTarget {
  readonly name: string;
  readonly maxHops: number;
  private readonly runners = new Map<string, NodeRunner>();
  private readonly ingressEdge: Edge;
  /** The runtime's journal, or null (no store). */
  readonly journal: Journal | null;
  /**
   * Running traces and finished ones kept for `fetch`, in one index: one insert and one delete per
   * trace. (Two cost twice the churn, and that churn is among the dearest things per message.)
   */
  private readonly traces = new TraceIndex<Trace>();
  /** Finished traces, oldest first: evicted from the front by age (`results.ttlMs`) and count (`results.max`). */
  private finished: Trace[] = [];
  private finishedHead = 0;
  /** Finished traces whose result is held unfetched (what `results.max` caps). */
  private held = 0;
  private running = 0;
  /**
   * Creation time (from the UUIDv7 trace id) of the newest result evicted so far: a trace id that
   * is neither running nor stored and is no newer than this had its result expire. A watermark
   * instead of a set of evicted ids, which cost two more map writes per trace.
   */
  private expiredUpTo = -1;
  private stopped = false;
  /** Closing with a journal: traces ended now are left unfinished in the journal. */
  private suspending = false;
  private lateResults = 0;
  private counts = { succeeded: 0, failed: 0, cancelled: 0 };

  /** @internal made by `runtime.flow(…)`, which checks the name. */
  constructor(
    readonly host: FlowHost,
    options: FlowOptions,
    fields: { capacity: number; overflow: OverflowPolicy; allowCycles: boolean; maxHops: number },
  ) {
    this.name = options.name;
    this.maxHops = fields.maxHops;
    this.journal = host.journal;
    const graph = buildGraph(this.name, options.edges, {
      capacity: fields.capacity,
      overflow: fields.overflow,
      allowCycles: fields.allowCycles,
      ingress: options.ingress,
    });
    let concurrency = 0;
    const prepared = graph.nodes.map((n) => {
      const agent = n.agent;
      const resolved = resolvePolicy(`flow(${this.name}).node(${n.name}).policy`, n.policy, agent?.policy);
      // A node the fleet's workers run: its handler sends the envelope to them, and its
      // concurrency is the envelopes out with them at once (each worker has the node's own).
      const remote = n.kind === 'handler' ? host.remoteNode(this.name, n.name, resolved.timeoutMs) : null;
      // Its timeout is the worker's (from when the run starts there, not while it waits for a
      // slot); the deadline stays the owner's too.
      const policy = remote === null ? resolved : { ...resolved, concurrency: remote.concurrency, timeoutMs: null };
      // A remote node's runs are the workers' (each counts its own): they reserve nothing here.
      concurrency += n.kind === 'join' || remote !== null ? 0 : policy.concurrency;
      return { n, agent, policy, remote };
    });
    host.reserveRuns(this.name, concurrency);
    for (const { n, agent, policy, remote } of prepared) {
      const registered = agent === null ? null : host.resolveAgent(agent);
      const handler = remote?.handler ?? this.handlerOf(n, registered?.handler ?? null);
      this.runners.set(n.name, new NodeRunner(this, n, registered, handler, policy, remote !== null));
    }
    for (const e of graph.edges) {
      const from = this.runners.get(e.from.name)!;
      const to = this.runners.get(e.to.name)!;
      const edge = new Edge(from, to, e.capacity, e.overflow);
      from.outEdges.push(edge);
      from.outByName.set(to.name, edge);
      to.inEdges.push(edge);
    }
    const ingress = this.runners.get(graph.ingress.name)!;
    const ingressOptions = options.ingressQueue ?? {};
    this.ingressEdge = new Edge(null, ingress, ingressOptions.capacity ?? fields.capacity, ingressOptions.overflow ?? fields.overflow);
    ingress.inEdges.unshift(this.ingressEdge);
    for (const runner of this.runners.values()) {
      if (runner.node.kind === 'join') runner.joinK = runner.node.join!.k ?? Math.max(1, runner.inEdges.length);
    }
  }

  private handlerOf(n: Node, agentHandler: Handler | null): Handler | null {
    if (n.kind === 'handler') return agentHandler;
    if (n.kind === 'router') {
      const select = n.select!;
      return (env, ctx) => {
        const target = select(env);
        if (target === null) {
          throw new RoostError('ROOST_ERR_NO_ROUTE', `router ${n.name}: no route for this envelope`, { details: { node: n.name } });
        }
        return ctx.emit(env.payload, { to: target }).then(() => undefined);
      };
    }
    if (n.kind === 'subflow') {
      const child = n.subflow!;
      return async (env, ctx) => {
        const signal = ctx.signal;
        const options: { tenant: string; headers: Record<string, string>; deadline?: number; signal: AbortSignal } = {
          tenant: env.tenant,
          headers: { ...env.headers, 'roost-parent-trace': env.traceId },
          signal, // also stops a wait for room at the child's ingress (cancelling the child)
        };
        if (env.deadline !== null) options.deadline = env.deadline;
        const { traceId } = await child.emit(env.payload, options);
        const onAbort = (): void => void child.cancel(traceId);
        // A cancel or timeout while the emit was under way: the listener below would miss it.
        if (signal.aborted) {
          onAbort();
          throw signal.reason;
        }
        signal.addEventListener('abort', onAbort, { once: true });
        try {
          return await child.fetch(traceId);
        } finally {
          signal.removeEventListener('abort', onAbort);
        }
      };
    }
    return null;
  }

  // ---- admission ------------------------------------------------------------------------------

  /**
   * Accepts a task: validates it, applies the idempotency window and the limits, and queues it at
   * the ingress (waiting for room under the `wait` policy). Resolves with the trace id once the
   * task is queued; a repeat of an idempotency key resolves with the first trace's id.
   */
  emit(payload: unknown, options: EmitOptions = {}, extra?: EmitExtra): Promise<EmitResult> {
    // Not an async function: when the task is queued at once (the usual case) this costs one
    // resolved promise instead of an async function's machinery.
    try {
      const admitted = this.admit(payload, options, false, extra);
      return admitted instanceof Promise ? admitted : Promise.resolve(admitted);
    } catch (error) {
      return Promise.reject(ensureError(error));
    }
  }

  private admit(payload: unknown, options: EmitOptions, keyLookedUp = false, extra?: EmitExtra): EmitResult | Promise<EmitResult> {
    const host = this.host;
    host.assertAccepting('emit', extra?.internal === true);
    if (this.stopped) throw stoppedError(this.name);
    if (this.journal !== null) host.assertStoreRoom();
    if (typeof options !== 'object' || options === null) throw invalidOption('emit.options', 'an object', options);
    checkEmitOptions(options as Record<string, unknown>);
    if (!fitsPayload(payload, host.maxPayloadBytes)) toJsonWithin('payload', payload, host.maxPayloadBytes);
    const now = clockNow();
    const tenant = options.tenant ?? DEFAULT_TENANT;
    const key = options.idempotencyKey;
    const window = host.idempotency;
    /** The tenant the key is windowed under, or null when the window does not apply. */
    let keyTenant: string | null = null;
    const fingerprint = options.idempotencyFingerprint;
    if (key !== undefined && window !== null) {
      keyTenant = tenant;
      const first = window.find(this.name, tenant, key, now);
      if (first >= 0) return repeat(window.traceIdAt(first), window.fingerprintAt(first), key, fingerprint);
      // Not in memory: with a journal the window outlives the process, so ask the store first.
      if (this.journal !== null && !keyLookedUp) return this.admitAfterKeyLookup(this.journal, payload, options, tenant, key, now, extra);
    }
    const traceId = options.traceId ?? uuidv7(now);
    // An id made here: its index hash and its bits (for derived ids) are read off the generator.
    const made = options.traceId === undefined ? lastUuidv7Low32() : -1;
    const bitsA = made >= 0 ? lastIdBits.a : -1;
    const bitsB = lastIdBits.b;
    const bitsC = lastIdBits.c;
    if (options.traceId !== undefined && this.traces.has(traceId)) {
      throw new RoostError('ROOST_ERR_ALREADY_EXISTS', `flow ${this.name} already has a trace ${traceId}`, { field: 'emit.options.traceId' });
    }
    const ingress = this.ingressEdge.to as NodeRunner;
    const env: Envelope = {
      v: 1,
      id: traceId, // the first envelope of a trace has its id: a task emitted again gets the same one
      traceId,
      parentId: null,
      tenant,
      from: 'ingress',
      to: ingress.name,
      kind: 'task',
      payload,
      headers: options.headers ?? EMPTY_HEADERS,
      deadline: options.deadline ?? null,
      createdAt: now,
      attempt: 1,
      idempotencyKey: key ?? null,
    };
    if (ingress.agent?.quarantined && ingress.agent.quarantineOptions.mode === 'reject') {
      throw new RoostError('ROOST_ERR_QUARANTINED', `agent ${ingress.agent.name} is quarantined`, { details: { agent: ingress.agent.name } });
    }
    const edge = this.ingressEdge;
    if (edge.overflow === 'reject' && edge.queue.size >= edge.queue.capacity) throw queueFull(this.name, ingress.name, edge.queue.capacity);
    host.traceStarted();
    const trace = new Trace(traceId, tenant, now, env.deadline, options.traceId === undefined ? lastUuidv7Time() : uuidv7Time(traceId));
    // An id made here is new (no entry can have it) and its hash is known without reading it.
    if (made >= 0) this.traces.add(trace, made, true);
    else this.traces.add(trace);
    this.running++;
    if (env.deadline !== null) this.watchDeadline(trace, env.deadline);
    // A trace id made here is kept as its time and bits (no 36-character copy per keyed emit).
    if (keyTenant !== null) window!.set(this.name, keyTenant, key!, traceId, fingerprint, now, made >= 0 ? trace.idTime : -1, bitsA, bitsB, bitsC);
    const journal = this.journal;
    if (journal !== null) {
      // Written before the envelope is queued: a node that consumes it in this same tick
      // writes its consumption after its acceptance.
      journal.trace({
        flow: this.name,
        traceId,
        tenant,
        status: 'running',
        createdAt: now,
        updatedAt: now,
        deadline: env.deadline,
        idempotencyKey: env.idempotencyKey,
        idempotencyFingerprint: key === undefined ? null : (fingerprint ?? null),
        owner: host.owner,
      }, trace);
      // In the same commit as the trace: whoever resumes the trace finds the note with it.
      if (extra?.note !== undefined) journal.checkpoint({ key: extra.note.key, traceId, value: extra.note.value, ts: now });
    }
    const msg = edge.to.prepare(env, trace, 0) as Source; // a run: every node's prepare() makes one
    if (journal !== null && bitsA >= 0) {
      msg.idA = bitsA;
      msg.idB = bitsB;
      msg.idC = bitsC;
    }
    journal?.accept({ flow: this.name, node: ingress.name, envelope: env, hops: 0 }, msg, trace);
    this.traceEvent('trace_start', trace, 0, null, now);
    const wait = this.enqueue(edge, msg, now);
    const result: EmitResult = { traceId, deduplicated: false };
    if (journal !== null) return this.acknowledge(journal, wait, result, options.signal, keyTenant, key);
    if (wait === undefined) return result;
    return this.waitForRoom(wait, result, options.signal, keyTenant, key);
  }

  private async admitAfterKeyLookup(
    journal: Journal,
    payload: unknown,
    options: EmitOptions,
    tenant: string,
    key: string,
    now: number,
    extra: EmitExtra | undefined,
  ): Promise<EmitResult> {
    const window = this.host.idempotency!;
    const found = await journal.store.findIdempotent(this.name, tenant, key, now - window.ttlMs);
    if (found !== null) {
      const stored = found.fingerprint ?? undefined;
      window.set(this.name, tenant, key, found.traceId, stored, now);
      return repeat(found.traceId, stored, key, options.idempotencyFingerprint);
    }
    return this.admit(payload, options, true, extra); // checks the window again: a concurrent emit may have won
  }

  /** With a journal, `emit` resolves once the accepted task is committed (and queued). */
  private async acknowledge(
    journal: Journal,
    wait: Promise<void> | undefined,
    result: EmitResult,
    signal: AbortSignal | undefined,
    keyTenant: string | null,
    key: string | undefined,
  ): Promise<EmitResult> {
    const committed = journal.committed();
    if (wait !== undefined) await this.waitForRoom(wait, result, signal, keyTenant, key);
    try {
      await committed;
    } catch (error) {
      // Not durable, so not accepted: the caller is told, and the trace does not go on.
      void this.cancel(result.traceId);
      if (keyTenant !== null) this.host.idempotency?.delete(this.name, keyTenant, key!);
      throw error;
    }
    return result;
  }

  /** The ingress edge was full (`wait` policy): resolves once the task is queued. */
  private async waitForRoom(
    wait: Promise<void>,
    result: EmitResult,
    signal: AbortSignal | undefined,
    keyTenant: string | null,
    key: string | undefined,
  ): Promise<EmitResult> {
    const onAbort = (): void => void this.cancel(result.traceId);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await wait;
    } catch (error) {
      if (keyTenant !== null) this.host.idempotency!.delete(this.name, keyTenant, key!);
      throw error;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    return result;
  }

  /**
   * The result of a trace: waits while it runs, then resolves with its result or rejects with its
   * error (a `RoostError`). A result is delivered once: fetching it releases it (every fetch
   * waiting when the trace ends gets it). An unfetched result is kept until it expires
   * (`results.ttlMs`) or newer ones push it out (`results.max`). After that, or after it was
   * fetched, a fetch gets `ROOST_ERR_RESULT_EXPIRED`.
   */
  fetch(traceId: string): Promise<unknown> {
    const trace = this.lookup(traceId);
    if (trace === undefined) return Promise.reject(this.missing(traceId));
    if (trace.running) {
      return new Promise((resolve, reject) => trace.addFetcher(resolve, reject));
    }
    this.unhold(trace, clockNow());
    const outcome = (): Promise<unknown> => (trace.status === 'succeeded' ? Promise.resolve(trace.result()) : Promise.reject(trace.error!));
    // With a journal, a result is seen only once it is committed.
    return trace.durable === null ? outcome() : trace.durable.then(outcome);
  }

  /** Drops a finished trace from the map (fetched, expired or pushed out). */
  private forget(trace: Trace, now: number): void {
    // Only this trace: a caller may have started a new trace with the same id since.
    this.traces.delete(trace);
    // Capped at now (or the newest id made here): a caller's trace id from the future must not
    // make every unknown id look expired.
    const time = Math.min(trace.idTime, Math.max(now, lastUuidv7Time()));
    if (time > this.expiredUpTo) this.expiredUpTo = time;
  }

  /**
   * Ends `trace` at its deadline wherever its envelopes are: queued, parked behind a quarantined
   * agent, waiting for queue space or in a join. (A running handler's own timer aborts it at the
   * deadline too; a queued envelope is otherwise only checked when it is dequeued.)
   */
  private watchDeadline(trace: Trace, deadline: number): void {
    trace.more().expire = this.traceDeadlinePassed;
    // A millisecond after the runs' own deadline timers, so a running handler times out as
    // itself (node_timeout, node_failed, its agent's failure count) rather than being cancelled.
    this.host.timers.schedule(trace, deadline + 1);
  }

  private readonly traceDeadlinePassed = (trace: Trace): void => {
    if (!trace.running) return;
    this.failTrace(
      trace,
      new RoostError('ROOST_ERR_DEADLINE_EXCEEDED', `trace ${trace.id}: deadline passed before it finished`, {
        details: { deadline: trace.deadline },
      }),
    );
  };

  /** The outcome of a finished trace, or undefined while it runs or once it expired (never waits). */
  outcome(traceId: string): Outcome | undefined {
    const trace = this.lookup(traceId);
    if (trace === undefined || trace.running) return undefined;
    const error = trace.error;
    return {
      status: trace.status as Outcome['status'],
      result: trace.status === 'succeeded' ? trace.result() : null,
      error: error === null ? null : { code: error.code, message: error.message },
      errorValue: error,
      finishedAt: trace.finishedAt,
      traceCreatedAt: trace.idTime,
    };
  }

  /**
   * Drops a finished trace's held result without fetching it (a caller that delivered the result
   * another way). A running trace, or one not held, is left as it is.
   */
  dropResult(traceId: string): void {
    const trace = this.lookup(traceId);
    if (trace === undefined || trace.running) return;
    this.unhold(trace, clockNow());
  }

  /** A finished trace's result is no longer held: it is forgotten (later lookups find it expired). */
  private unhold(trace: Trace, now: number): void {
    if (trace.held) {
      trace.held = false;
      this.held--;
    }
    this.forget(trace, now);
  }

  /** Whether the trace is running in this process now (its end will be published here). */
  isRunning(traceId: string): boolean {
    return this.lookup(traceId)?.running === true;
  }

  /** A running trace, or a finished one still within `results.ttlMs`. */
  private lookup(traceId: string): Trace | undefined {
    const trace = this.traces.get(traceId);
    if (trace !== undefined && !trace.running && trace.finishedAt + this.host.results.ttlMs <= clockNow()) {
      this.sweep(clockNow());
      return undefined;
    }
    return trace;
  }

  /** Evicts finished traces past their TTL, then the oldest while over `results.max`. */
  private sweep(now: number): void {
    const finished = this.finished;
    const { ttlMs, max } = this.host.results;
    while (this.finishedHead < finished.length) {
      const trace = finished[this.finishedHead]!;
      if (trace.held) {
        if (this.held <= max && trace.finishedAt + ttlMs > now) break;
        this.unhold(trace, now);
      }
      finished[this.finishedHead] = undefined as unknown as Trace;
      this.finishedHead++;
    }
    if (this.finishedHead > 1024 && this.finishedHead * 2 > finished.length) {
      this.finished = finished.slice(this.finishedHead);
      this.finishedHead = 0;
    } else if (finished.length - this.finishedHead > 2 * this.held + 1024) {
      // Fetched traces pile up behind an older one still held: keep only the held ones (in
      // order), so memory follows what is held, not what went through since.
      this.finished = finished.slice(this.finishedHead).filter((t) => t.held);
      this.finishedHead = 0;
    }
  }

  private missing(traceId: string): RoostError {
    if (isUuidV7(traceId) && uuidv7Time(traceId) <= this.expiredUpTo) {
      return new RoostError('ROOST_ERR_RESULT_EXPIRED', `the result of trace ${traceId} is no longer held: it was fetched already, or expired unfetched`, {
        field: 'traceId',
        received: traceId,
      });
    }
    return new RoostError('ROOST_ERR_TRACE_NOT_FOUND', `flow ${this.name} has no trace ${traceId}`, { field: 'traceId', received: traceId });
  }

  /**
   * A stream of a running trace's chunks and events, ending with a `trace_end` item. Bounded: a
   * slow reader loses the oldest items and is told how many (`stream_gap`).
   */
  stream(traceId: string): TraceStream {
    const trace = this.lookup(traceId);
    if (trace === undefined) throw this.missing(traceId);
    const stream = new TraceStream(this.host.streamBuffer, (s) => {
      if (trace.streams) trace.streams = trace.streams.filter((x) => x !== s);
    });
    if (trace.running) {
      (trace.streams ??= []).push(stream);
      return stream;
    }
    stream.end({
      type: 'trace_end',
      ts: trace.finishedAt,
      traceId,
      status: trace.status as TraceEndItem['status'],
      result: trace.status === 'succeeded' ? trace.result() : null,
      error: trace.error,
    });
    return stream;
  }

  /**
   * Cancels a running trace: drops its queued envelopes, aborts its running handlers, and ends it
   * with `ROOST_ERR_TRACE_CANCELLED`. Resolves false when the trace is not running.
   */
  cancel(traceId: string): Promise<boolean> {
    const trace = this.traces.get(traceId);
    if (trace === undefined || !trace.running) return Promise.resolve(false);
    const reason = new RoostError('ROOST_ERR_TRACE_CANCELLED', `trace ${traceId} was cancelled`, { details: { traceId } });
    this.endTrace(trace, 'cancelled', reason, clockNow());
    return Promise.resolve(true);
  }

  /**
   * Refuses new tasks and cancels every running trace. With `suspend` (a runtime closing with a
   * journal) the cancellations are not journaled: the traces stay unfinished in the journal and
   * the next start resumes them.
   */
  stop(suspend = false): void {
    this.stopped = true;
    if (suspend) this.suspending = true;
    const running: string[] = [];
    for (const trace of this.traces.values()) if (trace.running) running.push(trace.id);
    for (const traceId of running) void this.cancel(traceId);
  }

  /**
   * @internal the runner of a handler node, for a worker of the fleet that runs it for the
   * trace's owner elsewhere; undefined when the flow has no such node.
   */
  workerNode(name: string): NodeRunner | undefined {
    const runner = this.runners.get(name);
    return runner !== undefined && runner.node.kind === 'handler' && !runner.remote ? runner : undefined;
  }

  /** @internal the agents of the nodes that run in this process (not remote), and their runs now and at most. */
  localRuns(): { agents: Agent[]; running: number; capacity: number } {
    const agents: Agent[] = [];
    let running = 0;
    let capacity = 0;
    for (const r of this.runners.values()) {
      if (r.remote || r.node.kind === 'join') continue;
      if (r.agent !== null) agents.push(r.agent);
      running += r.running;
      capacity += r.policy.concurrency;
    }
    return { agents, running, capacity };
  }

  /** Traces admitted and not finished. */
  get activeTraces(): number {
    return this.running;
  }

  stats(): FlowStats {
    let queued = 0;
    let running = 0;
    let joinsWaiting = 0;
    for (const runner of this.runners.values()) {
      queued += runner.depthIn();
      running += runner.running;
      joinsWaiting += runner.joinsWaiting;
    }
    return { activeTraces: this.running, queued, running, lateResults: this.lateResults, joinsWaiting, ...this.counts };
  }

  /** Each node's queue depth (envelopes on its incoming edges) and runs now, in graph order. */
  nodeStats(): { readonly node: string; readonly queued: number; readonly running: number }[] {
    const out: { node: string; queued: number; running: number }[] = [];
    for (const runner of this.runners.values()) out.push({ node: runner.name, queued: runner.depthIn(), running: runner.running });
    return out;
  }

  /** The names of the flow's nodes, in graph order. */
  nodeNames(): string[] {
    return [...this.runners.keys()];
  }

  /** @internal re-runs a dead letter as a new trace at the node that failed it. */
  async replay(letter: DeadLetter): Promise<string> {
    this.host.assertAccepting('replay');
    if (this.stopped) throw stoppedError(this.name);
    if (this.journal !== null) this.host.assertStoreRoom();
    const runner = this.runners.get(letter.node);
    if (runner === undefined || runner.inEdges.length === 0) {
      throw new RoostError('ROOST_ERR_FLOW_INVALID', `flow ${this.name} has no node ${letter.node} to replay at`, { field: 'deadLetter.node' });
    }
    const now = clockNow();
    const old = letter.envelope;
    const traceId = uuidv7(now);
    const env: Envelope = {
      v: 1,
      id: uuidv7(now),
      traceId,
      parentId: old.id,
      tenant: old.tenant,
      from: old.from,
      to: old.to,
      kind: old.kind,
      payload: old.payload,
      headers: { ...old.headers, 'roost-replay-of': old.traceId },
      deadline: null,
      createdAt: now,
      attempt: old.attempt + 1,
      idempotencyKey: old.idempotencyKey,
    };
    this.host.traceStarted();
    const trace = new Trace(traceId, env.tenant, now, null, uuidv7Time(traceId));
    this.traces.add(trace);
    this.running++;
    const journal = this.journal;
    if (journal !== null) {
      journal.trace({
        flow: this.name,
        traceId,
        tenant: env.tenant,
        status: 'running',
        createdAt: now,
        updatedAt: now,
        deadline: null,
        // Not the caller's key: the key goes on naming the first trace (and its fingerprint),
        // which a replay, being newer, would otherwise shadow after a restart.
        idempotencyKey: null,
        owner: this.host.owner,
      }, trace);
    }
    const edge = runner.inEdges[0]!;
    const msg = edge.to.prepare(env, trace, 0);
    journal?.accept({ flow: this.name, node: runner.name, envelope: env, hops: 0 }, msg, trace);
    this.traceEvent('trace_start', trace, 0, null, now);
    const wait = this.enqueue(edge, msg, now);
    if (wait !== undefined) await wait;
    if (journal !== null) await journal.committed();
    return traceId;
  }

  /**
   * @internal re-creates the unfinished traces of this flow that `store` holds (after a crash or
   * a restart; all of them, or those in `only`) and queues their pending envelopes again, in
   * acceptance order, at their nodes: work goes on from the last commit. Returns how many traces
   * were resumed.
   */
  async resume(store: Store, only?: ReadonlySet<string>): Promise<number> {
    const [all, pending, outputs] = await Promise.all([
      store.runningTraces(this.name),
      store.pendingEnvelopes(this.name),
      store.pendingOutputs(this.name),
    ]);
    const running = only === undefined ? all : all.filter((t) => only.has(t.traceId));
    if (running.length === 0) return 0;
    const now = clockNow();
    const resumed = new Map<string, Trace>();
    const window = this.host.idempotency;
    for (const r of running) {
      if (this.traces.has(r.traceId)) continue;
      const trace = new Trace(r.traceId, r.tenant, r.createdAt, r.deadline, isUuidV7(r.traceId) ? uuidv7Time(r.traceId) : r.createdAt);
      trace.pending = 0;
      this.traces.add(trace);
      this.running++;
      this.host.traceResumed(this.name, r.traceId, r.idempotencyKey);
      resumed.set(r.traceId, trace);
      if (r.idempotencyKey !== null && window !== null) {
        window.set(this.name, r.tenant, r.idempotencyKey, r.traceId, r.idempotencyFingerprint ?? undefined, now);
      }
    }
    for (const o of outputs) resumed.get(o.traceId)?.addOutput(o.value);
    const queue: { runner: NodeRunner; p: (typeof pending)[number]; trace: Trace }[] = [];
    for (const p of pending) {
      const trace = resumed.get(p.envelope.traceId);
      if (trace === undefined) continue;
      const runner = this.runners.get(p.node);
      if (runner === undefined || runner.inEdges.length === 0) {
        this.failTrace(
          trace,
          new RoostError('ROOST_ERR_FLOW_INVALID', `trace ${trace.id}: resumed at node ${p.node}, which flow ${this.name} no longer has`, {
            details: { node: p.node },
          }),
        );
        continue;
      }
      trace.pending++; // counted before any is queued, so an early finish cannot end the trace
      (trace.more().replayIds ??= new Set()).add(p.envelope.id);
      if (p.lease !== null && runner.remote) this.host.resumedLease(p.envelope.id, p.lease);
      queue.push({ runner, p, trace });
    }
    for (const trace of resumed.values()) {
      if (trace.deadline !== null) this.watchDeadline(trace, trace.deadline);
      if (trace.running && trace.pending === 0) {
        // Nothing left to run: its last envelope was consumed but its end was not committed.
        trace.pending = 1;
        this.release(trace);
      }
    }
    for (const { runner, p, trace } of queue) {
      if (!trace.running) continue;
      const from = p.envelope.from;
      const edge = runner.inEdges.find((e) => (e.from === null ? 'ingress' : e.from.name) === from) ?? runner.inEdges[0]!;
      const wait = this.enqueue(edge, runner.prepare(p.envelope, trace, p.hops, p.firstAttempt));
      wait?.catch(() => {}); // a resumed envelope waiting for room: its trace's end reports any failure
    }
    this.host.logger.info({ flow: this.name, traces: resumed.size, envelopes: queue.length }, 'resumed unfinished traces from the journal');
    return resumed.size;
  }

  // ---- RunnerFlow -----------------------------------------------------------------------------

  /** @internal */
  enqueue(edge: Edge, msg: Msg, now?: number): Promise<void> | undefined {
    const queue = edge.queue;
    if (queue.offer(msg)) {
      edge.to.pump(now);
      return undefined;
    }
    if (edge.overflow === 'wait') return queue.offerWait(msg);
    const runner = edge.to as NodeRunner;
    if (edge.overflow === 'reject') {
      msg.trace.pending--;
      const error = queueFull(this.name, runner.name, queue.capacity);
      this.nodeEvent('queue_overflow', runner, msg, clockNow(), null, error, null);
      this.deadLetter(runner.name, msg.env, error, 0);
      this.failTrace(msg.trace, error);
      return undefined;
    }
    const oldest = queue.evictOldest()!;
    oldest.trace.pending--;
    const error = new RoostError('ROOST_ERR_QUEUE_FULL', `edge to ${runner.name} in flow ${this.name} was full; the oldest envelope was dropped`, {
      details: { flow: this.name, node: runner.name, capacity: queue.capacity, policy: 'drop_oldest' },
    });
    this.nodeEvent('queue_overflow', runner, oldest, clockNow(), null, error, null);
    this.deadLetter(runner.name, oldest.env, error, 0);
    this.failTrace(oldest.trace, error);
    if (msg.trace.running) {
      queue.offer(msg);
      edge.to.pump();
    } else {
      msg.trace.pending--;
    }
    return undefined;
  }

  /** @internal an envelope of `trace` is done (consumed, failed or sent on). */
  release(trace: Trace, now?: number): void {
    if (--trace.pending === 0 && trace.running) this.endTrace(trace, 'succeeded', null, now ?? clockNow());
  }

  /** @internal */
  failTrace(trace: Trace, error: RoostError): void {
    this.endTrace(trace, 'failed', error, clockNow());
  }

  /** @internal */
  deadLetter(node: string, env: Envelope, error: RoostError, attempts: number): void {
    const letter = this.host.deadLetters.add(this.name, node, env, eventError(error), attempts, clockNow());
    this.journal?.deadLetter({
      id: letter.id,
      flow: this.name,
      node,
      traceId: env.traceId,
      tenant: env.tenant,
      envelope: env,
      error: letter.error,
      attempts,
      createdAt: letter.failedAt,
    });
  }

  /** @internal an output of `trace` (an egress value or `ctx.reply`), journaled for resume. */
  output(trace: Trace, value: unknown): void {
    trace.addOutput(value);
    this.journal?.output({ flow: this.name, traceId: trace.id, value }, trace);
  }

  /** @internal */
  lateResult(): void {
    this.lateResults++;
  }

  /** @internal */
  chunk(trace: Trace, node: string, data: unknown): void {
    const streams = trace.streams;
    if (streams === null) return;
    const item = { type: 'chunk' as const, ts: clockNow(), traceId: trace.id, node, data };
    for (const s of streams) s.push(item);
  }

  /** @internal */
  nodeEvent(
    type: NodeEventType,
    runner: NodeRunner,
    src: Msg,
    now: number,
    latencyMs: number | null,
    error: Error | null,
    delayMs: number | null,
  ): void {
    const trace = src.trace;
    const journaled = this.journal !== null && !this.suspending && journalsEvent(this.host.journalEvents, type);
    if (!this.host.listening && trace.streams === null && !journaled) return;
    const event: NodeEvent = {
      type,
      ts: now,
      flow: this.name,
      node: runner.name,
      traceId: trace.id,
      tenant: trace.tenant,
      envelopeId: src.env.id,
      attempt: src.env.attempt,
      firstAttempt: src.firstAttempt,
      latencyMs,
      queueDepthIn: runner.depthIn(),
      queueDepthOut: runner.depthOut(),
      tracePending: trace.pending,
      error: error === null ? null : eventError(error),
      delayMs,
    };
    if (journaled) this.journal.event({ traceId: trace.id, type, ts: now, event: event as unknown as Record<string, unknown> });
    this.host.publish(event);
    if (trace.streams !== null) for (const s of trace.streams) s.push(event);
  }

  private traceEvent(type: TraceEventType, trace: Trace, count: number, error: RoostError | null, now: number): void {
    const journaled = this.journal !== null && !this.suspending && journalsEvent(this.host.journalEvents, type);
    if (!this.host.listening && trace.streams === null && !journaled) return;
    const event: TraceEvent = {
      type,
      ts: now,
      flow: this.name,
      traceId: trace.id,
      tenant: trace.tenant,
      elapsedMs: now - trace.createdAt,
      count,
      error: error === null ? null : eventError(error),
    };
    if (journaled) this.journal.event({ traceId: trace.id, type, ts: now, event: event as unknown as Record<string, unknown> });
    this.host.publish(event);
    if (trace.streams !== null) for (const s of trace.streams) s.push(event);
  }

  /** Ends a trace: nothing of it stays queued or running; fetchers and streams get the outcome. */
  private endTrace(trace: Trace, status: 'succeeded' | 'failed' | 'cancelled', error: RoostError | null, now: number): void {
    if (!trace.running) return;
    trace.status = status;
    trace.error = error;
    // Finished from here on, before any event goes out: a listener that looks the trace up (a
    // stream's end) must find it finished, not expired (a finishedAt of 0 reads as expired).
    trace.finishedAt = now;
    if (trace.timerIndex >= 0) this.host.timers.remove(trace);
    if (status !== 'succeeded') {
      const reason = error!;
      if (status === 'cancelled') this.traceEvent('trace_cancel_start', trace, 0, null, now);
      let dropped = 0;
      for (const runner of this.runners.values()) dropped += runner.dropQueued(trace, reason);
      if (status === 'cancelled') this.traceEvent('trace_cancel_drop', trace, dropped, null, now);
      const runs = trace.currentRuns();
      for (const run of runs) run.cancel(reason);
      if (status === 'cancelled') this.traceEvent('trace_cancel_finish', trace, runs.length, null, now);
    }
    const cleanups = trace.extra === null ? null : trace.extra.cleanups;
    if (cleanups !== null) {
      trace.extra!.cleanups = null;
      for (const cleanup of cleanups) cleanup();
    }
    this.running--;
    if (status === 'succeeded') this.counts.succeeded++;
    else if (status === 'failed') this.counts.failed++;
    else this.counts.cancelled++;
    const result = status === 'succeeded' ? trace.result() : null;
    const journal = this.suspending ? null : this.journal;
    if (journal !== null) {
      journal.trace({
        flow: this.name,
        traceId: trace.id,
        tenant: trace.tenant,
        status,
        createdAt: trace.createdAt,
        updatedAt: now,
        deadline: trace.deadline,
        idempotencyKey: null,
        result,
        error: error === null ? null : eventError(error),
      }, trace);
      journal.ended(this.name, trace.id, trace);
      trace.durable = journal.committed();
    }
    const fetched = trace.fetched;
    if (fetched) {
      this.forget(trace, now); // delivered to the fetches waiting below: nothing to keep
    } else {
      trace.held = true;
      this.held++;
      this.finished.push(trace);
    }
    this.sweep(now);
    if (status === 'succeeded') this.traceEvent('trace_success', trace, 0, null, now);
    else if (status === 'failed') this.traceEvent('trace_failed', trace, 0, error, now);
    if (fetched) {
      const ok = status === 'succeeded';
      if (trace.durable === null) trace.settleFetchers(ok, ok ? result : error);
      else
        trace.durable.then(
          () => trace.settleFetchers(ok, ok ? result : error),
          (storeError: unknown) => trace.settleFetchers(false, storeError),
        );
    }
    if (trace.streams !== null) {
      const end: TraceEndItem = { type: 'trace_end', ts: now, traceId: trace.id, status, result, error };
      const streams = trace.streams;
      trace.streams = null;
      for (const s of streams) s.end(end);
    }
    this.host.traceEnded();
  }
}

/**
 * Events that change a trace's state: what `journalEvents: 'state'` keeps. The lifecycle events
 * (`trace_start`, `trace_success`, `trace_failed`) are state too, but the trace record holds
 * them: history derives them from it (store/history.ts), so they are never stored twice.
 */
const STATE_EVENTS: ReadonlySet<string> = new Set([
  'trace_cancel_finish',
  'node_retry',
  'node_timeout',
  'node_failed',
  'deadline_skip',
  'queue_overflow',
  'join_surplus',
]);

function journalsEvent(mode: 'state' | 'all' | 'none', type: string): boolean {
  return mode === 'all' ? !LIFECYCLE_EVENTS.has(type) : mode === 'state' && STATE_EVENTS.has(type);
}

/** The first trace of a repeated key, or `ROOST_ERR_IDEMPOTENCY_CONFLICT` when the requests differ. */
function repeat(traceId: string, stored: string | undefined, key: string, fingerprint: string | undefined): EmitResult {
  // Only two fingerprints can disagree: a repeat without one (or of a task emitted without one)
  // is taken as the same request.
  if (fingerprint !== undefined && stored !== undefined && stored !== fingerprint) {
    throw new RoostError('ROOST_ERR_IDEMPOTENCY_CONFLICT', `idempotency key ${JSON.stringify(key)} was used for another request (trace ${traceId})`, {
      field: 'emit.options.idempotencyKey',
      expected: 'the same request as the first use of the key, or a new key',
      received: key,
      details: { traceId },
    });
  }
  return { traceId, deduplicated: true };
}

/** `fitsJson`, where a throwing getter means "cannot tell" (then `toJsonWithin` gives the coded error). */
function fitsPayload(payload: unknown, maxBytes: number): boolean {
  try {
    return fitsJson(payload, maxBytes);
  } catch {
    return false;
  }
}

function stoppedError(flow: string): RoostError {
  return new RoostError('ROOST_ERR_INVALID_STATE', `flow ${flow} is stopped`, { field: 'flow', expected: 'a running flow', received: 'stopped' });
}

function queueFull(flow: string, node: string, capacity: number): RoostError {
  return new RoostError('ROOST_ERR_QUEUE_FULL', `edge to ${node} in flow ${flow} is full (${capacity} envelopes)`, {
    details: { flow, node, capacity },
  });
}
