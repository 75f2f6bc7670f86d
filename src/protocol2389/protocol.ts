/**
 * The 2389 Agent Protocol over MQTT, for one runtime (the `protocol2389` option; `[protocol2389]`
 * and `[[agent2389]]` in roost.toml). It exposes flows as 2389 agents (agent.ts), sends tasks to
 * 2389 agents and keeps a registry of them (client.ts), answers every task whose trace ends in
 * this process (those resumed from the journal too: the task's note is journaled with its trace),
 * and serves an optional 2389-shaped health server (health.ts).
 *
 * Answers are at least once with a journal: a task's note lives until its answer (and its `next`
 * task) is delivered, PUBACK back, and is then deleted. At start-up, before its agents take
 * tasks, the protocol lists the notes left (the answers still owed: a crash came between a
 * trace's end and its answer's PUBACK, or the publish failed) and answers the finished traces
 * among them from the journal; the running ones are answered when they end, as resumed traces.
 * It looks again every `ownerLeaseMs`: an owner of a shared store whose lease lapsed later (the
 * takeover claims only running traces), and a publish of its own that failed. A trace this process
 * has in hand (`owning`) is never looked at, and a lapsed owner's are taken under a lease per owner.
 *
 * Lifecycle, driven by the runtime: `start()` once the runtime runs (agents say `available` only
 * then); `stopIntake()` when its drain begins (no more tasks; agents say `unavailable`); `close()`
 * after the drain, once the answers of the finished traces are out.
 */
import { randomUUID } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import type { Envelope } from '../envelope/envelope.js';
import { RoostError, ensureError, isRoostError } from '../errors.js';
import type { RoostEvent } from '../flow/events.js';
import type { Flow } from '../flow/flow.js';
import type { Handler, HandlerContext } from '../flow/handler.js';
import type { Journal } from '../store/journal.js';
import { refusedForGood } from '../transport/mqtt.js';
import { ownerLeaseName, type Store, type StoredTrace } from '../store/store.js';
import type { Logger } from '../telemetry/logger.js';
import { ExposedAgent, NOTE_PREFIX, noteKey, readNote, type AgentHost, type TaskNote } from './agent.js';
import { Agent2389Error, Client2389, type Agent2389Info, type Call2389Options, type Target2389 } from './client.js';
import { openConnection } from './connection.js';
import type { Agent2389RejectReason, Agent2389TaskEvent } from './events.js';
import { Health2389Server, type Health2389Snapshot } from './health.js';
import type { ResolvedAgent2389, ResolvedProtocol2389 } from './options.js';
import { conversationTopic, isTaskId, nextEnvelope, nextTaskId, type ErrorCode2389, type TaskEnvelope } from './wire.js';

/** What the protocol needs of its runtime. */
export interface Protocol2389Host {
  readonly logger: Logger;
  readonly journal: Journal | null;
  /** The runtime's owner name (of the traces it starts). */
  readonly owner: string;
  /** How long an owner lease lasts unrenewed: how often the answers owed are looked for again. */
  readonly ownerLeaseMs: number;
  flow(name: string): Flow | undefined;
  /** True while the runtime takes tasks. */
  accepting(): boolean;
  publish(event: RoostEvent): void;
}

/** Options of a node that sends its input to a 2389 agent. */
export interface Node2389Options {
  /** The task's instruction (default: none). */
  readonly instruction?: string | null;
  /** The longest wait for the answer, ms (the node's `timeoutMs` and the deadline apply anyway). */
  readonly timeoutMs?: number;
}

const ANSWER_CODES = new Set<string>(['tool_execution_failed', 'llm_error', 'invalid_input', 'pipeline_depth_exceeded', 'internal_error']);

/** The 2389 code a failed trace is answered with: the handler's choice (an {@link Agent2389Error}), else by its Roost code. */
function answerCode(error: unknown): ErrorCode2389 {
  for (let e: unknown = error, i = 0; e instanceof Error && i < 8; e = e.cause, i++) {
    if (e instanceof Agent2389Error && ANSWER_CODES.has(e.code2389)) return e.code2389 as ErrorCode2389;
    if (isRoostError(e, 'ROOST_ERR_VALIDATION')) return 'invalid_input';
  }
  return 'internal_error';
}

