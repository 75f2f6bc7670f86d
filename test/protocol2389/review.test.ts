/**
 * Review tests of the 2389 adapter, acting as a foreign 2389 client (the raw `mqtt` package):
 * crash and restart with a journal, the last will after a SIGKILL, backpressure, reconnects,
 * malformed input, the sending side and the health server.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRuntime, node, type Envelope, type RoostEvent, type Runtime } from '../../src/index.js';
import { MQTT_URL, requireBroker } from '../helpers/brokers.js';
import { privateBroker, type PrivateBroker } from '../helpers/private-broker.js';
import { ForeignClient, agentId, clearRetained, taskV1 } from './helpers.js';

const fixture = fileURLToPath(new URL('../fixtures/agent2389-process.ts', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'rv-2389-'));
const used: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(() => requireBroker('mqtt', MQTT_URL));
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  await clearRetained(used.splice(0));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Proc {
  readonly exited: Promise<number | null>;
  output(): string;
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  kill(signal: NodeJS.Signals): void;
}

function startProcess(broker: string, id: string, store: string, mode: 'hang' | 'quick' | 'die-on-answer'): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, broker, id, store, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return {
    exited,
    output: () => out,
    async waitFor(text, timeoutMs = 15_000) {
      const end = Date.now() + timeoutMs;
      while (!out.includes(text)) {
        if (Date.now() > end || child.exitCode !== null) throw new Error(`the process did not print ${JSON.stringify(text)}; output: ${out}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    kill: (signal) => child.kill(signal),
  };
}

async function foreign(...topics: string[]): Promise<ForeignClient> {
  const f = await ForeignClient.connect();
  cleanups.push(() => f.close());
  for (const t of topics) await f.subscribe(t);
  return f;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('crash and restart of a process exposing a 2389 agent', () => {
  it('SIGKILL mid-handler: the will says unavailable (retained, with an expiry); the restarted process answers the resumed task once and drops its duplicate', async () => {
    const id = agentId('rv-crash');
    used.push(id);
    const store = `sqlite:${join(dir, `${id}.db`)}`;
    const f = await foreign('/conversations/#', `/control/agents/${id}/status`);
    const statusTopic = `/control/agents/${id}/status`;

    const first = startProcess(MQTT_URL, id, store, 'hang');
    await first.waitFor('ready');
    await f.until(() => f.on(statusTopic).some((h) => (h.json as { status?: string }).status === 'available'), 10_000, 'available');
    const task = taskV1(id, { n: 1 });
    const conversation = `/conversations/${task['conversation_id'] as string}/${id}`;
    await f.publish(`/control/agents/${id}/input`, task);
    await first.waitFor(`started ${task['task_id'] as string}`);
    // Killed only once the task is accepted (committed): the handler starts before the commit
    // lands, and a task killed before it was never the journal's (nor acknowledged to the broker).
    await first.waitFor(`accepted ${task['task_id'] as string}`);
    const before = f.heard.length;
    first.kill('SIGKILL');
    await first.exited;

    // The last will: the retained `unavailable`, with the MQTT 5 message expiry.
    await f.until(() => f.heard.slice(before).some((h) => h.topic === statusTopic && (h.json as { status?: string }).status === 'unavailable'), 10_000, 'the will');
    const will = f.heard.slice(before).find((h) => h.topic === statusTopic)!;
    expect(will.json).toMatchObject({ agent_id: id, status: 'unavailable' });
    expect(will.expiry).toBeGreaterThan(0);
    const late = await foreign(statusTopic);
    await late.until(() => late.on(statusTopic).length > 0, 5_000, 'the retained will');
    expect(late.on(statusTopic)[0]).toMatchObject({ retain: true });
    expect(late.on(statusTopic)[0]!.json).toMatchObject({ status: 'unavailable' });
    expect(late.on(statusTopic)[0]!.expiry).toBeGreaterThan(0);

    // Restarted under the same owner: the trace resumes and its answer goes out, once.
    const second = startProcess(MQTT_URL, id, store, 'quick');
    await second.waitFor('ready');
    await f.until(() => f.on(conversation).length > 0, 15_000, 'the answer of the resumed task').catch((error: unknown) => {
      throw new Error(`${String(error)}\nthe restarted process printed:\n${second.output()}`);
    });
    expect(f.on(conversation).map((h) => h.json)).toEqual([{ response: { done: { n: 1 } }, task_id: task['task_id'] }]);

    // The duplicate of that task, after the restart: dropped (durable dedup), no second answer.
    await f.publish(`/control/agents/${id}/input`, task);
    const probe = taskV1(id, { n: 2 });
    await f.publish(`/control/agents/${id}/input`, probe);
    await f.until(() => f.on(`/conversations/${probe['conversation_id'] as string}/${id}`).length > 0, 10_000, 'the probe answer');
    await sleep(300);
    expect(f.on(conversation)).toHaveLength(1);
    expect(second.output().match(new RegExp(`started ${task['task_id'] as string}`, 'g'))).toHaveLength(1);

    second.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  }, 60_000);
});

/** Starts the process again and waits until a probe task was answered, and a little more (for an answer sent again). */
async function startedAgain(f: ForeignClient, id: string, store: string): Promise<Proc> {
  const proc = startProcess(MQTT_URL, id, store, 'quick');
  await proc.waitFor('ready');
  const probe = taskV1(id, { probe: true });
  await f.publish(`/control/agents/${id}/input`, probe);
  await f.until(() => f.on(`/conversations/${probe['conversation_id'] as string}/${id}`).length > 0, 10_000, 'the probe answer');
  await sleep(300);
  return proc;
}

