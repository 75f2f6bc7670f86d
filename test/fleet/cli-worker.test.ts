/**
 * `roost serve` and `roost worker` as a user runs them, from one app and the [fleet] table: the
 * server sends its remote node to the worker over the real broker, and they share PostgreSQL.
 */
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MQTT_URL, requireBroker } from '../helpers/brokers.js';
import { roost, startServer, workDir, type Server } from '../helpers/cli.js';
import { assertPgReachable, dropSchemas, freshPgUrl } from '../helpers/postgres.js';

const APP = fileURLToPath(new URL('../fixtures/fleet-cli-app.ts', import.meta.url));
const servers: Server[] = [];
const dirs: { cleanup(): void }[] = [];

beforeAll(async () => {
  await requireBroker('mqtt', MQTT_URL);
  await assertPgReachable();
});
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.signal('SIGTERM');
    await s.exited;
  }
  for (const d of dirs.splice(0)) d.cleanup();
});
afterAll(dropSchemas);

function config(store: string, ns: string, extra: string): string {
  return `app = ${JSON.stringify(APP)}\n[store]\nurl = ${JSON.stringify(store)}\n[fleet]\ntransport = ${JSON.stringify(MQTT_URL)}\nnamespace = "${ns}"\nlease_ms = 2000\n${extra}\n[log]\nlevel = "info"\n`;
}

describe('roost worker', () => {
  it('runs the node the server sends to the fleet', async () => {
    const store = freshPgUrl('cliworker');
    const ns = `cw${randomBytes(4).toString('hex')}`;
    const serverDir = workDir(config(store, ns, 'remote = "job/work"'));
    const workerDir = workDir(config(store, ns, 'host = "job/work"'));
    dirs.push(serverDir, workerDir);
    const server = await startServer(serverDir.dir);
    servers.push(server);
    const worker = await startServer(workerDir.dir, {}, 30_000, ['worker', '--nodes', 'job/work']);
    servers.push(worker);
    const res = await fetch(`${server.url}/v1/flows/job/tasks?wait=20000`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input: { n: 21 } }) });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { result: { doubled: number; prepPid: number; workPid: number } };
    expect(body.result.doubled).toBe(42);
    expect(body.result.workPid).not.toBe(body.result.prepPid); // `work` ran in the worker process
    // The server shows the fleet: the worker, with the node it runs; so does `roost agents`, from roost.toml.
    const agents = (await (await fetch(`${server.url}/v1/agents`)).json()) as { fleet: { id: string; status: string; nodes: string[] }[] };
    expect(agents.fleet).toEqual(expect.arrayContaining([expect.objectContaining({ status: 'available', nodes: ['job/work'] })]));
    const listed = roost(['agents', '--json', '--wait-ms', '500'], { cwd: workerDir.dir });
    expect(listed.status).toBe(0);
    expect((JSON.parse(listed.stdout) as { fleet: { nodes: string[] }[] }).fleet.some((p) => p.nodes.includes('job/work'))).toBe(true);
    // The worker takes no tasks of its own.
    const refused = await fetch(`${worker.url}/v1/flows/job/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input: { n: 1 } }) });
    expect(refused.status).toBeGreaterThanOrEqual(400);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('ROOST_ERR_INVALID_STATE');
  }, 90_000);

  it('refuses to start without a broker or nodes, with a coded error', () => {
    const dir = workDir(`app = ${JSON.stringify(APP)}\n[store]\nurl = "memory:"\n`);
    dirs.push(dir);
    const none = roost(['worker'], { cwd: dir.dir });
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('ROOST_ERR_CONFIG_INVALID: fleet.transport');
    const bad = roost(['worker', '--nodes', 'not a node'], { cwd: dir.dir });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('--nodes');
  });
});