/** How a trace ended, as its answer tells it. */
type Outcome = { readonly ok: true; readonly result: unknown } | { readonly ok: false; readonly code: ErrorCode2389; readonly message: string };

/**
 * The outcome of a finished trace as the journal holds it (its error is a code and a message:
 * an {@link Agent2389Error}'s own code is not kept, so such a failure is `internal_error` here).
 */
function storedOutcome(t: StoredTrace): Outcome {
  if (t.status === 'succeeded') return { ok: true, result: t.result ?? null };
  return { ok: false, code: t.error?.code === 'ROOST_ERR_VALIDATION' ? 'invalid_input' : 'internal_error', message: t.error?.message ?? `trace ${t.traceId} ${t.status}` };
}

/** Notes read per page by a look for owed answers. */
const NOTES_PAGE = 256;

/** An answer owed for a finished trace, found by a look for owed answers. */
interface Owed {
  readonly trace: StoredTrace;
  readonly note: TaskNote;
}

/**
 * How long a process holds the answers of a lapsed owner (renewed by its next look; after a crash
 * mid-send, another process takes them once it lapses).
 */
const ANSWERS_LEASE_MS = 60_000;

export class Protocol2389 {
  private readonly agents = new Map<string, ExposedAgent>();
  private connection: MqttClient | null = null;
  private clientValue: Client2389 | null = null;
  private health: Health2389Server | null = null;
  private started = false;
  private closing = false;
  private readonly startedAt = Date.now();
  /** Traces resumed before start(), to be answered once connected. */
  private readonly resumedTraces: { flow: string; traceId: string }[] = [];
  /** Answers being waited for or published. */
  private readonly answering = new Set<Promise<void>>();
  /**
   * Traces whose answer this process has in hand (a task taken here, a resumed trace, an owed
   * answer being sent): from then until its note's deletion is committed, or its publish failed.
   * A look for owed answers skips them, so one process never answers a trace twice.
   */
  private readonly owning = new Set<string>();
  /** Looks for owed answers again every `ownerLeaseMs` (a lapsed owner's, a publish that failed). */
  private owedTimer: ReturnType<typeof setInterval> | null = null;
  private owedBusy = false;
  private readonly counts = {
    received: 0,
    accepted: 0,
    completed: 0,
    failed: 0,
    rejected: 0,
    duplicates: 0,
    retained: 0,
    totalMs: 0,
    messagesReceived: 0,
    messagesPublished: 0,
    publishFailures: 0,
    connectionAttempts: 0,
    lastTaskAt: 0,
  };
  private readonly log: Logger;

  constructor(
    readonly options: ResolvedProtocol2389,
    private readonly host: Protocol2389Host,
  ) {
    this.log = host.logger.child({ component: 'protocol2389' });
    for (const a of options.agents) this.agents.set(a.id, new ExposedAgent(a, this.agentHost()));
  }

  /** The registry and calls (null before start). */
  get client(): Client2389 | null {
    return this.clientValue;
  }