describe('a crash after a trace ended, before its answer was published', () => {
  // The answer's note stays in the journal until its PUBACK is back: the next start answers it.
  it('the answer still goes out after the restart (the task was accepted, so it must be answered), once', async () => {
    const id = agentId('rv-gap');
    used.push(id);
    const store = `sqlite:${join(dir, `${id}.db`)}`;
    const f = await foreign('/conversations/#');
    const first = startProcess(MQTT_URL, id, store, 'die-on-answer');
    await first.waitFor('ready');
    const task = taskV1(id, { n: 3 });
    const conversation = `/conversations/${task['conversation_id'] as string}/${id}`;
    await f.publish(`/control/agents/${id}/input`, task);
    await first.exited;
    expect(first.output()).toContain(`started ${task['task_id'] as string}`);
    expect(f.on(conversation)).toEqual([]);
    const second = startProcess(MQTT_URL, id, store, 'quick');
    await second.waitFor('ready');
    await f.until(() => f.on(conversation).length > 0, 4_000, 'the answer of the task whose trace ended before the crash');
    expect(f.on(conversation).map((h) => h.json)).toEqual([{ response: { done: { n: 3 } }, task_id: task['task_id'] }]);
    // The trace ran once (it had ended): only its answer was sent again.
    expect(second.output()).not.toContain(`started ${task['task_id'] as string}`);
    second.kill('SIGTERM');
    expect(await second.exited).toBe(0);

    // Delivered now: a third start owes nothing.
    await startedAgain(f, id, store);
    expect(f.on(conversation)).toHaveLength(1);
  }, 60_000);

  it('a normal run never answers twice: answered, closed and started again, nothing is sent again', async () => {
    const id = agentId('rv-once');
    used.push(id);
    const store = `sqlite:${join(dir, `${id}.db`)}`;
    const f = await foreign('/conversations/#');
    const first = startProcess(MQTT_URL, id, store, 'quick');
    await first.waitFor('ready');
    const tasks = [taskV1(id, { n: 5 }), taskV1(id, { n: 6 })];
    for (const t of tasks) await f.publish(`/control/agents/${id}/input`, t);
    const topics = tasks.map((t) => `/conversations/${t['conversation_id'] as string}/${id}`);
    await f.until(() => topics.every((t) => f.on(t).length > 0), 10_000, 'the answers');
    first.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    await startedAgain(f, id, store);
    expect(topics.map((t) => f.on(t).length)).toEqual([1, 1]);
  }, 60_000);
});

