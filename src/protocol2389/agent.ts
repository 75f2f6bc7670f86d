/**
 * A Roost flow exposed as a 2389 agent: one MQTT connection of its own (its last will is the
 * agent's retained `unavailable` status), the input subscription, the status and its heartbeat,
 * and the intake of tasks. Answers are published by the protocol (protocol.ts), which also
 * answers the tasks of traces resumed from the journal.
 *
 * The intake follows the 2389 task algorithm: a retained message is ignored; the packet is read
 * (v2, then v1; over 256 KiB, not JSON, wrong types, a task id that is not a UUID or an unknown
 * version is `invalid_input`); its topic must be this agent's input; the depth of its `next`
 * chain must be within `maxDepth` (else `pipeline_depth_exceeded`); a task id seen before is a
 * duplicate (the runtime's idempotency window, durable with a journal, and a bounded set of the
 * recent ones); then a trace of the flow starts. A packet is acknowledged (PUBACK) once its task
 * is accepted (journaled, with a journal) or answered, so reading is paced by the flow.
 */
import { randomUUID } from 'node:crypto';
import type { IPublishPacket, MqttClient } from 'mqtt';
import { uuidv7 } from '../envelope/uuid.js';
import { ensureError, isRoostError } from '../errors.js';
import type { Flow } from '../flow/flow.js';
import type { Logger } from '../telemetry/logger.js';
import type { TransportTlsOptions } from '../transport/base.js';
import { openConnection } from './connection.js';
import type { Agent2389RejectReason } from './events.js';
import type { ResolvedAgent2389 } from './options.js';
import { canonicalTopic, conversationTopic, inputTopic, parseTask, statusTopic, timestamp, type ErrorCode2389, type TaskEnvelope } from './wire.js';

/** What is kept with a trace started for a task (journaled with the trace): enough to answer it. */
export interface TaskNote {
  readonly agent: string;
  /** The task as it came, without its `input` (the trace's payload has it). */
  readonly task: Omit<TaskEnvelope, 'input'>;
  readonly acceptedAt: number;
}

/**
 * The key prefix of the notes: a note lives while its task's answer is owed, and is deleted once
 * the answer is delivered (its PUBACK is back), so the notes under it are the answers still owed.
 */
export const NOTE_PREFIX = 'agent2389:';

/** The key of a trace's note. */
export const noteKey = (traceId: string): string => `${NOTE_PREFIX}${traceId}`;

/** A note as read back from the journal, or null when `value` is none (not a 2389 task's). */
export function readNote(value: unknown): TaskNote | null {
  if (value === null || typeof value !== 'object') return null;
  const note = value as Partial<TaskNote>;
  if (typeof note.agent !== 'string' || note.task === null || typeof note.task !== 'object' || typeof note.acceptedAt !== 'number') return null;
  return note as TaskNote;
}

/** What an exposed agent needs of the protocol. */
export interface AgentHost {
  readonly logger: Logger;
  readonly url: string;
  readonly tls: TransportTlsOptions | undefined;
  readonly connectTimeoutMs: number;
  readonly keepaliveSeconds: number;
  /** The runtime's flow, or undefined. */
  flow(name: string): Flow | undefined;
  /** True while the runtime takes tasks. */
  accepting(): boolean;
  /** A task was refused or skipped (counted, logged, an event). */
  refused(agent: ResolvedAgent2389, outcome: 'rejected' | 'duplicate' | 'retained', reason: Agent2389RejectReason | null, code: ErrorCode2389 | null, taskId: string | null, conversationId: string | null, traceId: string | null): void;
  /** A task's trace is about to be emitted with this id: its answer is this process's from now on. */
  taking(traceId: string): void;
  /**
   * The emit with that id was a duplicate (no note was written) or failed: the task is not this
   * process's to answer. After a failure its note is deleted too (`noteMayBeQueued`): an emit can fail
   * after its note was queued (a wait for room at the ingress cut short), and the journal commits
   * it all the same, for a later look to answer a second time.
   */
  forget(traceId: string, noteMayBeQueued: boolean): void;
  /** A trace started for a task: answer it when it ends. */
  accepted(agent: ResolvedAgent2389, traceId: string, note: TaskNote): void;
  /** Counts (for the 2389 `/metrics`). */
  count(what: 'received' | 'published' | 'publishFailed' | 'attempt'): void;
}