  /** Connects, fills the registry, exposes the agents, answers resumed traces, opens the health server. */
  async start(): Promise<void> {
    const o = this.options;
    o.agents.forEach((a, i) => {
      if (this.host.flow(a.flow) === undefined) {
        throw new RoostError('ROOST_ERR_INVALID_OPTION', `protocol2389.agents[${i}].flow: agent ${a.id} runs flow ${JSON.stringify(a.flow)}, which this runtime does not have`, {
          field: `protocol2389.agents[${i}].flow`,
          expected: 'the name of a flow registered before start()',
          received: a.flow,
        });
      }
    });
    const connection = await openConnection({
      url: o.broker,
      clientId: `roost-2389-client-${randomUUID().slice(0, 12)}`,
      tls: o.tls,
      connectTimeoutMs: o.connectTimeoutMs,
      keepaliveSeconds: o.keepaliveSeconds,
      logger: this.log,
      onAttempt: () => this.count('attempt'),
    });
    this.connection = connection;
    const client = new Client2389(connection, {
      registryExpiryMs: o.registryExpiryMs,
      publish: (e) => this.host.publish(e),
      count: (what) => this.count(what),
    });
    connection.on('message', (_topic, _payload, packet) => client.onPacket(packet));
    this.clientValue = client;
    let owed: Owed[];
    try {
      await client.start();
      if (o.health !== null) {
        this.health = new Health2389Server(o.health, () => this.snapshot());
        await this.health.listen();
      }
      // Before the agents take tasks: every note listed is then of a trace accepted before.
      owed = await this.owedAnswers();
      for (const agent of this.agents.values()) await agent.start();
    } catch (error) {
      await this.close();
      throw error;
    }
    this.started = true;
    // Traces of 2389 tasks resumed from the journal: answered when they end, as if taken here.
    const resumed = this.resumedTraces.splice(0);
    for (const { flow, traceId } of resumed) this.answerResumed(flow, traceId);
    // Traces that ended before a crash and whose answers did not go out: answered now.
    if (owed.length > 0) this.log.warn({ answers: owed.length }, '2389: answering the tasks whose traces ended before a crash, unanswered');
    this.deliverOwed(owed);
    if (this.host.journal !== null && this.agents.size > 0) {
      this.owedTimer = setInterval(() => void this.lookAgain(), Math.max(1_000, this.host.ownerLeaseMs));
      this.owedTimer.unref();
    }
  }

  private deliverOwed(owed: readonly Owed[]): void {
    for (const { trace, note } of owed) this.track(this.deliver(trace.flow, trace.traceId, note, storedOutcome(trace)));
  }

  /**
   * The periodic look for answers owed: those of an owner whose lease lapsed since (the takeover
   * claims only running traces), and this process's own whose publish failed.
   */
  private async lookAgain(): Promise<void> {
    if (this.owedBusy || this.closing) return;
    this.owedBusy = true;
    try {
      const owed = await this.owedAnswers();
      if (owed.length > 0) this.log.warn({ answers: owed.length }, '2389: answering the tasks whose answers are owed (an owner gone, or a publish failed)');
      if (!this.closing) this.deliverOwed(owed);
    } finally {
      this.owedBusy = false;
    }
  }

  /**
   * The answers still owed by this process's agents for traces that finished (see the module
   * comment), but for those this process has in hand ({@link owning}: taken here, resumed, or
   * being sent). Costs a page read of the notes left, and a trace read per note of an agent of
   * this process: the notes are deleted as answers are delivered, so what is left is the tasks in
   * flight and the answers a crash cut off or a failed publish left. Never rejects: a note that
   * cannot be read is logged and looked at again next time.
   */
  private async owedAnswers(): Promise<Owed[]> {
    const journal = this.host.journal;
    if (journal === null || this.agents.size === 0) return [];
    const store = journal.store;
    const owed: Owed[] = [];
    /** Per owner of the traces met: whether this process answers them (one lease read and claim each). */
    const here = new Map<string | null, boolean>();
    try {
      for (let after: string | null = null; ; ) {
        const page = await store.listCheckpoints(NOTE_PREFIX, after, NOTES_PAGE);
        for (const c of page) {
          const note = readNote(c.value);
          const agent = note === null ? undefined : this.agents.get(note.agent);
          if (note === null || agent === undefined || this.owning.has(c.traceId)) continue;
          try {
            const trace = await store.getTrace(agent.options.flow, c.traceId);
            if (trace === null || trace.status === 'running' || this.owning.has(c.traceId)) continue;
            let mine = here.get(trace.owner);
            if (mine === undefined) here.set(trace.owner, (mine = await this.answersHere(store, trace.owner)));
            if (!mine) continue;
            this.owning.add(c.traceId);
            owed.push({ trace, note });
          } catch (error) {
            this.log.error({ err: ensureError(error), traceId: c.traceId }, '2389: reading an answer owed failed (it is looked at again later)');
          }
        }
        if (page.length < NOTES_PAGE) break;
        after = page[page.length - 1]!.key;
      }
    } catch (error) {
      this.log.error({ err: ensureError(error) }, '2389: listing the answers owed failed (they are looked for again later)');
    }
    return owed;
  }

