/**
 * `roost monitor` against the machine's Mosquitto, with this test as a foreign 2389 client (the
 * raw `mqtt` package, no Roost code on the sending side): each test has its own random agent and
 * conversation ids, and every retained message it publishes is cleared afterwards (the shared
 * broker keeps them on disk). Other suites' 2389 traffic may cross the same broker, so every
 * monitor here is narrowed by `--agent-id` (or asserts on its own ids only).
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { monitorCommand, type MonitorArgs } from '../../src/cli/monitor.js';
import { MQTT_URL, requireBroker } from '../helpers/brokers.js';
import { makeCerts, type Certs } from '../helpers/certs.js';
import { MAIN, TSX, cleanEnv, roostAsync } from '../helpers/cli.js';
import { privateBroker, type PrivateBroker } from '../helpers/private-broker.js';
import { until } from '../helpers/runtime.js';

let client: MqttClient;
beforeAll(async () => {
  await requireBroker('mqtt', MQTT_URL);
  client = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, clientId: `foreign-2389-${randomUUID().slice(0, 8)}` });
});
afterAll(async () => {
  await client.endAsync();
});

/** Retained topics published by the running test: cleared (an empty retained payload) after it. */
const retained = new Set<string>();
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  for (const topic of retained) await client.publishAsync(topic, Buffer.alloc(0), { qos: 1, retain: true });
  retained.clear();
});

const ids = (): { agent: string; other: string; conversation: string } => ({
  agent: `mon-${randomUUID().slice(0, 8)}`,
  other: `mon-other-${randomUUID().slice(0, 8)}`,
  conversation: `conv-${randomUUID().slice(0, 8)}`,
});

async function publish(topic: string, payload: unknown, options: { retain?: boolean; expiry?: number } = {}): Promise<void> {
  if (options.retain === true) retained.add(topic);
  const bytes = Buffer.isBuffer(payload) ? payload : Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload));
  await client.publishAsync(topic, bytes, {
    qos: 1,
    retain: options.retain === true,
    ...(options.expiry === undefined ? {} : { properties: { messageExpiryInterval: options.expiry } }),
  });
}

const status = (agent: string, state: 'available' | 'unavailable' = 'available') => ({
  agent_id: agent,
  status: state,
  timestamp: new Date().toISOString(),
  capabilities: ['summarize', 'translate'],
  description: 'A test agent that summarizes',
});

const v1 = (agent: string, conversation: string, instruction = 'Summarize this') => ({
  task_id: randomUUID(),
  conversation_id: conversation,
  topic: `/control/agents/${agent}/input`,
  instruction,
  input: { text: 'hello' },
  next: { topic: '/control/agents/writer/input', instruction: 'write', next: { topic: '/control/agents/editor/input', next: null } },
});

const v2 = (agent: string, conversation: string) => ({
  ...v1(agent, conversation, 'Translate it'),
  version: '2.0',
  next: null,
  context: {
    original_query: 'q',
    steps_completed: [
      { agent_id: 'a', action: 'read', timestamp: new Date().toISOString() },
      { agent_id: 'b', action: 'write', timestamp: new Date().toISOString() },
    ],
    iteration_count: 2,
  },
  routing_trace: [{ from_agent: 'a', to_agent: agent, reason: 'capability', timestamp: new Date().toISOString(), step_number: 1 }],
});

/** A monitor run in this process (io-injected), with its output. */
interface Run {
  readonly out: string[];
  readonly err: string[];
  readonly code: Promise<number>;
  stop(): void;
}

/** Starts `monitorCommand(args)` and waits until it watches (its subscriptions are acknowledged). */
async function monitor(args: MonitorArgs, env: Record<string, string> = {}): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const abort = new AbortController();
  const code = monitorCommand({ broker: MQTT_URL, ...args }, { env, out: (l) => out.push(l), err: (l) => err.push(l), signal: abort.signal });
  let ended = false;
  void code.then(() => (ended = true));
  cleanups.push(async () => {
    abort.abort();
    await code;
  });
  await until(() => ended || err.some((l) => l.startsWith('monitor: watching')), 10_000, `the monitor to watch (stderr: ${err.join(' | ')})`);
  return { out, err, code, stop: () => abort.abort() };
}

