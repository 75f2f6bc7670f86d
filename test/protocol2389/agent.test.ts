/**
 * A Roost flow exposed as a 2389 agent, driven by a foreign client (the raw `mqtt` package) on
 * the machine's Mosquitto: v1 and v2 tasks, chained `next`, duplicates, a retained input,
 * over-deep chains, malformed packets, and the status with its retention and expiry.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRuntime, node, type Envelope, type RoostEvent, type Runtime } from '../../src/index.js';
import { Agent2389Error } from '../../src/index.js';
import { nextTaskId } from '../../src/protocol2389/wire.js';
import { MQTT_URL, requireBroker } from '../helpers/brokers.js';
import { ForeignClient, agentId, clearRetained, taskV1, taskV2 } from './helpers.js';

interface Fixture {
  rt: Runtime;
  events: RoostEvent[];
  foreign: ForeignClient;
  id: string;
}

const open: Fixture[] = [];
const used: string[] = [];

beforeAll(() => requireBroker('mqtt', MQTT_URL));

afterEach(async () => {
  for (const f of open.splice(0)) {
    await f.rt.close();
    await f.foreign.close();
  }
  await clearRetained(used.splice(0));
});

interface Payload {
  task_id: string;
  conversation_id: string;
  topic: string;
  instruction: string | null;
  input: unknown;
  context?: unknown;
  routing_trace?: unknown[];
}

/** A runtime exposing flow `work` as agent `id`; the handler is given. */
async function fixture(handler: (env: Envelope<Payload>) => unknown, agent: Record<string, unknown> = {}, more: Record<string, unknown> = {}): Promise<Fixture> {
  const id = (agent['id'] as string | undefined) ?? agentId();
  used.push(id);
  const foreign = await ForeignClient.connect();
  await foreign.subscribe('/conversations/#');
  await foreign.subscribe(`/control/agents/${id}/status`);
  const rt = createRuntime({
    logger: false,
    protocol2389: { broker: MQTT_URL, agents: [{ id, flow: 'work', capabilities: ['echo', 'test'], description: 'a test agent', ...agent }], ...more },
  });
  const events: RoostEvent[] = [];
  rt.on((e) => events.push(e));
  rt.flow({ name: 'work', edges: [node('run', handler, { retries: 0 }).to()] });
  await rt.start();
  const f = { rt, events, foreign, id };
  open.push(f);
  return f;
}

const replies = (f: Fixture, conversation: string): unknown[] => f.foreign.on(`/conversations/${conversation}/${f.id}`).map((h) => h.json);