  /**
   * Whether this process answers the finished traces of `owner`: always with a store of one
   * process; with a shared one, its own, and those of an owner that is gone (its lease lapsed, or
   * it has none) once this process holds that owner's answers lease, which two processes looking at
   * once cannot both hold. (A gone owner's finished traces are a fixed set: its running ones are
   * claimed by a takeover, and answered by the claimer as resumed traces.)
   */
  private async answersHere(store: Store, owner: string | null): Promise<boolean> {
    if (!store.shared || owner === this.host.owner) return true;
    if (owner !== null) {
      const lease = await store.getLease(ownerLeaseName(owner));
      if (lease !== null && lease.until > Date.now()) return false;
    }
    return (await store.acquireLease(`agent2389-answers:${owner ?? ''}`, this.host.owner, ANSWERS_LEASE_MS, Date.now())) !== null;
  }

  /** The port the health server listens on (null: none). */
  get healthPort(): number | null {
    return this.health?.port ?? null;
  }

  /**
   * A trace was resumed from the journal (told by the runtime, before or after start). Only a
   * trace keyed by a task id (a UUID) can be a 2389 task's: the others cost no journal read.
   */
  resumed(flow: string, traceId: string, idempotencyKey: string | null): void {
    if (!isTaskId(idempotencyKey)) return;
    this.owning.add(traceId); // answered when it ends: an owed-answer look must leave it
    if (!this.started) this.resumedTraces.push({ flow, traceId });
    else this.answerResumed(flow, traceId);
  }

  private answerResumed(flowName: string, traceId: string): void {
    const journal = this.host.journal;
    const flow = this.host.flow(flowName);
    if (journal === null || flow === undefined) return;
    const work = journal
      .getCheckpoint(noteKey(traceId))
      .then((found) => {
        const note = found === undefined ? null : readNote(found.value);
        if (note === null) {
          this.owning.delete(traceId); // not a 2389 task's
          return;
        }
        this.counts.accepted++;
        return this.answer(flow, traceId, note);
      })
      .catch((error: unknown) => {
        this.owning.delete(traceId); // looked at again by the next look for owed answers
        this.log.error({ err: ensureError(error), traceId }, '2389: reading the note of a resumed trace failed');
      });
    this.track(work);
  }

  private track(work: Promise<void>): void {
    this.answering.add(work);
    void work.finally(() => this.answering.delete(work));
  }

  /** Waits for the trace's end, then publishes its answer (and its `next` task). */
  private async answer(flow: Flow, traceId: string, note: TaskNote): Promise<void> {
    let outcome: Outcome;
    try {
      outcome = { ok: true, result: (await flow.fetch(traceId)) ?? null };
    } catch (error) {
      // A trace stopped by a close with a journal resumes at the next start, which answers it.
      if (this.closing && this.host.journal !== null && isRoostError(error, 'ROOST_ERR_TRACE_CANCELLED')) return;
      outcome = { ok: false, code: answerCode(error), message: ensureError(error).message };
    }
    await this.deliver(flow.name, traceId, note, outcome);
  }

  /**
   * Publishes a finished trace's answer (and its `next` task); once every PUBACK is back, deletes
   * its note: the answer is delivered, and the task's `completed` or `failed` event goes out. A
   * publish that fails leaves the note, so the next look for owed answers (or the next start)
   * sends it again; the event waits for that. A publish the broker refuses for good (not
   * authorized, a bad topic, too large) would be refused at every look: its note goes, and it is
   * logged and counted as a publish failure (the task's event goes out only if its answer did,
   * and only its `next` task was refused).
   */
  private async deliver(flowName: string, traceId: string, note: TaskNote, outcome: Outcome): Promise<void> {
    const task = note.task as TaskEnvelope;
    const connection = this.agents.get(note.agent)?.connection ?? this.connection;
    if (connection === null) return;
    const topic = conversationTopic(task.conversation_id, note.agent);
    const ms = Date.now() - note.acceptedAt;
    const body = outcome.ok ? { response: outcome.result, task_id: task.task_id } : { error: { code: outcome.code, message: outcome.message }, task_id: task.task_id };
    let answered = false;
    try {
      await connection.publishAsync(topic, JSON.stringify(body), { qos: 1 });
      answered = true;
      this.count('published');
      if (outcome.ok) {
        const next = nextEnvelope(task, note.agent, outcome.result, nextTaskId(traceId));
        if (next !== null) {
          await connection.publishAsync(next.topic, JSON.stringify(next), { qos: 1 });
          this.count('published');
        }
      }
      this.delivered(traceId);
    } catch (error) {
      this.count('publishFailed');
      const what = answered ? 'the next task of an answered task' : 'an answer';
      if (refusedForGood(error) === null) {
        this.owning.delete(traceId); // the note stays: the next look for owed answers sends it again
        this.log.error({ err: ensureError(error), traceId, taskId: task.task_id }, `2389: publishing ${what} failed (it is sent again later)`);
        return;
      }
      this.log.error({ err: ensureError(error), traceId, taskId: task.task_id, topic }, `2389: the broker refused ${what} for good; it is not sent again`);
      this.delivered(traceId);
      if (!answered) return;
    }
    this.taskEvent({
      type: 'agent2389_task',
      ts: Date.now(),
      agent: note.agent,
      flow: flowName,
      outcome: outcome.ok ? 'completed' : 'failed',
      reason: null,
      code: outcome.ok ? null : outcome.code,
      taskId: task.task_id,
      conversationId: task.conversation_id,
      traceId,
      latencyMs: ms,
    });
  }