/** A foreign 2389 agent (raw mqtt): announces a status and answers its tasks as `answer` says. */
async function foreignAgent(
  id: string,
  capabilities: string[],
  answer: (task: Record<string, unknown>, n: number) => unknown,
  status: 'available' | 'unavailable' = 'available',
): Promise<{ tasks: Record<string, unknown>[]; client: ForeignClient }> {
  used.push(id);
  const f = await foreign(`/control/agents/${id}/input`);
  const tasks: Record<string, unknown>[] = [];
  f.client.on('message', (topic, payload) => {
    if (topic !== `/control/agents/${id}/input`) return;
    const task = JSON.parse(payload.toString()) as Record<string, unknown>;
    tasks.push(task);
    const body = answer(task, tasks.length);
    if (body !== undefined) void f.publish(`/conversations/${task['conversation_id'] as string}/${id}`, { ...(body as object), task_id: task['task_id'] });
  });
  await f.publish(`/control/agents/${id}/status`, { agent_id: id, status, timestamp: new Date().toISOString(), capabilities }, { retain: true });
  return { tasks, client: f };
}

function caller(more: Record<string, unknown> = {}, broker = MQTT_URL): { rt: Runtime; events: RoostEvent[] } {
  const rt = createRuntime({ logger: false, protocol2389: { broker, ...more } });
  const events: RoostEvent[] = [];
  rt.on((e) => events.push(e));
  cleanups.push(() => rt.close());
  return { rt, events };
}