describe('a flow as a 2389 agent', () => {
  it('answers a v1 task with the flow result, its payload and headers carrying the task', async () => {
    let seen: Envelope<Payload> | null = null;
    const f = await fixture((env) => {
      seen = env;
      return { doubled: (env.payload.input as { n: number }).n * 2 };
    });
    const task = taskV1(f.id, { n: 21 });
    await f.foreign.publish(`/control/agents/${f.id}/input`, task);
    await f.foreign.until(() => replies(f, task['conversation_id'] as string).length > 0);
    expect(replies(f, task['conversation_id'] as string)).toEqual([{ response: { doubled: 42 }, task_id: task['task_id'] }]);
    const env = seen as unknown as Envelope<Payload>;
    expect(env.payload).toMatchObject({ task_id: task['task_id'], conversation_id: task['conversation_id'], topic: `/control/agents/${f.id}/input`, instruction: 'do it', input: { n: 21 } });
    expect(env.headers).toMatchObject({ 'a2389-task-id': task['task_id'], 'a2389-conversation-id': task['conversation_id'], 'a2389-version': '1', 'a2389-agent': f.id });
    expect(env.idempotencyKey).toBe(task['task_id']);
  });

  it("payload 'input': the flow gets the task's input alone, the instruction in a header", async () => {
    let seen: Envelope<unknown> | null = null;
    const f = await fixture((env) => {
      seen = env;
      return 'ok';
    }, { payload: 'input' });
    const task = taskV1(f.id, { id: 'T-1', text: 'refund please' });
    await f.foreign.publish(`/control/agents/${f.id}/input`, task);
    await f.foreign.until(() => replies(f, task['conversation_id'] as string).length > 0);
    const env = seen as unknown as Envelope<unknown>;
    expect(env.payload).toEqual({ id: 'T-1', text: 'refund please' });
    expect(env.headers).toMatchObject({ 'a2389-instruction': 'do it', 'a2389-task-id': task['task_id'] });
  });

  it('a string result stays a string; v2 context and routing trace reach the handler', async () => {
    let seen: Payload | null = null;
    const f = await fixture((env) => {
      seen = env.payload;
      return 'plain text';
    });
    const task = taskV2(f.id, { q: 1 });
    await f.foreign.publish(`/control/agents/${f.id}/input`, task);
    await f.foreign.until(() => replies(f, task['conversation_id'] as string).length > 0);
    expect(replies(f, task['conversation_id'] as string)).toEqual([{ response: 'plain text', task_id: task['task_id'] }]);
    expect(seen).toMatchObject({ context: task['context'], routing_trace: task['routing_trace'] });
  });

  it('a failed trace is answered with an error envelope, with the code the handler chose and no stack', async () => {
    const f = await fixture((env) => {
      if ((env.payload.input as { tool?: boolean }).tool === true) throw new Agent2389Error('tool_execution_failed', 'the search tool is down');
      throw new Error('plain failure');
    });
    const a = taskV1(f.id, { tool: true });
    const b = taskV1(f.id, {});
    await f.foreign.publish(`/control/agents/${f.id}/input`, a);
    await f.foreign.publish(`/control/agents/${f.id}/input`, b);
    await f.foreign.until(() => replies(f, a['conversation_id'] as string).length > 0 && replies(f, b['conversation_id'] as string).length > 0);
    const [ea] = replies(f, a['conversation_id'] as string) as { error: { code: string; message: string }; task_id: string }[];
    const [eb] = replies(f, b['conversation_id'] as string) as { error: { code: string; message: string }; task_id: string }[];
    expect(ea!.error.code).toBe('tool_execution_failed');
    expect(ea!.error.message).toContain('the search tool is down');
    expect(ea!.task_id).toBe(a['task_id']);
    expect(eb!.error.code).toBe('internal_error');
    expect(eb!.error.message).toContain('plain failure');
    expect(JSON.stringify([ea, eb])).not.toMatch(/\n\s+at /);
  });

  it('chains next: a new task with a UUIDv4 task id made from the trace id, the same conversation, the result as input, the rest of the chain; v2 steps and routing extended', async () => {
    const f = await fixture((env) => ({ handled: env.payload.instruction }));
    const nextAgent = agentId('next');
    used.push(nextAgent);
    await f.foreign.subscribe(`/control/agents/${nextAgent}/input`);
    const rest = { topic: '/control/agents/third/input', instruction: 'third step', input: null, next: null };
    const task = taskV2(f.id, {}, { next: { topic: `//control/agents/${nextAgent}/input/`, instruction: 'second step', next: rest } });
    await f.foreign.publish(`/control/agents/${f.id}/input`, task);
    await f.foreign.until(() => f.foreign.on(`/control/agents/${nextAgent}/input`).length > 0);
    const forwarded = f.foreign.on(`/control/agents/${nextAgent}/input`)[0]!.json as Record<string, unknown>;
    expect(forwarded['task_id']).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(forwarded['task_id']).not.toBe(task['task_id']);
    // The same on a re-send after a crash (the next agent drops it as a duplicate).
    const accepted = f.events.find((e) => e.type === 'agent2389_task' && e.outcome === 'accepted') as { traceId: string } | undefined;
    expect(forwarded['task_id']).toBe(nextTaskId(accepted!.traceId));
    expect(forwarded).toMatchObject({ version: '2.0', conversation_id: task['conversation_id'], topic: `/control/agents/${nextAgent}/input`, instruction: 'second step', input: { handled: 'do it' }, next: rest });
    const context = forwarded['context'] as { steps_completed: { agent_id: string }[]; iteration_count: number; original_query: string };
    expect(context.original_query).toBe('the question');
    expect(context.steps_completed.map((s) => s.agent_id)).toEqual(['upstream', f.id]);
    expect(context.iteration_count).toBe(2);
    const trace = forwarded['routing_trace'] as { from_agent: string; to_agent: string; step_number: number }[];
    expect(trace.at(-1)).toMatchObject({ from_agent: f.id, to_agent: nextAgent, step_number: 2 });
    // The response went to the conversation too.
    expect(replies(f, task['conversation_id'] as string)).toEqual([{ response: { handled: 'do it' }, task_id: task['task_id'] }]);
  });

  it('a duplicate task id runs once and is answered once', async () => {
    let runs = 0;
    const f = await fixture(() => ++runs);
    const task = taskV1(f.id, {});
    await f.foreign.publish(`/control/agents/${f.id}/input`, task);
    await f.foreign.publish(`/control/agents/${f.id}/input`, task);
    await f.foreign.until(() => f.events.filter((e) => e.type === 'agent2389_task' && e.outcome === 'duplicate').length === 1);
    await f.foreign.until(() => replies(f, task['conversation_id'] as string).length > 0);
    await new Promise((r) => setTimeout(r, 300));
    expect(runs).toBe(1);
    expect(replies(f, task['conversation_id'] as string)).toHaveLength(1);
  });

  it('ignores a retained message on its input topic', async () => {
    let runs = 0;
    const id = agentId();
    used.push(id);
    const foreign = await ForeignClient.connect();
    const task = taskV1(id, {});
    await foreign.publish(`/control/agents/${id}/input`, task, { retain: true });
    await foreign.close();
    const f = await fixture(() => ++runs, { id });
    await f.foreign.until(() => f.events.some((e) => e.type === 'agent2389_task' && e.outcome === 'retained'), 10_000, 'the retained input to be ignored');
    expect(runs).toBe(0);
    expect(replies(f, task['conversation_id'] as string)).toEqual([]);
  });

  it('refuses an over-deep next chain with pipeline_depth_exceeded, and keeps answering', async () => {
    let runs = 0;
    const f = await fixture(() => ++runs, { maxDepth: 2 });
    let chain: Record<string, unknown> | null = null;
    for (let i = 0; i < 3; i++) chain = { topic: `/control/agents/x${i}/input`, next: chain };
    const deep = taskV1(f.id, {}, { next: chain });
    await f.foreign.publish(`/control/agents/${f.id}/input`, deep);
    await f.foreign.until(() => replies(f, deep['conversation_id'] as string).length > 0);
    expect(replies(f, deep['conversation_id'] as string)).toEqual([{ error: { code: 'pipeline_depth_exceeded', message: expect.stringContaining('3 deep') as unknown }, task_id: deep['task_id'] }]);
    expect(runs).toBe(0);
    const ok = taskV1(f.id, {}, { next: { topic: '/control/agents/y/input', next: { topic: '/control/agents/z/input' } } });
    await f.foreign.publish(`/control/agents/${f.id}/input`, ok);
    await f.foreign.until(() => replies(f, ok['conversation_id'] as string).length > 0);
    expect(replies(f, ok['conversation_id'] as string)).toEqual([{ response: 1, task_id: ok['task_id'] }]);
  });

  it('malformed packets: invalid_input where a conversation is named, an event otherwise; never a crash', async () => {
    const f = await fixture(() => 'fine');
    const input = `/control/agents/${f.id}/input`;
    const cases: { body: unknown; named: boolean; why: string }[] = [
      { body: 'not json {', named: false, why: 'not_json' },
      { body: '[1,2,3]', named: false, why: 'invalid' },
      { body: { ...taskV1(f.id, {}), task_id: 'not-a-uuid' }, named: true, why: 'invalid' },
      { body: { ...taskV1(f.id, {}), instruction: 42 }, named: true, why: 'invalid' },
      { body: { ...taskV1(f.id, {}), version: '3.0' }, named: true, why: 'unknown_version' },
      { body: { ...taskV1(f.id, {}), topic: '/control/agents/someone-else/input' }, named: true, why: 'wrong_topic' },
      { body: { ...taskV1(f.id, {}), next: { instruction: 'no topic' } }, named: true, why: 'invalid' },
      { body: { ...taskV2(f.id, {}), context: { steps_completed: 'no' } }, named: true, why: 'invalid' },
      { body: { ...taskV1(f.id, 'x'.repeat(300 * 1024)) }, named: true, why: 'too_large' },
      { body: Buffer.from([0xff, 0xfe, 0x00, 0x01]), named: false, why: 'not_json' },
    ];
    for (const c of cases) await f.foreign.publish(input, c.body);
    const rejected = (): RoostEvent[] => f.events.filter((e) => e.type === 'agent2389_task' && e.outcome === 'rejected');
    await f.foreign.until(() => rejected().length === cases.length, 10_000, 'every malformed packet to be refused');
    expect(rejected().map((e) => (e as { reason: string }).reason)).toEqual(cases.map((c) => c.why));
    for (const c of cases.filter((x) => x.named)) {
      const body = c.body as Record<string, unknown>;
      await f.foreign.until(() => replies(f, body['conversation_id'] as string).length > 0);
      const [reply] = replies(f, body['conversation_id'] as string) as { error: { code: string } }[];
      expect(reply!.error.code).toBe('invalid_input');
    }
    const good = taskV1(f.id, {});
    await f.foreign.publish(input, good);
    await f.foreign.until(() => replies(f, good['conversation_id'] as string).length > 0);
    expect(replies(f, good['conversation_id'] as string)).toEqual([{ response: 'fine', task_id: good['task_id'] }]);
  });

  it('status: retained available with capabilities, description and the message expiry; unavailable on a clean shutdown', async () => {
    const f = await fixture(() => 1, { heartbeatS: 1, statusExpiryS: 120 });
    const statusTopic = `/control/agents/${f.id}/status`;
    await f.foreign.until(() => f.foreign.on(statusTopic).length > 0);
    const first = f.foreign.on(statusTopic)[0]!;
    expect(first.json).toMatchObject({ agent_id: f.id, status: 'available', capabilities: ['echo', 'test'], description: 'a test agent' });
    expect((first.json as { timestamp: string }).timestamp).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);
    expect(first.expiry).toBeGreaterThan(100);
    expect(first.expiry).toBeLessThanOrEqual(120);
    // The heartbeat republishes it.
    await f.foreign.until(() => f.foreign.on(statusTopic).length >= 3, 10_000, 'heartbeats');
    // A late subscriber gets it retained.
    const late = await ForeignClient.connect();
    await late.subscribe(statusTopic);
    await late.until(() => late.on(statusTopic).length > 0);
    expect(late.on(statusTopic)[0]).toMatchObject({ retain: true, json: expect.objectContaining({ status: 'available' }) as unknown });
    await late.close();
    open.splice(open.indexOf(f), 1);
    await f.rt.close();
    await f.foreign.until(() => (f.foreign.on(statusTopic).at(-1)?.json as { status?: string } | undefined)?.status === 'unavailable');
    const after = await ForeignClient.connect();
    await after.subscribe(statusTopic);
    await after.until(() => after.on(statusTopic).length > 0);
    expect(after.on(statusTopic)[0]).toMatchObject({ retain: true, json: expect.objectContaining({ status: 'unavailable' }) as unknown });
    await after.close();
    await f.foreign.close();
  });

  it('the status expires at its message expiry when nothing republishes it', async () => {
    const f = await fixture(() => 1, { heartbeatS: 3600, statusExpiryS: 2 });
    const statusTopic = `/control/agents/${f.id}/status`;
    await f.foreign.until(() => f.foreign.on(statusTopic).length > 0);
    await new Promise((r) => setTimeout(r, 4_500));
    const late = await ForeignClient.connect();
    await late.subscribe(statusTopic);
    await new Promise((r) => setTimeout(r, 500));
    expect(late.on(statusTopic)).toEqual([]);
    await late.close();
  });

  it('sends tasks to 2389 agents, by id and by capability through the registry', async () => {
    const f = await fixture((env) => ({ echoed: env.payload.input }), { capabilities: [`cap-${randomUUID().slice(0, 6)}`] });
    const cap = f.rt.protocol2389!.options.agents[0]!.capabilities[0]!;
    const caller = createRuntime({ logger: false, protocol2389: { broker: MQTT_URL } });
    open.push({ rt: caller, events: [], foreign: await ForeignClient.connect(), id: f.id });
    caller.flow({ name: 'ask', edges: [node('ask', caller.protocol2389!.handler({ capability: cap }, { instruction: 'echo' }), { timeoutMs: 10_000 }).to()] });
    await caller.start();
    await f.foreign.until(() => caller.protocol2389!.list().some((a) => a.id === f.id && a.status === 'available'), 10_000, 'the registry to hear the agent');
    const { traceId } = await caller.emit('ask', { hello: 'world' });
    await expect(caller.getFlow('ask')!.fetch(traceId)).resolves.toEqual({ echoed: { hello: 'world' } });
    await expect(caller.protocol2389!.call({ agent: f.id }, 7)).resolves.toEqual({ echoed: 7 });
    const missing = caller.protocol2389!.call({ capability: 'nobody-has-this' }, 1);
    await expect(missing).rejects.toMatchObject({ code: 'ROOST_ERR_AGENT_NOT_FOUND' });
  });
});