  /** Done with a trace's answer: its note goes (this process holds the trace until the deletion is committed). */
  private delivered(traceId: string): void {
    const journal = this.host.journal;
    if (journal === null) {
      this.owning.delete(traceId);
      return;
    }
    journal.checkpointRemoved(noteKey(traceId));
    // Held until the deletion is committed: a look for owed answers reads the store.
    void journal.committed().then(
      () => this.owning.delete(traceId),
      () => this.owning.delete(traceId),
    );
  }

  /** Counts a task's event for the 2389 `/metrics` (the Prometheus ones derive from the event itself), then publishes it. */
  private taskEvent(e: Agent2389TaskEvent): void {
    const c = this.counts;
    switch (e.outcome) {
      case 'accepted':
        c.accepted++;
        break;
      case 'completed':
      case 'failed':
        if (e.outcome === 'completed') c.completed++;
        else c.failed++;
        c.totalMs += e.latencyMs ?? 0;
        break;
      case 'rejected':
        c.rejected++;
        break;
      case 'duplicate':
        c.duplicates++;
        break;
      case 'retained':
        c.retained++;
        break;
    }
    // Every event but an answer's is about a packet that came in; task activity (for the
    // `task_processing` check) is a task taken or answered, not a packet refused.
    if (e.outcome !== 'completed' && e.outcome !== 'failed') c.received++;
    if (e.outcome === 'accepted' || e.outcome === 'completed' || e.outcome === 'failed') c.lastTaskAt = e.ts;
    this.host.publish(e);
  }

  private count(what: 'received' | 'published' | 'publishFailed' | 'attempt'): void {
    if (what === 'received') this.counts.messagesReceived++;
    else if (what === 'published') this.counts.messagesPublished++;
    else if (what === 'publishFailed') this.counts.publishFailures++;
    else this.counts.connectionAttempts++;
  }

  private agentHost(): AgentHost {
    const o = this.options;
    return {
      logger: this.log,
      url: o.broker,
      tls: o.tls,
      connectTimeoutMs: o.connectTimeoutMs,
      keepaliveSeconds: o.keepaliveSeconds,
      flow: (name) => this.host.flow(name),
      accepting: () => !this.closing && this.host.accepting(),
      count: (what) => this.count(what),
      refused: (agent, outcome, reason, code, taskId, conversationId, traceId) => this.refused(agent, outcome, reason, code, taskId, conversationId, traceId),
      taking: (traceId) => this.owning.add(traceId),
      forget: (traceId, noteMayBeQueued) => {
        this.owning.delete(traceId);
        if (noteMayBeQueued) this.host.journal?.checkpointRemoved(noteKey(traceId));
      },
      accepted: (agent, traceId, note) => {
        this.taskEvent({ type: 'agent2389_task', ts: Date.now(), agent: agent.id, flow: agent.flow, outcome: 'accepted', reason: null, code: null, taskId: note.task.task_id, conversationId: note.task.conversation_id, traceId, latencyMs: null });
        const flow = this.host.flow(agent.flow);
        if (flow !== undefined) this.track(this.answer(flow, traceId, note));
      },
    };
  }

