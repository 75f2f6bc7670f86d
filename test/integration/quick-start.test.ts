/**
 * The README's main job, as a new user runs it: `npm start` is `roost serve` with the repository's
 * `roost.toml` (the example fleet on the SQLite journal), and the `curl` calls the README shows
 * answer as it says. Run here in a fresh working directory (so the journal is a new one) on a
 * free port.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, workDir, type Server } from '../helpers/cli.js';
import { eventually } from '../helpers/runtime.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const readme = readFileSync(`${root}README.md`, 'utf8');
const pkg = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { scripts: Record<string, string> };

const work = workDir(null);
let server: Server;
beforeAll(async () => {
  server = await startServer(work.dir, { ROOST_CONFIG: `${root}roost.toml`, ROOST_OWNER: 'quick-start-test' });
});
afterAll(async () => {
  server.signal('SIGTERM');
  await server.exited;
  work.cleanup();
});

async function post(path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, json: (await r.json()) as Record<string, unknown> };
}

describe('the README quick start', () => {
  it('has exactly two command lines: npm start serves, npm test tests', () => {
    const block = /## Quick start\n\n```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
    const commands = block.split('\n').filter((l) => l.trim() !== '').map((l) => l.split('#')[0]!.trim());
    expect(commands).toEqual(['npm ci && npm start', 'npm ci && npm test']);
    expect(pkg.scripts['start']).toMatch(/main\.ts serve$/);
    expect(readFileSync(`${root}roost.toml`, 'utf8')).toMatch(/^app = "examples\/fleet\.ts"$/m);
  });

  it('serves the example fleet on the SQLite journal', async () => {
    const health = await fetch(`${server.url}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'pass', score: 1 });
    const flows = (await (await fetch(`${server.url}/v1/flows`)).json()) as { flows: { name: string }[] };
    expect(flows.flows.map((f) => f.name).sort()).toEqual(['echo', 'research', 'triage']);
    const serving = server.lines.find((l) => String(l['msg']).startsWith('roost serving'))!;
    expect(serving['store']).toBe('durable');
  });

  it('answers the calls the README shows', async () => {
    const t1 = await post('/v1/flows/triage/tasks?wait=5000', { input: { id: 'T-1', text: 'I was charged twice, please refund' } });
    expect(t1.status).toBe(200);
    expect(t1.json).toMatchObject({ flow: 'triage', tenant: 'default', status: 'succeeded', result: { ticket: 'T-1', category: 'billing' } });

    const t2 = await post('/v1/flows/triage/tasks', { input: { id: 'T-2' } });
    expect(t2.status).toBe(202);
    const failed = await eventually(
      async () => (await (await fetch(`${server.url}/v1/traces/${String(t2.json['traceId'])}`)).json()) as Record<string, unknown>,
      (t) => t['status'] !== 'running',
      10_000,
      'T-2 to end',
    );
    expect(failed).toMatchObject({ status: 'failed', error: { code: 'ROOST_ERR_VALIDATION' } });
    const letters = (await (await fetch(`${server.url}/v1/dead-letters`)).json()) as { deadLetters: { traceId: string }[] };
    expect(letters.deadLetters.map((d) => d.traceId)).toContain(t2.json['traceId']);

    const research = await post('/v1/flows/research/tasks?wait=5000', { input: { topic: 'bounded queues' } });
    expect(research.json).toMatchObject({ status: 'succeeded', result: { sources: 2 } });

    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/^roost_tasks_finished_total\{flow="triage",status="succeeded"\} 1$/m);
    expect(metrics).toMatch(/^roost_tasks_finished_total\{flow="triage",status="failed"\} 1$/m);
  });
});
