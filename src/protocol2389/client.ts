/**
 * Roost as a sender of 2389 tasks: a registry of the agents on the broker, filled by their
 * retained status messages (`/control/agents/+/status`; an entry lapses after `registryExpiryMs`
 * without one), and calls: a TaskEnvelope v2 to an agent's input topic, answered by its
 * `{response, task_id}` or `{error, task_id}` on `/conversations/{conversation_id}/{agent_id}`.
 * A call by capability goes to the available agent with that capability that has the fewest
 * calls of this process in flight (ties: the one heard from last).
 */
import { randomUUID } from 'node:crypto';
import type { IPublishPacket, MqttClient } from 'mqtt';
import { RoostError, ensureError } from '../errors.js';
import type { Agent2389CallEvent } from './events.js';
import { conversationTopic, inputTopic, isAgentId, isConversationId, parseReply, parseStatus, timestamp, type TaskEnvelope } from './wire.js';

/** An error a 2389 agent answered with, or one a Roost handler throws to choose the 2389 code it is answered with. */
export class Agent2389Error extends Error {
  constructor(
    /** The 2389 error code. */
    /** The 2389 error code (an agent may answer with a code of its own: any string). */
    readonly code2389: string,
    message: string,
    /** The agent that answered it (calls), or null. */
    readonly agent: string | null = null,
  ) {
    super(message);
    this.name = 'Agent2389Error';
  }
}

/** A 2389 agent as its status messages tell it. */
export interface Agent2389Info {
  readonly id: string;
  readonly status: 'available' | 'unavailable';
  readonly capabilities: readonly string[];
  readonly description: string | null;
  /** The status message's own timestamp. */
  readonly timestamp: string;
  /** Epoch ms this process last heard a status of it. */
  readonly heardAt: number;
  /** Calls of this process to it in flight. */
  readonly inFlight: number;
}

/** Whom a call goes to: an agent by id, or any available agent with a capability. */
export type Target2389 = { readonly agent: string } | { readonly capability: string };

export interface Call2389Options {
  readonly instruction?: string | null;
  /** The conversation (default: a new one per call). */
  readonly conversationId?: string;
  /** Abandons the wait (the node's signal: its timeout, the deadline, a cancel). */
  readonly signal?: AbortSignal;
  /** The longest wait for an answer, ms (default: none beyond the signal). */
  readonly timeoutMs?: number;
}

interface Waiter {
  readonly resolve: (reply: { response: unknown } | { error: { code: string; message: string } }) => void;
}

/** What the client needs of the protocol. */
export interface ClientHost {
  readonly registryExpiryMs: number;
  publish(event: Agent2389CallEvent): void;
  count(what: 'received' | 'published' | 'publishFailed'): void;
}

/** How many statuses may be heard between two sweeps of the lapsed agents. */
const SWEEP_EVERY = 1_024;

export class Client2389 {
  private readonly agents = new Map<string, Omit<Agent2389Info, 'inFlight'>>();
  /** Statuses heard since the last sweep of lapsed agents (the map holds the live ones, and at most this many more). */
  private sinceSweep = 0;
  private readonly inFlight = new Map<string, number>();
  /** Waiters by task id. */
  private readonly waiters = new Map<string, Waiter>();
  /** Conversation subscriptions by topic, with how many calls use each. */
  private readonly subscriptions = new Map<string, { users: number; ready: Promise<unknown> }>();
  private readonly stats = { calls: 0, responses: 0, errors: 0, aborted: 0, totalMs: 0 };

  constructor(
    private readonly client: MqttClient,
    private readonly host: ClientHost,
  ) {}

  /** Subscribes to every agent's status (the broker sends the retained ones at once). */
  async start(): Promise<void> {
    await this.client.subscribeAsync('/control/agents/+/status', { qos: 1 });
  }