/** How many recent task ids each agent remembers besides the runtime's window. */
const RECENT_TASKS = 10_000;

export class ExposedAgent {
  private client: MqttClient | null = null;
  private heartbeat: ReturnType<typeof setInterval> | null = null;
  /** Keeps the connection's keepalive going while a packet is being handled (see start()). */
  private pinger: ReturnType<typeof setInterval> | null = null;
  /** Packets being handled, and when one last started or ended. */
  private busy = 0;
  private busyAt = 0;
  /** True between start() and stopIntake(): the agent says it is available. */
  private open = false;
  private readonly recent = new Set<string>();
  private readonly log: Logger;

  constructor(
    readonly options: ResolvedAgent2389,
    private readonly host: AgentHost,
  ) {
    this.log = host.logger.child({ agent2389: options.id });
  }

  get connected(): boolean {
    return this.client?.connected === true;
  }

  /** The agent's connection (for its answers), or null before start and after close. */
  get connection(): MqttClient | null {
    return this.client;
  }

  /** Connects (with the will), subscribes to the input topic, then says `available` and keeps saying it. */
  async start(): Promise<void> {
    const o = this.options;
    const will = Buffer.from(JSON.stringify(this.status('unavailable')));
    const client = await openConnection({
      url: this.host.url,
      clientId: `roost-2389-${o.id.slice(0, 40)}-${randomUUID().slice(0, 8)}`,
      tls: this.host.tls,
      connectTimeoutMs: this.host.connectTimeoutMs,
      keepaliveSeconds: this.host.keepaliveSeconds,
      will: { topic: statusTopic(o.id), payload: will, expirySeconds: o.statusExpiryS },
      logger: this.log,
      onAttempt: () => this.host.count('attempt'),
      onReconnect: () => void this.announce().catch((error: unknown) => this.log.warn({ err: ensureError(error) }, '2389: resubscribing after a reconnect failed')),
    });
    // Subscriptions are made again by announce() after a reconnect, which then knows their SUBACK.
    client.options.resubscribe = false;
    client.handleMessage = (packet, done) => {
      this.busy++;
      this.busyAt = Date.now();
      this.onPacket(packet)
        .then(
          () => done(),
          (error: unknown) => {
            this.log.error({ err: ensureError(error) }, '2389: a task could not be handled');
            done();
          },
        )
        .finally(() => {
          this.busy--;
          this.busyAt = Date.now();
        });
    };
    // While packets wait for room in the flow, mqtt.js reads nothing else, PINGRESP included
    // (it is queued behind them): its keepalive would then drop a healthy connection (the will
    // says `unavailable`, the tasks the broker had sent are lost with the clean session, and
    // answers are sent twice). So, while busy, ping on its behalf and hold its timeout off.
    const keepaliveMs = this.host.keepaliveSeconds * 500;
    if (keepaliveMs > 0) {
      this.pinger = setInterval(() => {
        if ((this.busy > 0 || Date.now() - this.busyAt < keepaliveMs) && client.connected) {
          client.sendPing();
          client.reschedulePing(true);
        }
      }, keepaliveMs);
      this.pinger.unref();
    }
    this.client = client;
    this.open = true;
    try {
      await this.announce();
    } catch (error) {
      this.open = false;
      this.client = null;
      if (this.pinger !== null) clearInterval(this.pinger);
      this.pinger = null;
      client.end(true);
      throw error;
    }
    this.heartbeat = setInterval(() => {
      if (this.open && client.connected) {
        this.publishStatus('available').catch((error: unknown) => this.log.warn({ err: ensureError(error) }, '2389: status heartbeat failed'));
      }
    }, o.heartbeatS * 1000);
    this.heartbeat.unref();
    this.log.info({ topic: inputTopic(o.id), flow: o.flow }, '2389 agent available');
  }

