/**
 * The 2389 Agent Protocol over MQTT, for one runtime (the `protocol2389` option; `[protocol2389]`
 * and `[[agent2389]]` in roost.toml). It exposes flows as 2389 agents (agent.ts), sends tasks to
 * 2389 agents and keeps a registry of them (client.ts), answers every task whose trace ends in
 * this process (those resumed from the journal too: the task's note is journaled with its trace),
 * and serves an optional 2389-shaped health server (health.ts).
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
import type { Logger } from '../telemetry/logger.js';
import { ExposedAgent, noteKey, type AgentHost, type TaskNote } from './agent.js';
import { Agent2389Error, Client2389, type Agent2389Info, type Call2389Options, type Target2389 } from './client.js';
import { openConnection } from './connection.js';
import type { Agent2389RejectReason, Agent2389TaskEvent } from './events.js';
import { Health2389Server, type Health2389Snapshot } from './health.js';
import type { ResolvedAgent2389, ResolvedProtocol2389 } from './options.js';
import { conversationTopic, isTaskId, nextEnvelope, type ErrorCode2389, type TaskEnvelope } from './wire.js';

/** What the protocol needs of its runtime. */
export interface Protocol2389Host {
  readonly logger: Logger;
  readonly journal: Journal | null;
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
    try {
      await client.start();
      if (o.health !== null) {
        this.health = new Health2389Server(o.health, () => this.snapshot());
        await this.health.listen();
      }
      for (const agent of this.agents.values()) await agent.start();
    } catch (error) {
      await this.close();
      throw error;
    }
    this.started = true;
    // Traces of 2389 tasks resumed from the journal: answered when they end, as if taken here.
    const resumed = this.resumedTraces.splice(0);
    for (const { flow, traceId } of resumed) this.answerResumed(flow, traceId);
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
        const note = found?.value as TaskNote | undefined;
        if (note === undefined || note === null || typeof note !== 'object' || typeof note.agent !== 'string') return; // not a 2389 task
        this.counts.accepted++;
        return this.answer(flow, traceId, note);
      })
      .catch((error: unknown) => this.log.error({ err: ensureError(error), traceId }, '2389: reading the note of a resumed trace failed'));
    this.track(work);
  }

  private track(work: Promise<void>): void {
    this.answering.add(work);
    void work.finally(() => this.answering.delete(work));
  }

  /** Waits for the trace's end, then publishes its answer (and its `next` task). */
  private async answer(flow: Flow, traceId: string, note: TaskNote): Promise<void> {
    const task = note.task as TaskEnvelope;
    let ok = true;
    let result: unknown = null;
    let failure: unknown = null;
    try {
      result = (await flow.fetch(traceId)) ?? null;
    } catch (error) {
      // A trace stopped by a close with a journal resumes at the next start, which answers it.
      if (this.closing && this.host.journal !== null && isRoostError(error, 'ROOST_ERR_TRACE_CANCELLED')) return;
      ok = false;
      failure = error;
    }
    const connection = this.agents.get(note.agent)?.connection ?? this.connection;
    if (connection === null) return;
    const topic = conversationTopic(task.conversation_id, note.agent);
    const ms = Date.now() - note.acceptedAt;
    const code = ok ? null : answerCode(failure);
    const body = ok ? { response: result, task_id: task.task_id } : { error: { code, message: ensureError(failure).message }, task_id: task.task_id };
    try {
      await connection.publishAsync(topic, JSON.stringify(body), { qos: 1 });
      this.count('published');
      if (ok) {
        const next = nextEnvelope(task, note.agent, result, randomUUID());
        if (next !== null) {
          await connection.publishAsync(next.topic, JSON.stringify(next), { qos: 1 });
          this.count('published');
        }
      }
    } catch (error) {
      this.count('publishFailed');
      this.log.error({ err: ensureError(error), traceId, taskId: task.task_id }, '2389: publishing an answer failed');
    }
    this.taskEvent({
      type: 'agent2389_task',
      ts: Date.now(),
      agent: note.agent,
      flow: flow.name,
      outcome: ok ? 'completed' : 'failed',
      reason: null,
      code,
      taskId: task.task_id,
      conversationId: task.conversation_id,
      traceId,
      latencyMs: ms,
    });
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