  /** Every packet the client's connection gets: statuses and answers. */
  onPacket(packet: IPublishPacket): void {
    const topic = packet.topic;
    const bytes = typeof packet.payload === 'string' ? Buffer.from(packet.payload, 'utf8') : packet.payload;
    if (topic.startsWith('/control/agents/') && topic.endsWith('/status')) {
      const id = topic.slice('/control/agents/'.length, -'/status'.length);
      if (!isAgentId(id)) return;
      if (bytes.length === 0) {
        this.agents.delete(id); // a cleared retained status
        return;
      }
      const status = parseStatus(bytes);
      if (status === null || status.agent_id !== id) return; // not a status message of that agent
      this.agents.set(id, { id, status: status.status, capabilities: status.capabilities ?? [], description: status.description ?? null, timestamp: status.timestamp, heardAt: Date.now() });
      if (++this.sinceSweep >= SWEEP_EVERY) this.sweep(Date.now());
      return;
    }
    if (topic.startsWith('/conversations/')) {
      const reply = parseReply(bytes);
      if (reply === null) return;
      const waiter = this.waiters.get(reply.taskId);
      if (waiter === undefined) return;
      this.host.count('received');
      waiter.resolve('error' in reply ? { error: reply.error } : { response: reply.response });
    }
  }

  /** The agents heard of within the registry's expiry (available or not). */
  list(now = Date.now()): Agent2389Info[] {
    this.sweep(now);
    const out: Agent2389Info[] = [];
    for (const info of this.agents.values()) {
      out.push({ ...info, inFlight: this.inFlight.get(info.id) ?? 0 });
    }
    return out.sort((a, b) => a.id.localeCompare(b.id));
  }

  /** Forgets the agents not heard from within the registry's expiry. */
  private sweep(now: number): void {
    this.sinceSweep = 0;
    for (const [id, info] of this.agents) if (now - info.heardAt > this.host.registryExpiryMs) this.agents.delete(id);
  }

  /** The available agent for a capability: the fewest calls in flight, then the one heard from last. */
  pick(capability: string): string | null {
    let best: Agent2389Info | null = null;
    for (const a of this.list()) {
      if (a.status !== 'available' || !a.capabilities.includes(capability)) continue;
      if (best === null || a.inFlight < best.inFlight || (a.inFlight === best.inFlight && a.heardAt > best.heardAt)) best = a;
    }
    return best?.id ?? null;
  }

  /** Call statistics (the `tools` part of the 2389 `/metrics`). */
  callStats(): { total_executions: number; successful: number; failed: number; aborted: number; in_flight: number; avg_execution_time_ms: number } {
    const s = this.stats;
    const done = s.responses + s.errors;
    let inFlight = 0;
    for (const n of this.inFlight.values()) inFlight += n;
    return { total_executions: s.calls, successful: s.responses, failed: s.errors, aborted: s.aborted, in_flight: inFlight, avg_execution_time_ms: done === 0 ? 0 : s.totalMs / done };
  }