  /** Subscribes to the input topic and, once the broker acknowledged it, publishes `available`. */
  private async announce(): Promise<void> {
    const client = this.client;
    if (client === null || !this.open) return;
    const granted = await client.subscribeAsync(inputTopic(this.options.id), { qos: 1 });
    const refused = granted.find((g) => g.qos !== 0 && g.qos !== 1 && g.qos !== 2);
    if (refused !== undefined) throw new Error(`the broker refused the subscription to ${inputTopic(this.options.id)} (reason code ${refused.qos})`);
    await this.publishStatus('available');
  }

  private status(status: 'available' | 'unavailable'): Record<string, unknown> {
    return { agent_id: this.options.id, status, timestamp: timestamp(), capabilities: this.options.capabilities, description: this.options.description };
  }

  private async publishStatus(status: 'available' | 'unavailable'): Promise<void> {
    const client = this.client;
    if (client === null) return;
    await client.publishAsync(statusTopic(this.options.id), JSON.stringify(this.status(status)), {
      qos: 1,
      retain: true,
      properties: { messageExpiryInterval: this.options.statusExpiryS, payloadFormatIndicator: true, contentType: 'application/json' },
    });
    this.host.count('published');
  }

  /** Takes no more tasks: the input subscription ends and the agent says `unavailable` (answers still go out). */
  stopIntake(): Promise<void> {
    this.stopping ??= this.endIntake();
    return this.stopping;
  }

  private stopping: Promise<void> | null = null;

  private async endIntake(): Promise<void> {
    if (!this.open) return;
    this.open = false;
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
    this.heartbeat = null;
    const client = this.client;
    if (client === null || !client.connected) return;
    try {
      await client.unsubscribeAsync(inputTopic(this.options.id));
      await this.publishStatus('unavailable');
    } catch (error) {
      this.log.warn({ err: ensureError(error) }, '2389: saying unavailable failed (the last will says it when the connection goes)');
    }
  }

  /** Closes the connection (after stopIntake: a clean disconnect, so the will is not sent). */
  async close(): Promise<void> {
    await this.stopIntake();
    if (this.pinger !== null) clearInterval(this.pinger);
    this.pinger = null;
    const client = this.client;
    this.client = null;
    if (client !== null) await client.endAsync(!client.connected).catch(() => {});
  }

