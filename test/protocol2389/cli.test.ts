/**
 * `[protocol2389]` and `[[agent2389]]` honoured by `roost serve` and `roost worker`, as a user runs
 * them: a foreign 2389 client (the raw `mqtt` package) sends tasks and reads the answers and the
 * status; the 2389-shaped health server answers in the 2389 JSON layout.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SERVE_APP, startServer, workDir, type Server } from '../helpers/cli.js';
import { MQTT_URL, requireBroker } from '../helpers/brokers.js';
import { ForeignClient, agentId, clearRetained, taskV1 } from './helpers.js';

const cleanups: (() => Promise<void> | void)[] = [];
const used: string[] = [];

beforeAll(() => requireBroker('mqtt', MQTT_URL));

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await clearRetained(used.splice(0));
});

function toml(id: string, extra = ''): string {
  return [
    `app = ${JSON.stringify(SERVE_APP)}`,
    '[store]',
    'url = "sqlite:roost.db"',
    '[protocol2389]',
    `broker = ${JSON.stringify(MQTT_URL)}`,
    'health_port = 0',
    '[[agent2389]]',
    `id = ${JSON.stringify(id)}`,
    'flow = "echo"',
    'capabilities = ["echo"]',
    'description = "echoes its input"',
    'heartbeat_s = 1',
    extra,
    '',
  ].join('\n');
}

async function started(text: string, args: readonly string[] = ['serve']): Promise<Server> {
  const d = workDir(text);
  const s = await startServer(d.dir, {}, 30_000, args);
  cleanups.push(async () => {
    if (s.child.exitCode === null) {
      s.signal('SIGTERM');
      await s.exited;
    }
    d.cleanup();
  });
  return s;
}

async function getJson(url: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(url);
  return { status: r.status, json: (await r.json()) as Record<string, unknown> };
}

describe('roost serve with [[agent2389]]', () => {
  it('answers 2389 tasks, serves the 2389 health and metrics, and says unavailable on SIGTERM', async () => {
    const id = agentId('serve');
    used.push(id);
    const foreign = await ForeignClient.connect();
    cleanups.push(() => foreign.close());
    await foreign.subscribe(`/control/agents/${id}/status`);
    await foreign.subscribe('/conversations/#');
    const s = await started(toml(id, 'payload = "input"'));
    const ready = s.lines.find((l) => typeof l['health2389Port'] === 'number')!;
    expect(ready['agents2389']).toEqual([id]);
    const health = `http://127.0.0.1:${String(ready['health2389Port'])}`;

    await foreign.until(() => foreign.on(`/control/agents/${id}/status`).some((h) => (h.json as { status?: string }).status === 'available'));
    const tasks = [taskV1(id, { n: 1 }), taskV1(id, 'text'), { ...taskV1(id, {}), task_id: 'nope' }];
    for (const t of tasks) await foreign.publish(`/control/agents/${id}/input`, t);
    const answer = (t: Record<string, unknown>): unknown => foreign.on(`/conversations/${String(t['conversation_id'])}/${id}`)[0]?.json;
    await foreign.until(() => tasks.every((t) => answer(t) !== undefined));
    expect(answer(tasks[0]!)).toEqual({ response: { n: 1 }, task_id: tasks[0]!['task_id'] });
    expect(answer(tasks[1]!)).toEqual({ response: 'text', task_id: tasks[1]!['task_id'] });
    expect(answer(tasks[2]!)).toMatchObject({ error: { code: 'invalid_input' }, task_id: 'nope' });

    const h = await getJson(`${health}/health`);
    expect(h.status).toBe(200);
    expect(h.json).toMatchObject({ status: 'healthy', agent_id: id, checks: { mqtt: { status: 'healthy' }, task_processing: { status: 'healthy', message: 'Recent task activity' } } });
    expect(typeof h.json['uptime_seconds']).toBe('number');
    expect((await getJson(`${health}/ready`)).status).toBe(200);
    expect((await getJson(`${health}/live`)).json).toEqual({ status: 'alive' });
    const m = await getJson(`${health}/metrics`);
    expect(m.json).toMatchObject({
      agent_id: id,
      tasks: { received: 3, processing: 0, tasks_processing: 0, completed: 2, failed: 0, rejected: 1, current_pipeline_depth: 0 },
      mqtt: { connected: true },
      tools: { total_executions: 0 },
      lifecycle: { uptime_seconds: expect.any(Number) as unknown },
    });
    expect(typeof (m.json['tasks'] as Record<string, unknown>)['avg_processing_time_ms']).toBe('number');
    expect(typeof m.json['uptime_seconds']).toBe('number');
    // Roost's own Prometheus metrics stay on the main port, with the 2389 counters.
    const prom = await (await fetch(`${s.url}/metrics`)).text();
    expect(prom).toMatch(new RegExp(`roost_agent2389_tasks_total\\{agent="${id}",outcome="completed"\\} 2`));
    expect(prom).toMatch(new RegExp(`roost_agent2389_rejected_total\\{agent="${id}",reason="invalid"\\} 1`));

    s.signal('SIGTERM');
    expect(await s.exited).toBe(0);
    await foreign.until(() => (foreign.on(`/control/agents/${id}/status`).at(-1)?.json as { status?: string } | undefined)?.status === 'unavailable');
  }, 60_000);
});

describe('roost worker with [[agent2389]]', () => {
  it('a worker of a fleet exposes its flow as a 2389 agent and answers its tasks', async () => {
    const id = agentId('worker');
    used.push(id);
    const foreign = await ForeignClient.connect();
    cleanups.push(() => foreign.close());
    await foreign.subscribe('/conversations/#');
    await foreign.subscribe(`/control/agents/${id}/status`);
    const namespace = `t2389${randomUUID().slice(0, 8)}`;
    const s = await started(toml(id, `[fleet]\ntransport = ${JSON.stringify(MQTT_URL)}\nnamespace = "${namespace}"\nhost = "slow/wait"\n`), ['worker']);
    expect(s.lines.find((l) => Array.isArray(l['agents2389']))?.['agents2389']).toEqual([id]);
    await foreign.until(() => foreign.on(`/control/agents/${id}/status`).some((h) => (h.json as { status?: string }).status === 'available'));
    const task = taskV1(id, { from: 'foreign' });
    await foreign.publish(`/control/agents/${id}/input`, task);
    await foreign.until(() => foreign.on(`/conversations/${String(task['conversation_id'])}/${id}`).length > 0);
    // The default payload is the task (the echo flow returns it whole).
    expect(foreign.on(`/conversations/${String(task['conversation_id'])}/${id}`)[0]!.json).toMatchObject({
      response: { task_id: task['task_id'], conversation_id: task['conversation_id'], topic: `/control/agents/${id}/input`, instruction: 'do it', input: { from: 'foreign' } },
      task_id: task['task_id'],
    });
  }, 60_000);
});