describe('sending tasks to 2389 agents', () => {
  it('a node timeout aborts the wait: the node fails with its timeout and agent2389_call says aborted; nothing stays in flight', async () => {
    const id = agentId('rv-silent');
    await foreignAgent(id, [], () => undefined);
    const { rt, events } = caller();
    rt.flow({ name: 'ask', edges: [node('ask', rt.protocol2389!.handler({ agent: id }), { timeoutMs: 300, retries: 0 }).to()] });
    await rt.start();
    const started = Date.now();
    const { traceId } = await rt.emit('ask', { q: 1 });
    await expect(rt.getFlow('ask')!.fetch(traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_NODE_TIMEOUT' });
    expect(Date.now() - started).toBeLessThan(3_000);
    await new Promise((r) => setTimeout(r, 50));
    expect(events.filter((e) => e.type === 'agent2389_call')).toMatchObject([{ agent: id, outcome: 'aborted' }]);
    expect(rt.protocol2389!.snapshot().tools).toMatchObject({ in_flight: 0, aborted: 1 });
  });

  it('an error answer fails the node with Agent2389Error, and the node policy retries it', async () => {
    const id = agentId('rv-flaky');
    const agent = await foreignAgent(id, [], (task, n) => (n === 1 ? { error: { code: 'llm_error', message: 'try again' } } : { response: { ok: task['input'] } }));
    const { rt, events } = caller();
    const errors: unknown[] = [];
    rt.on((e) => {
      if (e.type === 'node_retry' || e.type === 'node_error') errors.push(e);
    });
    rt.flow({ name: 'ask', edges: [node('ask', rt.protocol2389!.handler({ agent: id }), { timeoutMs: 5_000, retries: 1, backoff: { baseMs: 10 } }).to()] });
    await rt.start();
    const { traceId } = await rt.emit('ask', { q: 2 });
    await expect(rt.getFlow('ask')!.fetch(traceId)).resolves.toEqual({ ok: { q: 2 } });
    expect(agent.tasks).toHaveLength(2);
    expect(events.filter((e) => e.type === 'agent2389_call').map((e) => (e as { outcome: string }).outcome)).toEqual(['error', 'response']);
    await expect(rt.protocol2389!.call({ agent: id }, 'x')).resolves.toEqual({ ok: 'x' });
    const failing = agentId('rv-fail');
    await foreignAgent(failing, [], () => ({ error: { code: 'tool_execution_failed', message: 'no' } }));
    const e = await rt.protocol2389!.call({ agent: failing }, 'x').catch((error: unknown) => error);
    expect(e).toMatchObject({ name: 'Agent2389Error', code2389: 'tool_execution_failed', agent: failing });
  });

  it('routing by capability: an unavailable agent is not picked, entries lapse after registryExpiryMs, the least loaded agent is picked', async () => {
    const cap = `cap-${randomUUID().slice(0, 8)}`;
    const down = agentId('rv-down');
    await foreignAgent(down, [cap], () => ({ response: 'down' }), 'unavailable');
    const slowA = agentId('rv-a');
    const slowB = agentId('rv-b');
    const release: (() => void)[] = [];
    for (const id of [slowA, slowB]) {
      const a = await foreignAgent(id, [cap], () => undefined);
      a.client.client.on('message', (topic, payload) => {
        if (topic !== `/control/agents/${id}/input`) return;
        const task = JSON.parse(payload.toString()) as Record<string, unknown>;
        release.push(() => void a.client.publish(`/conversations/${task['conversation_id'] as string}/${id}`, { response: id, task_id: task['task_id'] }));
      });
    }
    const { rt } = caller({ registryExpiryMs: 1_500 });
    await rt.start();
    const p = rt.protocol2389!;
    const deadline = Date.now() + 5_000;
    while (p.list().filter((a) => [down, slowA, slowB].includes(a.id)).length < 3 && Date.now() < deadline) await sleep(20);
    expect(p.client!.pick(cap)).not.toBe(down);
    // Two calls at once: one to each available agent (the least in flight), none to the unavailable one.
    const calls = [p.call({ capability: cap }, 1), p.call({ capability: cap }, 2)];
    while (release.length < 2 && Date.now() < deadline + 5_000) await sleep(20);
    for (const r of release) r();
    expect((await Promise.all(calls)).sort()).toEqual([slowA, slowB].sort());
    // Without heartbeats the entries lapse.
    await sleep(1_800);
    expect(p.list().filter((a) => [down, slowA, slowB].includes(a.id))).toEqual([]);
    await expect(p.call({ capability: cap }, 3)).rejects.toMatchObject({ code: 'ROOST_ERR_AGENT_NOT_FOUND' });
  });
});

/** A raw mqtt client on a private broker (reconnecting, so it survives the broker's restart). */
async function rawClient(url: string): Promise<{ heard: { topic: string; json: unknown }[]; client: MqttClient }> {
  const client = await mqtt.connectAsync(url, { protocolVersion: 5, clientId: `rv-${randomUUID().slice(0, 8)}`, clean: true, reconnectPeriod: 100 });
  const heard: { topic: string; json: unknown }[] = [];
  client.on('message', (topic, payload) => {
    let json: unknown = null;
    try {
      json = JSON.parse(payload.toString());
    } catch {
      json = payload.toString();
    }
    heard.push({ topic, json });
  });
  cleanups.push(() => client.endAsync(true));
  return { heard, client };
}

async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe('a private broker that goes away and comes back', () => {
  let broker: PrivateBroker;
  beforeAll(async () => {
    broker = await privateBroker('mosquitto');
  });
  afterAll(() => broker.dispose());

  it('the agent resubscribes, says available again and keeps answering; /health and /ready say 503 while the broker is gone', async () => {
    const id = agentId('rv-reconnect');
    const rt = createRuntime({ logger: false, protocol2389: { broker: broker.url, agents: [{ id, flow: 'work' }], health: { port: 0 }, keepaliveSeconds: 2 } });
    rt.flow({ name: 'work', edges: [node('run', (env: Envelope<{ input: unknown }>) => ({ echo: env.payload.input })).to()] });
    cleanups.push(() => rt.close());
    await rt.start();
    const port = rt.protocol2389!.healthPort!;
    const get = async (path: string): Promise<{ status: number; body: Record<string, unknown> }> => {
      const r = await fetch(`http://127.0.0.1:${port}${path}`);
      return { status: r.status, body: (await r.json()) as Record<string, unknown> };
    };
    expect((await get('/health')).status).toBe(200);
    await broker.stop();
    await until(() => !rt.protocol2389!.snapshot().mqttConnected, 5_000, 'the disconnect to be seen');
    const health = await get('/health');
    expect(health.status).toBe(503);
    expect(health.body).toMatchObject({ status: 'unhealthy', checks: { mqtt: { status: 'unhealthy' } } });
    expect((await get('/ready')).status).toBe(503);
    expect((await get('/live')).status).toBe(200);

    await broker.start();
    const c = await rawClient(broker.url);
    await c.client.subscribeAsync(`/control/agents/${id}/status`, { qos: 1 });
    await c.client.subscribeAsync('/conversations/#', { qos: 1 });
    await until(() => c.heard.some((h) => h.topic === `/control/agents/${id}/status` && (h.json as { status: string }).status === 'available'), 15_000, 'available again');
    await until(() => rt.protocol2389!.snapshot().ready, 10_000, 'ready again');
    expect((await get('/health')).status).toBe(200);
    const task = taskV1(id, { n: 9 });
    await c.client.publishAsync(`/control/agents/${id}/input`, JSON.stringify(task), { qos: 1 });
    await until(() => c.heard.some((h) => h.topic === `/conversations/${task['conversation_id'] as string}/${id}`), 10_000, 'the answer after the reconnect');
    expect(c.heard.filter((h) => h.topic.startsWith('/conversations/')).map((h) => h.json)).toEqual([{ response: { echo: { n: 9 } }, task_id: task['task_id'] }]);
    // The registry (the protocol's own connection) resubscribed too: it hears statuses again.
    const other = agentId('rv-other');
    await c.client.publishAsync(`/control/agents/${other}/status`, JSON.stringify({ agent_id: other, status: 'available', timestamp: new Date().toISOString(), capabilities: ['x'] }), { qos: 1, retain: true });
    await until(() => rt.protocol2389!.list().some((a) => a.id === other), 5_000, 'the registry to hear a status after the reconnect');
  }, 60_000);

  it('a call while the broker is gone: its signal still ends the wait', async () => {
    const { rt } = caller({}, broker.url);
    await rt.start();
    await broker.stop();
    await until(() => !rt.protocol2389!.snapshot().mqtt['connected'], 5_000, 'the disconnect');
    try {
      const started = Date.now();
      const outcome = await Promise.race([
        rt.protocol2389!.call({ agent: 'rv-nobody' }, 1, { signal: AbortSignal.timeout(300) }).then(
          () => 'resolved',
          () => 'rejected',
        ),
        sleep(3_000).then(() => 'still waiting'),
      ]);
      expect(outcome).toBe('rejected');
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(rt.protocol2389!.snapshot().tools).toMatchObject({ in_flight: 0 });
    } finally {
      await broker.start();
    }
  }, 30_000);
});

interface Agent {
  rt: Runtime;
  id: string;
  events: RoostEvent[];
  f: ForeignClient;
  replies(conversation: string): unknown[];
  task(extra?: Record<string, unknown>, input?: unknown): Record<string, unknown>;
}

/** A runtime exposing flow `work` as a fresh agent on the shared broker, with a foreign client listening. */
async function exposed(handler: (env: Envelope<{ task_id: string; input: unknown }>) => unknown, rtOptions: Record<string, unknown> = {}, flowOptions: Record<string, unknown> = {}, nodeOptions: Record<string, unknown> = {}): Promise<Agent> {
  const id = agentId('rv');
  used.push(id);
  const f = await foreign('/conversations/#', `/control/agents/${id}/status`);
  const { protocol2389, ...rest } = rtOptions as { protocol2389?: Record<string, unknown> };
  const rt = createRuntime({ logger: false, ...rest, protocol2389: { broker: MQTT_URL, agents: [{ id, flow: 'work' }], ...protocol2389 } });
  const events: RoostEvent[] = [];
  rt.on((e) => events.push(e));
  rt.flow({ name: 'work', edges: [node('run', handler, { retries: 0, ...nodeOptions }).to()], ...flowOptions });
  cleanups.push(() => rt.close());
  await rt.start();
  return {
    rt,
    id,
    events,
    f,
    replies: (conversation) => f.on(`/conversations/${conversation}/${id}`).map((h) => h.json),
    task: (extra = {}, input = { n: 1 }) => taskV1(id, input, extra),
  };
}

const inputOf = (a: Agent): string => `/control/agents/${a.id}/input`;

describe('malformed and edge-case input', () => {
  it('deeply nested input, a next that is an array, an empty payload, a missing input, non-UTF-8 bytes: answered or refused, never a crash', async () => {
    const a = await exposed((env) => ({ got: typeof env.payload.input }));
    // Deeply nested JSON (within 256 KiB).
    const deep = a.task();
    const depth = 60_000;
    const text = JSON.stringify({ ...deep, input: '__DEEP__' }).replace('"__DEEP__"', '['.repeat(depth) + ']'.repeat(depth));
    await a.f.publish(inputOf(a), text);
    await a.f.until(() => a.replies(deep['conversation_id'] as string).length > 0, 10_000, 'an answer to the deep task');
    const deepReply = a.replies(deep['conversation_id'] as string)[0] as Record<string, unknown>;
    expect(deepReply['task_id']).toBe(deep['task_id']);
    // A next that is an array.
    const arr = a.task({ next: [{ topic: '/control/agents/x/input' }] });
    await a.f.publish(inputOf(a), arr);
    await a.f.until(() => a.replies(arr['conversation_id'] as string).length > 0, 10_000, 'the array next refusal');
    expect(a.replies(arr['conversation_id'] as string)).toMatchObject([{ error: { code: 'invalid_input' }, task_id: arr['task_id'] }]);
    // An empty payload: nothing to answer, an event.
    await a.f.publish(inputOf(a), Buffer.alloc(0));
    // A missing input: the flow gets null.
    const missing = a.task();
    delete missing['input'];
    await a.f.publish(inputOf(a), missing);
    await a.f.until(() => a.replies(missing['conversation_id'] as string).length > 0, 10_000, 'the missing-input answer');
    expect(a.replies(missing['conversation_id'] as string)).toEqual([{ response: { got: 'object' }, task_id: missing['task_id'] }]);
    // Non-UTF-8 bytes inside a string: refused as invalid_input (it is not valid UTF-8 JSON).
    const bad = a.task({ instruction: 'XX' });
    const raw = Buffer.from(JSON.stringify(bad));
    const at = raw.indexOf('XX');
    raw[at] = 0xff;
    raw[at + 1] = 0xfe;
    await a.f.publish(inputOf(a), raw);
    await a.f.until(() => a.replies(bad['conversation_id'] as string).length > 0, 10_000, 'the non-UTF-8 refusal');
    expect(a.replies(bad['conversation_id'] as string)).toMatchObject([{ error: { code: 'invalid_input' }, task_id: bad['task_id'] }]);
    // Still answering.
    const ok = a.task();
    await a.f.publish(inputOf(a), ok);
    await a.f.until(() => a.replies(ok['conversation_id'] as string).length > 0, 10_000, 'a normal answer after all that');
    expect(a.events.filter((e) => e.type === 'agent2389_task' && (e as { reason: string | null }).reason === 'not_json')).toHaveLength(1);
  });

  it('conversation ids that cannot be a topic segment (huge, with / + #): refused with an event, no answer; the agent keeps answering', async () => {
    const a = await exposed(() => 'ok');
    for (const c of ['x'.repeat(5_000), 'a/b', 'a+b', 'a#b']) await a.f.publish(inputOf(a), a.task({ conversation_id: c }));
    const ok = a.task();
    await a.f.publish(inputOf(a), ok);
    await a.f.until(() => a.replies(ok['conversation_id'] as string).length > 0, 10_000, 'the answer');
    const rejected = a.events.filter((e) => e.type === 'agent2389_task' && (e as { outcome: string }).outcome === 'rejected');
    expect(rejected).toHaveLength(4);
    expect(a.f.heard.filter((h) => h.topic.startsWith('/conversations/') && !h.topic.includes(ok['conversation_id'] as string))).toEqual([]);
  });

  it('a duplicate while the first still runs, and an uppercase UUID task id: run once, answered once', async () => {
    let runs = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const a = await exposed(async () => {
      runs++;
      await gate;
      return 'done';
    });
    const t = a.task({ task_id: randomUUID().toUpperCase() });
    await a.f.publish(inputOf(a), t);
    await a.f.publish(inputOf(a), t);
    await until(() => a.events.some((e) => e.type === 'agent2389_task' && (e as { outcome: string }).outcome === 'duplicate'), 5_000, 'the duplicate');
    release();
    await a.f.until(() => a.replies(t['conversation_id'] as string).length > 0, 10_000, 'the answer');
    await sleep(300);
    expect(a.replies(t['conversation_id'] as string)).toEqual([{ response: 'done', task_id: t['task_id'] }]);
    expect(runs).toBe(1);
  });
});

describe('backpressure and pacing', () => {
  async function burst(a: Agent, n: number): Promise<Record<string, unknown>[]> {
    const tasks = Array.from({ length: n }, (_, i) => a.task({}, { i }));
    await Promise.all(tasks.map((t) => a.f.publish(inputOf(a), t)));
    return tasks;
  }
  const answered = (a: Agent, tasks: Record<string, unknown>[]): unknown[][] => tasks.map((t) => a.replies(t['conversation_id'] as string));

  it('many tasks into a slow node behind a small ingress queue: every task answered once with its result, no loss, no hang', async () => {
    const a = await exposed(
      async (env) => {
        await sleep(20);
        return { i: (env.payload.input as { i: number }).i };
      },
      {},
      { queueCapacity: 2 },
      { concurrency: 1 },
    );
    const tasks = await burst(a, 60);
    await a.f.until(() => answered(a, tasks).every((r) => r.length > 0), 30_000, 'every answer');
    await sleep(200);
    expect(answered(a, tasks)).toEqual(tasks.map((t) => [{ response: { i: (t['input'] as { i: number }).i }, task_id: t['task_id'] }]));
    expect(a.rt.protocol2389!.snapshot().tasks).toMatchObject({ received: 60, completed: 60, failed: 0, rejected: 0, processing: 0 });
  }, 40_000);

  it('the in-flight trace limit paces the intake instead of refusing tasks with internal_error', async () => {
    const a = await exposed(
      async () => {
        await sleep(20);
        return 'ok';
      },
      { limits: { maxInFlightTraces: 2 } },
      { queueCapacity: 16 },
      { concurrency: 1 },
    );
    const tasks = await burst(a, 20);
    await a.f.until(() => answered(a, tasks).every((r) => r.length > 0), 30_000, 'every answer');
    expect(answered(a, tasks).flat().filter((r) => 'error' in (r as object))).toEqual([]);
  }, 40_000);

  it('close() while tasks run, with a journal: the finished ones are answered, the unfinished ones are not answered with an error (they resume)', async () => {
    const store = `sqlite:${join(dir, `close-${randomUUID().slice(0, 6)}.db`)}`;
    const a = await exposed(
      async (env) => {
        const i = (env.payload.input as { i: number }).i;
        if (i >= 3) await sleep(60_000);
        return { i };
      },
      { store, drainTimeoutMs: 500 },
      {},
      { concurrency: 8 },
    );
    const tasks = await burst(a, 6);
    // All six accepted (journaled) first: the intake takes one packet at a time, so the quick
    // answers can be out before the last tasks are read, and a task read after close() began
    // is refused (not_accepted, answered internal_error), as it should be: it never ran.
    const accepted = (): number => a.events.filter((e) => e.type === 'agent2389_task' && e.outcome === 'accepted').length;
    await a.f.until(() => accepted() === 6, 10_000, 'all six accepted');
    await a.f.until(() => answered(a, tasks.slice(0, 3)).every((r) => r.length > 0), 10_000, 'the quick answers');
    await a.rt.close();
    await sleep(300);
    expect(answered(a, tasks.slice(0, 3)).map((r) => r.length)).toEqual([1, 1, 1]);
    expect(answered(a, tasks.slice(3)).flat()).toEqual([]);
  }, 30_000);
});

describe('the 2389 health server', () => {
  it('/metrics in the 2389 layout, with the counts after a few tasks', async () => {
    let n = 0;
    const a = await exposed(() => {
      n++;
      if (n === 2) throw new Error('boom');
      return 'ok';
    }, { protocol2389: { health: { port: 0 } } });
    const tasks = [a.task(), a.task(), a.task()];
    for (const t of tasks) await a.f.publish(inputOf(a), t);
    await a.f.publish(inputOf(a), { ...tasks[0] }); // a duplicate
    await a.f.publish(inputOf(a), a.task({ task_id: 'not-a-uuid' })); // rejected
    await a.f.until(() => tasks.every((t) => a.replies(t['conversation_id'] as string).length > 0), 10_000, 'the answers');
    // An answer is counted once its PUBACK is back, which may come after the client heard it.
    await until(() => {
      const t = a.rt.protocol2389!.snapshot().tasks;
      return t.rejected === 1 && t.duplicates === 1 && t.completed + t.failed === 3;
    }, 5_000, 'the counts');
    const port = a.rt.protocol2389!.healthPort!;
    const m = (await (await fetch(`http://127.0.0.1:${port}/metrics`)).json()) as Record<string, Record<string, unknown>>;
    expect(m['tasks']).toMatchObject({ received: 5, processing: 0, completed: 2, failed: 1, rejected: 1, current_pipeline_depth: 0, tasks_processing: 0 });
    expect(typeof m['tasks']!['avg_processing_time_ms']).toBe('number');
    expect(m['mqtt']).toMatchObject({ connected: true });
    expect(m['tools']).toBeTypeOf('object');
    expect(m['lifecycle']).toMatchObject({ uptime_seconds: expect.any(Number) });
    expect(m['uptime_seconds']).toEqual(expect.any(Number));
    const h = await fetch(`http://127.0.0.1:${port}/health`);
    expect(h.status).toBe(200);
    expect(await h.json()).toMatchObject({ status: 'healthy', checks: { mqtt: { status: 'healthy' }, task_processing: { status: 'healthy' } } });
    expect((await fetch(`http://127.0.0.1:${port}/ready`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${port}/live`)).status).toBe(200);
  });
});

describe('the client: a signal that aborts while the reply subscription is still pending', () => {
  it('ends the wait, and nothing stays in flight', async () => {
    const { Client2389 } = await import('../../src/protocol2389/client.js');
    // A connection whose SUBACK takes a while (a slow or reconnecting broker); publishes are accepted.
    const published: string[] = [];
    const fake = {
      connected: true,
      subscribeAsync: () => sleep(400).then(() => [{ topic: 't', qos: 1 }]),
      unsubscribe: () => undefined,
      publish: (topic: string, _payload: string, _o: unknown, cb: (e?: Error) => void) => {
        published.push(topic);
        cb();
      },
    };
    const client = new Client2389(fake as never, { registryExpiryMs: 15_000, publish: () => {}, count: () => {} });
    const started = Date.now();
    const outcome = await Promise.race([
      client.call({ agent: 'rv-slow-suback' }, 1, { signal: AbortSignal.timeout(50) }).then(
        () => 'resolved',
        () => 'rejected',
      ),
      sleep(1_500).then(() => 'still waiting'),
    ]);
    expect(outcome).toBe('rejected');
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(client.callStats()).toMatchObject({ in_flight: 0, aborted: 1 });
    expect(published).toEqual([]); // the task was not sent after its caller gave up
  });
});

describe('a long wait for room in the flow', () => {
  it('does not drop the connection by its keepalive: no false unavailable, no lost or repeated answers', async () => {
    const a = await exposed(
      async () => {
        await sleep(300);
        return 'ok';
      },
      { protocol2389: { keepaliveSeconds: 1 } },
      { queueCapacity: 1 },
      { concurrency: 1 },
    );
    const tasks = Array.from({ length: 15 }, () => a.task());
    await Promise.all(tasks.map((t) => a.f.publish(inputOf(a), t)));
    await a.f.until(() => tasks.every((t) => a.replies(t['conversation_id'] as string).length > 0), 20_000, 'every answer');
    await sleep(300);
    expect(tasks.map((t) => a.replies(t['conversation_id'] as string).length)).toEqual(tasks.map(() => 1));
    expect(a.f.on(`/control/agents/${a.id}/status`).map((h) => (h.json as { status: string }).status)).not.toContain('unavailable');
  }, 40_000);
});