/** Resolves with the exit code, failing after `ms` (generous: ≥ 2× what it needs). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms))]);
}

const json = (lines: readonly string[]): Record<string, unknown>[] => lines.map((l) => JSON.parse(l) as Record<string, unknown>);

describe('roost monitor', { timeout: 60_000 }, () => {
  it('pretty: a retained available status (marked retained), inputs v1 and v2, a response, an error and progress, each with its facts', async () => {
    const { agent, conversation } = ids();
    await publish(`/control/agents/${agent}/status`, status(agent), { retain: true, expiry: 3600 });
    const run = await monitor({ agentId: agent, count: '7' });
    const first = v1(agent, conversation);
    const second = v2(agent, conversation);
    await publish(`/control/agents/${agent}/input`, first);
    await publish(`/control/agents/${agent}/input`, second);
    await publish(`/conversations/${conversation}/${agent}`, { response: 'A short summary', task_id: first.task_id });
    await publish(`/conversations/${conversation}/${agent}`, { error: { code: 'llm_error', message: 'the model timed out' }, task_id: second.task_id });
    await publish(`/control/agents/${agent}/progress`, { agent_id: agent, event_type: 'task_start', task_id: first.task_id, conversation_id: conversation, message: 'Starting task' });
    await publish(`/control/agents/${agent}/progress/tools`, { agent_id: agent, event_type: 'tool_call', task_id: first.task_id, message: 'web_search' });
    expect(await within(run.code, 20_000, 'the monitor to print 7 messages')).toBe(0);
    const text = run.out.join('\n');
    const head = (kind: string) => run.out.filter((l) => new RegExp(`^\\S+Z ${kind}\\s`).test(l));
    expect(head('STATUS')).toEqual([expect.stringMatching(new RegExp(`agent=${agent} available capabilities=summarize,translate retained expires-in=\\d+s$`))]);
    expect(text).toContain('    description: A test agent that summarizes');
    const inputs = head('INPUT');
    expect(inputs).toHaveLength(2);
    expect(inputs[0]).toContain(`agent=${agent} conversation=${conversation} task=${first.task_id.slice(0, 8)} v1 depth=2 next=/control/agents/writer/input`);
    expect(inputs[1]).toContain(`task=${second.task_id.slice(0, 8)} v2 depth=0 steps=2 routing=1`);
    expect(text).toContain('    instruction: Summarize this');
    expect(text).toContain('    instruction: Translate it');
    expect(head('RESPONSE')).toEqual([expect.stringContaining(`agent=${agent} conversation=${conversation} task=${first.task_id.slice(0, 8)}`)]);
    expect(text).toContain('    response: A short summary');
    expect(head('ERROR')).toEqual([expect.stringContaining(`task=${second.task_id.slice(0, 8)} code=llm_error`)]);
    expect(text).toContain('    message: the model timed out');
    const progress = head('PROGRESS');
    expect(progress).toEqual([expect.stringContaining('event=task_start'), expect.stringContaining('channel=tools event=tool_call')]);
    expect(progress[0]).toContain(`conversation=${conversation}`);
    // Live messages are not marked retained; the retained status is the only one.
    expect(run.out.filter((l) => l.includes(' retained'))).toHaveLength(1);
  });

  it('json: one object per line with the full payload (a 200 KiB response too, which pretty trims); compact: one line per message', async () => {
    const { agent, conversation } = ids();
    await publish(`/control/agents/${agent}/status`, status(agent), { retain: true });
    const big = 'x'.repeat(200 * 1024);
    const task = v2(agent, conversation);
    const runs = await Promise.all([monitor({ agentId: agent, format: 'json', count: '3' }), monitor({ agentId: agent, format: 'compact', count: '3' }), monitor({ agentId: agent, count: '3' })]);
    await publish(`/control/agents/${agent}/input`, task);
    await publish(`/conversations/${conversation}/${agent}`, { response: big, task_id: task.task_id });
    const codes = await within(Promise.all(runs.map((r) => r.code)), 20_000, 'three monitors');
    expect(codes).toEqual([0, 0, 0]);
    const [asJson, compact, pretty] = runs;

    expect(asJson.out).toHaveLength(3);
    const [st, input, response] = json(asJson.out) as [Record<string, unknown>, Record<string, unknown>, Record<string, unknown>];
    expect(st).toMatchObject({ kind: 'status', topic: `/control/agents/${agent}/status`, agent_id: agent, conversation_id: null, retained: true, status: 'available', payload: expect.objectContaining({ capabilities: ['summarize', 'translate'] }) });
    expect(Date.parse(String(st['ts']))).not.toBeNaN();
    expect(input).toMatchObject({ kind: 'input', agent_id: agent, conversation_id: conversation, task_id: task.task_id, retained: false, version: 2, depth: 0, steps: 2, routing: 1, payload: task });
    expect(response).toMatchObject({ kind: 'response', agent_id: agent, conversation_id: conversation, task_id: task.task_id });
    expect((response['payload'] as { response: string }).response).toBe(big);

    expect(compact.out).toHaveLength(3);
    expect(compact.out[0]).toMatch(new RegExp(`^\\d\\d:\\d\\d:\\d\\d\\.\\d{3} status ${agent} - - available capabilities=summarize,translate retained "A test agent that summarizes"$`));
    expect(compact.out[1]).toMatch(new RegExp(`^\\S+ input ${agent} ${conversation} ${task.task_id.slice(0, 8)} v2 depth=0 steps=2 routing=1 "Translate it"$`));
    expect(compact.out[2]).toMatch(new RegExp(`^\\S+ response ${agent} ${conversation} ${task.task_id.slice(0, 8)} "x+…"$`));
    expect(compact.out[2]!.length).toBeLessThan(200);

    const preview = pretty.out.find((l) => l.startsWith('    response: '));
    expect(preview).toMatch(/^ {4}response: x+…$/);
    expect(preview!.length).toBeLessThanOrEqual(220);
    expect(pretty.out.every((l) => l.length < 400)).toBe(true);
  });

  it('filters: another agent\'s messages and another conversation\'s are not printed; statuses are not watched with --conversation-id', async () => {
    const { agent, other, conversation } = ids();
    const elsewhere = `${conversation}-elsewhere`;
    await publish(`/control/agents/${agent}/status`, status(agent), { retain: true });
    const byAgent = await monitor({ agentId: agent, format: 'json', durationMs: '3000' });
    const both = await monitor({ agentId: agent, conversationId: conversation, format: 'json', count: '3' });
    const byConversation = await monitor({ mode: 'conversations', conversationId: conversation, format: 'json', count: '2' });
    // Not theirs first: another agent, another conversation…
    await publish(`/control/agents/${other}/input`, v1(other, conversation, 'for the other agent'));
    await publish(`/control/agents/${agent}/input`, v1(agent, elsewhere, 'another conversation'));
    await publish(`/conversations/${conversation}/${other}`, { response: 'the other agent answers', task_id: randomUUID() });
    await publish(`/conversations/${elsewhere}/${agent}`, { response: 'in another conversation', task_id: randomUUID() });
    await publish(`/control/agents/${agent}/progress`, { event_type: 'task_start', conversation_id: elsewhere, message: 'elsewhere' });
    // …then theirs.
    await publish(`/control/agents/${agent}/input`, v1(agent, conversation, 'mine'));
    await publish(`/conversations/${conversation}/${agent}`, { response: 'my answer', task_id: randomUUID() });
    await publish(`/control/agents/${agent}/progress`, { event_type: 'task_complete', conversation_id: conversation, message: 'mine too' });

    expect(await within(both.code, 20_000, '--agent-id with --conversation-id')).toBe(0);
    const seen = json(both.out);
    expect(seen.map((m) => m['kind'])).toEqual(['input', 'response', 'progress']);
    expect(seen.every((m) => m['agent_id'] === agent && m['conversation_id'] === conversation)).toBe(true);
    expect(both.err.join('\n')).not.toContain('/status');

    expect(await within(byConversation.code, 20_000, '--mode conversations --conversation-id')).toBe(0);
    expect(json(byConversation.out).map((m) => [m['agent_id'], (m['payload'] as { response: string }).response])).toEqual([
      [other, 'the other agent answers'],
      [agent, 'my answer'],
    ]);

    expect(await within(byAgent.code, 20_000, '--agent-id for 3 s')).toBe(0);
    const mine = json(byAgent.out);
    expect(mine.every((m) => m['agent_id'] === agent)).toBe(true);
    expect(mine.map((m) => m['kind'])).toEqual(['status', 'input', 'response', 'progress', 'input', 'response', 'progress']);
  });

  it('never crashes on bad input: not JSON, binary, a cleared retained status, an oversized payload, a wrong-typed envelope; it keeps going', async () => {
    const { agent, conversation } = ids();
    const run = await monitor({ agentId: agent, format: 'json', count: '7' });
    await publish(`/control/agents/${agent}/status`, status(agent), { retain: true });
    await publish(`/control/agents/${agent}/status`, Buffer.alloc(0), { retain: true }); // a status cleared
    await publish(`/control/agents/${agent}/input`, '{"task_id": ');
    await publish(`/control/agents/${agent}/input`, Buffer.from([0xff, 0xfe, 0x00, 0x1b, 0x9b]));
    await publish(`/control/agents/${agent}/input`, { task_id: 42, conversation_id: conversation, topic: `/control/agents/${agent}/input` });
    await publish(`/conversations/${conversation}/${agent}`, `{"response":"${'y'.repeat(300 * 1024)}"}`);
    await publish(`/conversations/${conversation}/${agent}`, { response: { ok: true }, task_id: randomUUID() });
    expect(await within(run.code, 20_000, 'seven messages')).toBe(0);
    const got = json(run.out);
    expect(got.map((m) => m['kind'])).toEqual(['status', 'cleared', 'invalid', 'invalid', 'invalid', 'invalid', 'response']);
    expect(got[2]).toMatchObject({ problem: expect.stringMatching(/^not JSON/), text: '{"task_id":', payload: null });
    expect(got[3]).toMatchObject({ problem: expect.stringMatching(/^not UTF-8/), payload: null });
    expect(got[4]).toMatchObject({ problem: 'task_id: expected a string, got 42', conversation_id: conversation });
    expect(got[5]).toMatchObject({ problem: expect.stringMatching(/over the 2389 packet cap/), payload: null });
    expect(got[6]).toMatchObject({ payload: { response: { ok: true } } });
  });

  it('as a process: `roost monitor` (broker from $ROOST_2389_BROKER) prints what it sees, hides the password, and SIGINT ends it with 0', async () => {
    const { agent, conversation } = ids();
    const secret = `pw-${randomUUID()}`;
    const child = spawn(process.execPath, ['--import', TSX, MAIN, 'monitor', '--agent-id', agent, '--format', 'compact', '--username', 'watcher'], {
      env: cleanEnv({ ROOST_2389_BROKER: MQTT_URL.replace('mqtt://', 'mqtt://watcher:url-secret@'), MQTT_PASSWORD: secret }),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    cleanups.push(async () => {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
    });
    await until(() => stderr.includes('monitor: watching') || child.exitCode !== null, 30_000, `roost monitor to watch (stderr: ${stderr})`);
    expect(stderr).toContain(`watching mqtt://watcher:***@127.0.0.1:1883 (mode all, agent ${agent})`);
    const task = v1(agent, conversation);
    await publish(`/control/agents/${agent}/input`, task);
    await until(() => stdout.includes(task.task_id.slice(0, 8)), 10_000, 'the input printed');
    child.kill('SIGINT');
    expect(await within(exited, 10_000, 'the exit after SIGINT')).toBe(0);
    expect(stdout).toMatch(new RegExp(`^\\S+ input ${agent} ${conversation} ${task.task_id.slice(0, 8)} v1 depth=2`, 'm'));
    expect(stdout + stderr).not.toContain(secret);
    expect(stdout + stderr).not.toContain('url-secret');
  });

  it('an unreachable broker exits 1 naming host:port; bad usage exits 2 naming the flag', async () => {
    const down = await roostAsync(['monitor', '--broker-host', '127.0.0.1', '--broker-port', '1', '--count', '1']);
    expect(down.status).toBe(1);
    expect(down.stderr).toContain('monitor: cannot connect to mqtt://127.0.0.1:1: nothing accepts connections at 127.0.0.1:1');
    const usage = async (args: MonitorArgs, env: Record<string, string> = {}) => {
      const err: string[] = [];
      const code = await monitorCommand(args, { env, out: () => {}, err: (l) => err.push(l) });
      return { code, err: err.join('\n') };
    };
    const cases: [MonitorArgs, string][] = [
      [{ mode: 'everything' }, '--mode: expected one of all, availability, conversations, inputs, progress, got "everything"'],
      [{ format: 'yaml' }, '--format: expected one of pretty, compact, json'],
      [{ agentId: 'a/b' }, '--agent-id'],
      [{ conversationId: 'c/#' }, '--conversation-id'],
      [{ mode: 'availability', conversationId: 'c1' }, 'statuses name no conversation'],
      [{ broker: MQTT_URL, brokerPort: '1883' }, 'alternatives'],
      [{ brokerPort: '70000' }, '--broker-port: expected an integer from 1 to 65535, got "70000"'],
      [{ broker: 'http://127.0.0.1:1883' }, '--broker: expected an mqtt:// or mqtts:// URL'],
      [{ broker: MQTT_URL, tls: true }, '--tls'],
      [{ broker: MQTT_URL, ca: '/nonexistent.pem' }, '--ca: TLS is off'],
      [{ tls: true, ca: '/nonexistent/ca.pem' }, '--ca: cannot read /nonexistent/ca.pem'],
      [{ count: '0' }, '--count: expected an integer from 1'],
      [{ durationMs: 'soon' }, '--duration-ms'],
    ];
    for (const [args, message] of cases) {
      const r = await usage(args);
      expect(r.code, JSON.stringify(args)).toBe(2);
      expect(r.err).toContain(message);
    }
    const cli = await roostAsync(['monitor', '--format', 'xml']);
    expect(cli.status).toBe(2);
    expect(cli.stderr).toContain('--format');
  });
});

describe('roost monitor with credentials and TLS (private Mosquitto)', { timeout: 60_000 }, () => {
  let certs: Certs;
  let auth: PrivateBroker;
  let tls: PrivateBroker;
  beforeAll(async () => {
    certs = makeCerts();
    [auth, tls] = await Promise.all([privateBroker('mosquitto', undefined, { auth: { user: 'watcher', password: 'right-password' } }), privateBroker('mosquitto', certs)]);
  });
  afterAll(async () => {
    await Promise.allSettled([auth.dispose(), tls.dispose()]);
    certs.cleanup();
  });

  it('the password from $MQTT_PASSWORD is used (a wrong one exits 1 and says so, without printing it)', async () => {
    const wrong: string[] = [];
    const code = await monitorCommand({ broker: auth.url, username: 'watcher', count: '1' }, { env: { MQTT_PASSWORD: 'wrong-password' }, out: () => {}, err: (l) => wrong.push(l) });
    expect(code).toBe(1);
    expect(wrong.join('\n')).toContain(`refused the credentials`);
    expect(wrong.join('\n')).not.toContain('wrong-password');
    const run = await monitor({ broker: auth.url, username: 'watcher', mode: 'availability', format: 'json', count: '1' }, { MQTT_PASSWORD: 'right-password' });
    const pub = await mqtt.connectAsync(auth.url, { protocolVersion: 5, username: 'watcher', password: 'right-password' });
    await pub.publishAsync('/control/agents/private-agent/status', JSON.stringify(status('private-agent')), { qos: 1 });
    await pub.endAsync();
    expect(await within(run.code, 10_000, 'the status')).toBe(0);
    expect(json(run.out)[0]).toMatchObject({ kind: 'status', agent_id: 'private-agent', status: 'available' });
  });

  it('--tls with --ca, --cert and --key (host and port given apart); a wrong CA exits 1 and says check --ca', async () => {
    const files = { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey };
    const run = await monitor({ broker: undefined, brokerHost: '127.0.0.1', brokerPort: String(tls.port), tls: true, ...files, mode: 'inputs', format: 'json', count: '1' });
    expect(run.err.join('\n')).toContain(`watching mqtts://127.0.0.1:${tls.port}`);
    const pub = await mqtt.connectAsync(tls.url, { protocolVersion: 5, ca: readPem(certs.ca), cert: readPem(certs.clientCert), key: readPem(certs.clientKey) });
    const task = v1('tls-agent', 'tls-conversation');
    await pub.publishAsync('/control/agents/tls-agent/input', JSON.stringify(task), { qos: 1 });
    await pub.endAsync();
    expect(await within(run.code, 10_000, 'the input')).toBe(0);
    expect(json(run.out)[0]).toMatchObject({ kind: 'input', task_id: task.task_id });

    const err: string[] = [];
    const code = await monitorCommand({ broker: tls.url, ...files, ca: certs.otherCa, count: '1' }, { env: {}, out: () => {}, err: (l) => err.push(l) });
    expect(code).toBe(1);
    expect(err.join('\n')).toMatch(/TLS to 127\.0\.0\.1:\d+ failed .*check --ca/);
  });
});

function readPem(file: string): string {
  return readFileSync(file, 'utf8');
}