  private refused(agent: ResolvedAgent2389, outcome: 'rejected' | 'duplicate' | 'retained', reason: Agent2389RejectReason | null, code: ErrorCode2389 | null, taskId: string | null, conversationId: string | null, traceId: string | null): void {
    this.taskEvent({ type: 'agent2389_task', ts: Date.now(), agent: agent.id, flow: agent.flow, outcome, reason, code, taskId, conversationId, traceId, latencyMs: null });
  }

  /** No more tasks: every exposed agent ends its input subscription and says `unavailable`. */
  async stopIntake(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.agents.values()].map((a) => a.stopIntake()));
  }

  /** Waits (up to `timeoutMs`) for the answers in flight, then disconnects. Never rejects. */
  async close(timeoutMs = 5_000): Promise<void> {
    if (this.owedTimer !== null) clearInterval(this.owedTimer);
    this.owedTimer = null;
    await this.stopIntake();
    if (this.answering.size > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([Promise.allSettled([...this.answering]), new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
      clearTimeout(timer);
    }
    await Promise.all([...this.agents.values()].map((a) => a.close().catch(() => {})));
    const connection = this.connection;
    this.connection = null;
    if (connection !== null) await connection.endAsync(!connection.connected).catch(() => {});
    await this.health?.close().catch(() => {});
    this.health = null;
  }

  /** Sends `input` to a 2389 agent and resolves with its response (see Client2389.call). */
  call(target: Target2389, input: unknown, options?: Call2389Options): Promise<unknown> {
    const client = this.clientValue;
    if (client === null) return Promise.reject(new Agent2389Error('internal_error', 'protocol2389: not started (the runtime starts it)'));
    return client.call(target, input, options);
  }

  /**
   * A handler for a flow node that sends its input to a 2389 agent (by id, or by capability
   * through the registry) and returns the agent's response. An error answer fails the node with an
   * {@link Agent2389Error} (retried by the node's policy); the node's signal bounds the wait. The
   * conversation is the one the trace came in with (a 2389 task), else one per trace.
   */
  handler(target: Target2389, options: Node2389Options = {}): Handler {
    return (envelope: Envelope, ctx: HandlerContext) =>
      this.call(target, envelope.payload, {
        instruction: options.instruction ?? null,
        conversationId: envelope.headers['a2389-conversation-id'] ?? `roost-${ctx.traceId}`,
        signal: ctx.signal,
        ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      });
  }

  /** The 2389 agents the registry knows (within its expiry). */
  list(): Agent2389Info[] {
    return this.clientValue?.list() ?? [];
  }

  /** The 2389 `/metrics` and `/health` data. */
  snapshot(): Health2389Snapshot {
    const c = this.counts;
    const done = c.completed + c.failed;
    const processing = Math.max(0, c.accepted - done);
    const agents = [...this.agents.values()];
    return {
      agentId: agents[0]?.options.id ?? null,
      agents: agents.map((a) => ({ id: a.options.id, flow: a.options.flow, connected: a.connected })),
      uptimeSeconds: Math.floor((Date.now() - this.startedAt) / 1000),
      mqttConnected: this.connection?.connected === true && agents.every((a) => a.connected),
      ready: this.started && !this.closing && this.connection?.connected === true && agents.every((a) => a.connected),
      lastTaskAt: c.lastTaskAt === 0 ? null : c.lastTaskAt,
      tasks: {
        received: c.received,
        processing,
        completed: c.completed,
        failed: c.failed,
        rejected: c.rejected,
        duplicates: c.duplicates,
        ignored_retained: c.retained,
        avg_processing_time_ms: done === 0 ? 0 : Math.round((c.totalMs / done) * 100) / 100,
        current_pipeline_depth: processing,
      },
      mqtt: {
        connected: this.connection?.connected === true,
        connection_attempts: c.connectionAttempts,
        messages_received: c.messagesReceived,
        messages_published: c.messagesPublished,
        publish_failures: c.publishFailures,
      },
      tools: this.clientValue?.callStats() ?? { total_executions: 0, successful: 0, failed: 0, aborted: 0, in_flight: 0, avg_execution_time_ms: 0 },
    };
  }
}
