/**
 * `roost serve` as an operator runs it (a child process, a real port, an SQLite journal in a fresh
 * directory): configuration errors exit 2 before anything is opened; SIGTERM drains (readiness
 * 503, admission closed, work in flight finishes) and exits 0; a grace period that runs out
 * leaves the work in the journal; a second signal exits at once; and the next start resumes
 * what was cut off.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SERVE_APP, roost, startServer, workDir, type Server } from '../helpers/cli.js';
import { eventually } from '../helpers/runtime.js';

const dirs: { cleanup(): void }[] = [];
const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.child.kill('SIGKILL');
    await s.exited;
  }
  for (const d of dirs.splice(0)) d.cleanup();
});

function dir(extra = ''): { dir: string; file: string } {
  const d = workDir(`app = "${SERVE_APP}"\n[store]\nurl = "sqlite:.roost/roost.db"\n${extra}`);
  dirs.push(d);
  return d;
}

async function serve(d: { dir: string }, env: Record<string, string> = {}): Promise<Server> {
  const s = await startServer(d.dir, { ROOST_OWNER: 'serve-test', ...env });
  servers.push(s);
  return s;
}

async function post(url: string, body: unknown, query = ''): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(`${url}${query}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, json: (await r.json()) as Record<string, unknown> };
}

async function status(url: string): Promise<number> {
  return (await fetch(url)).status;
}

describe('roost serve: configuration errors exit 2 before anything is opened', () => {
  it('an unknown key in the file, with its line', () => {
    const d = dir('[http]\nport = 0\nprot = 9\n');
    const r = roost(['serve'], { cwd: d.dir });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('ROOST_ERR_CONFIG_INVALID');
    expect(r.stderr).toContain(`${d.file}:6: http.prot: unknown key`);
    expect(existsSync(join(d.dir, '.roost'))).toBe(false); // the journal was never opened
  });

  it('a value out of range in the file, and a bad variable', () => {
    const d = dir('[http]\nport = 70000\n');
    const file = roost(['serve'], { cwd: d.dir });
    expect(file.status).toBe(2);
    expect(file.stderr).toContain(`${d.file}:5: http.port: expected an integer from 0 to 65535, got 70000`);
    const ok = dir();
    const env = roost(['serve'], { cwd: ok.dir, env: { ROOST_HTTP_PORT: 'eighty' } });
    expect(env.status).toBe(2);
    expect(env.stderr).toMatch(/ROOST_HTTP_PORT: http\.port: expected an integer from 0 to 65535, got "eighty"/);
    const unset = dir('[runtime]\nowner = "${POD_NAME}"\n');
    const r = roost(['serve'], { cwd: unset.dir });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('runtime.owner: ${POD_NAME} is not set');
    expect(existsSync(join(ok.dir, '.roost'))).toBe(false);
  });

  it('an app that is missing or exports no function: ROOST_ERR_APP_INVALID, exit 2', () => {
    const missing = workDir('app = "nowhere.ts"\n');
    dirs.push(missing);
    const r = roost(['serve'], { cwd: missing.dir, env: { ROOST_HTTP_PORT: '0', ROOST_STORE_URL: 'memory:' } });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/ROOST_ERR_APP_INVALID: app .*nowhere\.ts: no such file/);
    const none = workDir(null);
    dirs.push(none);
    const r2 = roost(['serve'], { cwd: none.dir, env: { ROOST_HTTP_PORT: '0', ROOST_STORE_URL: 'memory:' } });
    expect(r2.status).toBe(2);
    expect(r2.stderr).toContain('app: expected a path to the application module');
  });
});

describe('roost serve: lifecycle', () => {
  it('serves, and on SIGTERM turns readiness 503, refuses new work, finishes the work in flight, and exits 0', async () => {
    const d = dir();
    const s = await serve(d);
    expect(s.lines.find((l) => l['audit'] === 'config_loaded')).toMatchObject({ file: d.file });
    expect(await status(`${s.url}/health/ready`)).toBe(200);
    expect(await status(`${s.url}/health/startup`)).toBe(200);
    const slow = await post(`${s.url}/v1/flows/slow/tasks`, { input: { ms: 1_500 } });
    expect(slow.status).toBe(202);
    s.signal('SIGTERM');
    await eventually(() => status(`${s.url}/health/ready`), (code) => code === 503, 5_000, 'readiness 503');
    expect(await status(`${s.url}/health/live`)).toBe(200);
    const refused = await post(`${s.url}/v1/flows/echo/tasks`, { input: 1 });
    expect(refused.status).toBe(503);
    expect(refused.json['error']).toMatchObject({ code: 'ROOST_ERR_DRAINING' });
    expect(await s.exited).toBe(0);
    expect(s.lines.find((l) => l['audit'] === 'shutdown_begin')).toMatchObject({ signal: 'SIGTERM', inFlight: 1 });
    expect(s.lines.find((l) => l['audit'] === 'shutdown_complete')).toMatchObject({ unfinished: 0 });
    // The task finished before the exit: the journal has its result.
    const trace = roost(['trace', String(slow.json['traceId'])], { cwd: d.dir });
    expect(trace.stdout).toContain('trace_success');
  }, 30_000);

  it('a grace period that runs out leaves the task in the journal (exit 0); the next start resumes it', async () => {
    const d = dir('[shutdown]\ngrace_ms = 300\n');
    const s = await serve(d);
    const slow = await post(`${s.url}/v1/flows/slow/tasks`, { input: { ms: 2_000 } });
    s.signal('SIGTERM');
    expect(await s.exited).toBe(0);
    expect(s.lines.find((l) => l['audit'] === 'shutdown_complete')).toMatchObject({ unfinished: 1 });
    const again = await serve(d);
    const done = await eventually(
      async () => (await fetch(`${again.url}/v1/traces/${String(slow.json['traceId'])}`)).json() as Promise<Record<string, unknown>>,
      (t) => t['status'] === 'succeeded',
      15_000,
      'the resumed trace to succeed',
    );
    expect(done['result']).toEqual({ done: 2_000 });
  }, 45_000);

  it('a second signal exits at once (1); the cut-off task resumes on the next start', async () => {
    const d = dir();
    const s = await serve(d);
    const slow = await post(`${s.url}/v1/flows/slow/tasks`, { input: { ms: 3_000 } });
    s.signal('SIGTERM');
    await eventually(() => status(`${s.url}/health/ready`), (code) => code === 503, 5_000, 'draining');
    const at = Date.now();
    s.signal('SIGINT');
    expect(await s.exited).toBe(1);
    expect(Date.now() - at).toBeLessThan(2_500); // well before the task's 3 s
    expect(s.lines.find((l) => l['audit'] === 'shutdown_forced')).toBeDefined();
    const again = await serve(d);
    const done = await eventually(
      async () => (await fetch(`${again.url}/v1/traces/${String(slow.json['traceId'])}`)).json() as Promise<Record<string, unknown>>,
      (t) => t['status'] === 'succeeded',
      20_000,
      'the resumed trace to succeed',
    );
    expect(done['result']).toEqual({ done: 3_000 });
  }, 45_000);
});