  /** One packet on the input topic (see the module comment). */
  private async onPacket(packet: IPublishPacket): Promise<void> {
    const o = this.options;
    this.host.count('received');
    if (packet.retain) {
      this.log.warn({ topic: packet.topic }, '2389: ignored a retained message on the input topic');
      this.host.refused(o, 'retained', null, null, null, null, null);
      return;
    }
    const bytes = typeof packet.payload === 'string' ? Buffer.from(packet.payload, 'utf8') : packet.payload;
    const parsed = parseTask(bytes);
    if (!parsed.ok) {
      this.reject(parsed.reason, 'invalid_input', parsed.message, parsed.taskId, parsed.conversationId);
      return;
    }
    const task = parsed.task;
    const topic = canonicalTopic(task.topic);
    if (topic !== inputTopic(o.id)) {
      this.reject('wrong_topic', 'invalid_input', `topic: expected ${inputTopic(o.id)}, got ${JSON.stringify(task.topic.slice(0, 200))}`, task.task_id, task.conversation_id);
      return;
    }
    if (this.recent.has(task.task_id)) {
      this.host.refused(o, 'duplicate', null, null, task.task_id, task.conversation_id, null);
      return;
    }
    if (parsed.depth > o.maxDepth) {
      this.reject('pipeline_depth_exceeded', 'pipeline_depth_exceeded', `the next chain is ${parsed.depth} deep; this agent takes at most ${o.maxDepth}`, task.task_id, task.conversation_id);
      return;
    }
    const flow = this.host.flow(o.flow);
    if (flow === undefined || !this.host.accepting()) {
      this.reject('not_accepted', 'internal_error', `agent ${o.id} is not taking tasks now`, task.task_id, task.conversation_id);
      return;
    }
    const { input, ...rest } = task;
    const note: TaskNote = { agent: o.id, task: rest, acceptedAt: Date.now() };
    const traceId = uuidv7();
    this.host.taking(traceId);
    try {
      const r = await this.paced(() => flow.emit(
        o.payload === 'input'
          ? input
          : {
              task_id: task.task_id,
              conversation_id: task.conversation_id,
              topic,
              instruction: task.instruction,
              input,
              ...(task.context === undefined ? {} : { context: task.context }),
              ...(task.routing_trace === undefined ? {} : { routing_trace: task.routing_trace }),
            },
        {
          traceId,
          tenant: o.tenant,
          idempotencyKey: task.task_id,
          headers: {
            'a2389-task-id': task.task_id,
            'a2389-conversation-id': task.conversation_id,
            'a2389-topic': topic,
            'a2389-version': task.version ?? '1',
            'a2389-agent': o.id,
            // The headers' values hold up to 8,192 characters: a longer instruction is in the task payload only.
            ...(task.instruction !== null && task.instruction.length <= 8192 ? { 'a2389-instruction': task.instruction } : {}),
          },
        },
        { note: { key: noteKey(traceId), value: note }, internal: true },
      ));
      this.remember(task.task_id);
      if (r.deduplicated) {
        this.host.forget(traceId, false);
        this.host.refused(o, 'duplicate', null, null, task.task_id, task.conversation_id, r.traceId);
        return;
      }
      this.host.accepted(o, r.traceId, note);
    } catch (error) {
      this.host.forget(traceId, true);
      const e = ensureError(error);
      const code: ErrorCode2389 = isRoostError(e, 'ROOST_ERR_VALIDATION') || isRoostError(e, 'ROOST_ERR_PAYLOAD_TOO_LARGE') ? 'invalid_input' : 'internal_error';
      this.reject(code === 'invalid_input' ? 'invalid' : 'not_accepted', code, e.message, task.task_id, task.conversation_id);
    }
  }

  /**
   * Emits, waiting while the runtime is at its in-flight trace limit (the packet is not
   * acknowledged meanwhile, so the broker holds the next ones): a limit paces the intake as a
   * full ingress queue does, instead of answering tasks with `internal_error`.
   */
  private async paced<T>(emit: () => Promise<T>): Promise<T> {
    for (let wait = 5; ; wait = Math.min(wait * 2, 200)) {
      try {
        return await emit();
      } catch (error) {
        if (!isRoostError(error, 'ROOST_ERR_RESOURCE_LIMIT') || !this.open || !this.host.accepting()) throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  private remember(taskId: string): void {
    this.recent.add(taskId);
    if (this.recent.size > RECENT_TASKS) this.recent.delete(this.recent.values().next().value!);
  }

  /** Refuses a task: an error envelope to its conversation when one can be named; a log line and a count always. */
  private reject(reason: Agent2389RejectReason, code: ErrorCode2389, message: string, taskId: string | null, conversationId: string | null): void {
    const o = this.options;
    this.log.warn({ reason, code, taskId, conversationId }, `2389: task refused: ${message}`);
    this.host.refused(o, 'rejected', reason, conversationId === null ? null : code, taskId, conversationId, null);
    const client = this.client;
    if (conversationId === null || client === null) return;
    // Not awaited: its PUBACK comes in behind the packet being handled now (mqtt.js reads one at a time).
    client.publish(conversationTopic(conversationId, o.id), JSON.stringify({ error: { code, message }, task_id: taskId }), { qos: 1 }, (error) => {
      if (error === undefined || error === null) {
        this.host.count('published');
        return;
      }
      this.host.count('publishFailed');
      this.log.warn({ err: error, conversationId }, '2389: publishing an error envelope failed');
    });
  }
}