  /**
   * Sends `input` as a task to the target and resolves with its response; rejects with an
   * {@link Agent2389Error} when the agent answers with an error, `ROOST_ERR_AGENT_NOT_FOUND` when
   * no available agent has the capability, and the signal's reason when it aborts first.
   */
  async call(target: Target2389, input: unknown, options: Call2389Options = {}): Promise<unknown> {
    const started = Date.now();
    const agent = 'agent' in target ? target.agent : this.pick(target.capability);
    const conversationId = options.conversationId ?? `roost-${randomUUID()}`;
    if (agent === null) {
      const capability = (target as { capability: string }).capability;
      this.event(capability, 'no_agent', null, null, conversationId, null);
      throw new RoostError('ROOST_ERR_AGENT_NOT_FOUND', `no available 2389 agent has the capability ${JSON.stringify(capability)}`, {
        field: 'target.capability',
        expected: 'a capability an available agent announces in its status',
        received: capability,
      });
    }
    if (!isAgentId(agent)) throw new RoostError('ROOST_ERR_INVALID_OPTION', `target.agent: expected a 2389 agent id, got ${JSON.stringify(agent)}`, { field: 'target.agent' });
    if (!isConversationId(conversationId)) throw new RoostError('ROOST_ERR_INVALID_OPTION', `conversationId: expected 1 to 256 characters without /, + or #`, { field: 'conversationId' });
    options.signal?.throwIfAborted();
    const taskId = randomUUID();
    const replyTopic = conversationTopic(conversationId, agent);
    const task: TaskEnvelope = {
      version: '2.0',
      task_id: taskId,
      conversation_id: conversationId,
      topic: inputTopic(agent),
      instruction: options.instruction ?? null,
      input,
      next: null,
      context: { original_query: options.instruction ?? '', steps_completed: [], iteration_count: 0 },
      routing_trace: [{ from_agent: 'roost', to_agent: agent, reason: 'capability' in target ? `capability ${target.capability}` : 'direct', timestamp: timestamp(started), step_number: 1 }],
    };
    this.stats.calls++;
    this.inFlight.set(agent, (this.inFlight.get(agent) ?? 0) + 1);
    let timer: ReturnType<typeof setTimeout> | undefined;
    // The signal and the timeout bound the whole call, the wait for the reply subscription too
    // (a slow SUBACK, a broker away): armed before it, they end a call that never got to send.
    let fail!: (error: Error) => void;
    const ended = new Promise<never>((_resolve, reject) => (fail = reject));
    ended.catch(() => {});
    const onAbort = (): void => fail(ensureError(options.signal!.reason ?? new Error('aborted')));
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.timeoutMs !== undefined) {
      timer = setTimeout(() => fail(new RoostError('ROOST_ERR_REQUEST_TIMEOUT', `2389 agent ${agent} did not answer task ${taskId} within ${options.timeoutMs} ms`, { details: { agent, taskId } })), options.timeoutMs);
    }
    try {
      await Promise.race([this.subscribe(replyTopic), ended]);
      const reply = await new Promise<{ response: unknown } | { error: { code: string; message: string } }>((resolve, reject) => {
        this.waiters.set(taskId, { resolve });
        ended.catch(reject);
        this.client.publish(inputTopic(agent), JSON.stringify(task), { qos: 1 }, (error) => {
          if (error) {
            this.host.count('publishFailed');
            reject(new RoostError('ROOST_ERR_TRANSPORT_UNAVAILABLE', `2389: sending task ${taskId} to ${agent} failed: ${error.message}`, { cause: error, details: { agent } }));
          } else this.host.count('published');
        });
      });
      const ms = Date.now() - started;
      this.stats.totalMs += ms;
      if ('error' in reply) {
        this.stats.errors++;
        this.event(agent, 'error', reply.error.code, taskId, conversationId, ms);
        throw new Agent2389Error(reply.error.code, `2389 agent ${agent}: ${reply.error.code}: ${reply.error.message}`, agent);
      }
      this.stats.responses++;
      this.event(agent, 'response', null, taskId, conversationId, ms);
      return reply.response;
    } catch (error) {
      if (!(error instanceof Agent2389Error)) {
        this.stats.aborted++;
        this.event(agent, 'aborted', null, taskId, conversationId, Date.now() - started);
      }
      throw error;
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      this.waiters.delete(taskId);
      const n = (this.inFlight.get(agent) ?? 1) - 1;
      if (n <= 0) this.inFlight.delete(agent);
      else this.inFlight.set(agent, n);
      this.unsubscribe(replyTopic);
    }
  }

  private event(agent: string, outcome: Agent2389CallEvent['outcome'], code: string | null, taskId: string | null, conversationId: string | null, latencyMs: number | null): void {
    this.host.publish({ type: 'agent2389_call', ts: Date.now(), agent, outcome, code, taskId, conversationId, latencyMs });
  }

  private subscribe(topic: string): Promise<unknown> {
    let sub = this.subscriptions.get(topic);
    if (sub === undefined) {
      sub = { users: 0, ready: this.client.subscribeAsync(topic, { qos: 1 }) };
      this.subscriptions.set(topic, sub);
      sub.ready.catch(() => {
        if (this.subscriptions.get(topic) === sub) this.subscriptions.delete(topic);
      });
    }
    sub.users++;
    return sub.ready;
  }

  private unsubscribe(topic: string): void {
    const sub = this.subscriptions.get(topic);
    if (sub === undefined || --sub.users > 0) return;
    this.subscriptions.delete(topic);
    // Also while disconnected: mqtt.js then forgets the topic, so a reconnect does not subscribe to it again.
    this.client.unsubscribe(topic, () => {});
  }
}
