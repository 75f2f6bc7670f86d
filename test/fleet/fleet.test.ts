/**
 * Fleets across processes, on the machine's Mosquitto and NATS and a shared PostgreSQL store: the
 * owner of the traces is this test's runtime; the workers are child processes
 * (test/fixtures/fleet-worker.ts) that run the `pipe` app's nodes. Each test has its own topic
 * namespace and schema.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRuntime, type Runtime, type RoostEvent } from '../../src/index.js';
import { MQTT_URL, NATS_URL, requireBroker } from '../helpers/brokers.js';
import { assertPgReachable, dropSchemas, freshPgUrl } from '../helpers/postgres.js';
import { until } from '../helpers/runtime.js';
import { createEffects, effectsPool, setupPipe, type PipeTask } from '../fixtures/fleet-app.js';

const WORKER = fileURLToPath(new URL('../fixtures/fleet-worker.ts', import.meta.url));

interface Child {
  readonly id: string;
  readonly proc: ChildProcess;
  readonly lines: Record<string, unknown>[];
  readonly ready: Promise<void>;
}

const children: Child[] = [];
const runtimes: Runtime[] = [];
const pools: { end(): Promise<void> }[] = [];

function spawnWorker(transport: string, store: string, ns: string, id: string, nodes: string, leaseMs: number): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', WORKER, transport, store, ns, id, nodes, String(leaseMs)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  let stderr = '';
  const ready = new Promise<void>((resolve, reject) => {
    let buffer = '';
    proc.stdout.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      let i;
      while ((i = buffer.indexOf('\n')) >= 0) {
        const line = JSON.parse(buffer.slice(0, i)) as Record<string, unknown>;
        buffer = buffer.slice(i + 1);
        lines.push(line);
        if (line['ready'] === true) resolve();
      }
    });
    proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    proc.on('exit', (code) => reject(new Error(`worker ${id} exited (${code}) before it was ready: ${stderr}`)));
  });
  const child = { id, proc, lines, ready };
  children.push(child);
  return child;
}

afterEach(async () => {
  for (const rt of runtimes.splice(0)) await rt.close();
  for (const c of children.splice(0)) {
    if (c.proc.exitCode === null && c.proc.signalCode === null) {
      c.proc.kill('SIGKILL');
      await new Promise((r) => c.proc.once('exit', r));
    }
  }
  for (const p of pools.splice(0)) await p.end();
});

afterAll(dropSchemas);

const TRANSPORTS = [
  { name: 'MQTT', url: MQTT_URL, kind: 'mqtt' as const },
  { name: 'NATS', url: NATS_URL, kind: 'nats' as const },
];

describe.each(TRANSPORTS)('fleet over $name', ({ url, kind }) => {
  beforeAll(async () => {
    await requireBroker(kind, url);
    await assertPgReachable();
  });

  async function owner(store: string, ns: string, leaseMs: number): Promise<{ rt: Runtime; events: RoostEvent[]; pool: ReturnType<typeof effectsPool> }> {
    const pool = effectsPool(store);
    pools.push(pool);
    const rt = createRuntime({
      logger: false,
      store,
      owner: `owner-${ns}`,
      drainTimeoutMs: 2_000,
      fleet: { transport: url, namespace: ns, remote: ['pipe/a', 'pipe/b', 'pipe/c'], leaseMs },
    });
    const events: RoostEvent[] = [];
    rt.on((e) => events.push(e));
    setupPipe(rt, pool, 'owner', () => {});
    runtimes.push(rt);
    await rt.start();
    return { rt, events, pool };
  }

  async function setup(): Promise<{ ns: string; store: string }> {
    const store = freshPgUrl('fleet');
    await createEffects(store);
    return { ns: `ft${randomBytes(4).toString('hex')}`, store };
  }

  it('runs a 3-node flow spread over 3 worker processes', async () => {
    const { ns, store } = await setup();
    const ws = ['a', 'b', 'c'].map((n) => spawnWorker(url, store, ns, `w-${n}`, n, 5_000));
    await Promise.all(ws.map((w) => w.ready));
    const { rt, pool } = await owner(store, ns, 5_000);
    const flow = rt.getFlow('pipe')!;
    const traces = await Promise.all(Array.from({ length: 30 }, (_, i) => flow.emit({ i } satisfies PipeTask)));
    const results = (await Promise.all(traces.map((t) => flow.fetch(t.traceId)))) as PipeTask[];
    for (const [i, r] of results.entries()) expect(r).toEqual({ i, path: ['a@w-a', 'b@w-b', 'c@w-c'] });
    const { rows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM effects');
    expect(Number(rows[0]!.n)).toBe(90);
  }, 60_000);

  it('a worker SIGKILLed under load: no task lost, no step effect twice, its work redelivered after its lease', async () => {
    const { ns, store } = await setup();
    const leaseMs = 1_000;
    const ws = ['w1', 'w2'].map((id) => spawnWorker(url, store, ns, id, 'a,b,c', leaseMs));
    await Promise.all(ws.map((w) => w.ready));
    const { rt, events, pool } = await owner(store, ns, leaseMs);
    const flow = rt.getFlow('pipe')!;
    const K = 150;
    let done = 0;
    const traces = await Promise.all(Array.from({ length: K }, (_, i) => flow.emit({ i, sleepMs: 30 } satisfies PipeTask)));
    const results = traces.map((t) =>
      flow.fetch(t.traceId).then((r) => {
        done++;
        return r as PipeTask;
      }),
    );
    await until(() => done >= 20, 30_000, 'a first part done');
    expect(done).toBeLessThan(K); // the kill falls under load
    ws[0]!.proc.kill('SIGKILL');
    const killedAt = Date.now();
    const all = await Promise.all(results);
    expect(all).toHaveLength(K);
    for (const [i, r] of all.entries()) expect(r.i).toBe(i);
    const redelivered = events.filter((e) => e.type === 'dispatch_redelivered');
    expect(redelivered.length).toBeGreaterThan(0);
    expect(redelivered.every((e) => e.type === 'dispatch_redelivered' && e.reason === 'lease_expired')).toBe(true);
    // After the kill, everything is finished by the survivor within a few leases.
    expect(Date.now() - killedAt).toBeLessThan(30_000);
    const late = all.filter((r) => r.path!.some((p) => p.endsWith('@w2')));
    expect(late.length).toBeGreaterThan(0);
    const { rows } = await pool.query<{ trace: string; node: string; n: string }>('SELECT trace, node, count(*) AS n FROM effects GROUP BY trace, node');
    expect(rows).toHaveLength(K * 3); // every node's effect happened for every trace …
    expect(rows.every((r) => Number(r.n) === 1)).toBe(true); // … once, under one step key
  }, 90_000);

  it('cancel on the owner reaches the worker running the trace', async () => {
    const { ns, store } = await setup();
    const w = spawnWorker(url, store, ns, 'wc', 'a,b,c', 5_000);
    await w.ready;
    const { rt } = await owner(store, ns, 5_000);
    const flow = rt.getFlow('pipe')!;
    const { traceId } = await flow.emit({ i: 1, hang: 'b' } satisfies PipeTask);
    await until(() => w.lines.some((l) => l['hanging'] !== undefined), 15_000, 'the worker runs b');
    await flow.cancel(traceId);
    await expect(flow.fetch(traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_TRACE_CANCELLED' });
    await until(() => w.lines.some((l) => l['aborted'] !== undefined), 10_000, 'the worker saw the cancel');
    expect(w.lines.find((l) => l['aborted'] !== undefined)!['aborted']).toEqual({ node: 'b', traceId, code: 'ROOST_ERR_TRACE_CANCELLED' });
  }, 60_000);

  it('a deadline holds across processes: the worker\'s handler is aborted and the trace fails at the deadline', async () => {
    const { ns, store } = await setup();
    const w = spawnWorker(url, store, ns, 'wd', 'a,b,c', 5_000);
    await w.ready;
    const { rt } = await owner(store, ns, 5_000);
    const flow = rt.getFlow('pipe')!;
    const start = Date.now();
    const { traceId } = await flow.emit({ i: 1, hang: 'b' } satisfies PipeTask, { deadline: start + 1_500 });
    await expect(flow.fetch(traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_DEADLINE_EXCEEDED' });
    const elapsed = Date.now() - start;
    expect(elapsed).toBeGreaterThanOrEqual(1_400);
    expect(elapsed).toBeLessThan(4_000); // the deadline plus a 2× margin and more
    await until(() => w.lines.some((l) => l['aborted'] !== undefined), 10_000, 'the worker saw the deadline');
    expect(w.lines.find((l) => l['aborted'] !== undefined)!['aborted']).toEqual({ node: 'b', traceId, code: 'ROOST_ERR_DEADLINE_EXCEEDED' });
  }, 60_000);
});
