/**
 * What operators rely on, over a real socket: 429 under a burst (tenant rate and the global
 * cap), 503 while draining and while the journal is down, the health probes and their
 * transitions, and the Prometheus metrics.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryStore, node, type Envelope, type Runtime, type StoreBatch } from '../../src/index.js';
import { deferred, until } from '../helpers/runtime.js';
import { call, startService, type Running } from '../helpers/service.js';

const running: Running[] = [];
afterEach(async () => {
  for (const s of running.splice(0)) await s.close();
});
async function start(setup: (rt: Runtime) => void, options: Parameters<typeof startService>[1] = {}): Promise<Running> {
  const s = await startService(setup, options);
  running.push(s);
  return s;
}
const echo = (rt: Runtime): void => {
  rt.flow({ name: 'echo', edges: [node('say', (env: Envelope<unknown>) => env.payload).to()] });
};
const err = (r: { json: Record<string, unknown> }): Record<string, unknown> => r.json['error'] as Record<string, unknown>;

describe('admission', () => {
  it('answers 429 with Retry-After once a tenant spends its bucket; other tenants are not affected', async () => {
    const s = await start(echo, { env: { ROOST_TENANT_RATE: '1', ROOST_TENANT_BURST: '5' } });
    const results = await Promise.all(Array.from({ length: 20 }, () => call(`${s.url}/v1/flows/echo/tasks`, 'POST', { input: 1 }, { 'x-roost-tenant': 'bursty' })));
    const refused = results.filter((r) => r.status === 429);
    expect(results.filter((r) => r.status === 202).length).toBe(5);
    expect(refused.length).toBe(15);
    expect(err(refused[0]!)).toMatchObject({ code: 'ROOST_ERR_RATE_LIMITED', details: { limit: 'tenant_rate', tenant: 'bursty' } });
    expect(Number(refused[0]!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect((await call(`${s.url}/v1/flows/echo/tasks`, 'POST', { input: 1 }, { 'x-roost-tenant': 'calm' })).status).toBe(202);
    await new Promise((r) => setTimeout(r, 1_200)); // a token back (1 a second); the burst of 20 takes far less than the second it would take to refill one
    expect((await call(`${s.url}/v1/flows/echo/tasks`, 'POST', { input: 1 }, { 'x-roost-tenant': 'bursty' })).status).toBe(202);
  });

  it('answers 429 while the global cap of tasks in flight is reached', async () => {
    const gate = deferred();
    const s = await start(
      (rt) => {
        rt.flow({
          name: 'hold',
          edges: [
            node('wait', async () => {
              await gate.promise;
              return 'ok';
            }).to(),
          ],
        });
      },
      { env: { ROOST_MAX_CONCURRENT_TASKS: '2' } },
    );
    expect((await call(`${s.url}/v1/flows/hold/tasks`, 'POST', { input: 1 })).status).toBe(202);
    expect((await call(`${s.url}/v1/flows/hold/tasks`, 'POST', { input: 2 })).status).toBe(202);
    const third = await call(`${s.url}/v1/flows/hold/tasks`, 'POST', { input: 3 });
    expect(third.status).toBe(429);
    expect(err(third)).toMatchObject({ code: 'ROOST_ERR_RATE_LIMITED', details: { limit: 'max_concurrent_tasks', max: 2 } });
    expect(third.headers.get('retry-after')).toBe('1');
    gate.resolve();
    await until(() => s.runtime.inFlightTraces === 0, 5_000, 'the held tasks to finish');
    expect((await call(`${s.url}/v1/flows/hold/tasks`, 'POST', { input: 4 })).status).toBe(202);
  });
});

describe('health', () => {
  it('startup and readiness fail until started; readiness fails and work is refused while draining; liveness holds', async () => {
    const s = await start(echo);
    // A fresh service over the same runtime has not been told it started.
    const { createService } = await import('../../src/service/server.js');
    const { pino } = await import('pino');
    const fresh = await createService(s.runtime, { settings: (await import('../helpers/service.js')).settings(), logger: pino({ enabled: false }) });
    const { url } = await fresh.listen();
    try {
      expect((await call(`${url}/health/startup`, 'GET')).status).toBe(503);
      const notReady = await call(`${url}/ready`, 'GET');
      expect(notReady.status).toBe(503);
      expect((notReady.json['checks'] as { name: string; status: string }[]).find((c) => c.name === 'startup')!.status).toBe('fail');
      fresh.health.started();
      expect((await call(`${url}/health/startup`, 'GET')).status).toBe(200);
      expect((await call(`${url}/health/ready`, 'GET')).status).toBe(200);
      const full = await call(`${url}/health`, 'GET');
      expect(full.status).toBe(200);
      expect(full.json).toMatchObject({ status: 'pass', score: 1 });
      expect((full.json['checks'] as { name: string }[]).map((c) => c.name)).toEqual(['event_loop', 'startup', 'draining', 'store', 'agents']);
      for (const c of full.json['checks'] as Record<string, unknown>[]) expect(Date.parse(String(c['checkedAt']))).toBeGreaterThan(0);
      fresh.drain();
      expect((await call(`${url}/ready`, 'GET')).status).toBe(503);
      expect((await call(`${url}/live`, 'GET')).status).toBe(200);
      const refused = await call(`${url}/v1/flows/echo/tasks`, 'POST', { input: 1 });
      expect(refused.status).toBe(503);
      expect(err(refused)['code']).toBe('ROOST_ERR_DRAINING');
      expect(refused.headers.get('retry-after')).toBe('1');
      const degraded = await call(`${url}/health`, 'GET');
      expect(degraded.status).toBe(503);
      expect(degraded.json['score']).toBeLessThan(1);
    } finally {
      await fresh.close();
    }
  });

  it('a quarantined agent makes /health warn (score < 1, still 200)', async () => {
    const s = await start(echo);
    s.runtime.quarantine('say');
    const r = await call(`${s.url}/health`, 'GET');
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ status: 'warn', score: 0.9 });
  });

  it('answers 503 while the journal is down: new work is refused at once, readiness fails', async () => {
    let down = false;
    class Flaky extends MemoryStore {
      override commit(batch: StoreBatch): Promise<void> {
        return down ? Promise.reject(new Error('disk on fire')) : super.commit(batch);
      }
    }
    const s = await start(echo, { runtime: { store: new Flaky(), storeBreaker: { failures: 2, cooldownMs: 300 } } });
    expect((await call(`${s.url}/v1/flows/echo/tasks?wait=1000`, 'POST', { input: 1 })).status).toBe(200);
    down = true;
    const held = call(`${s.url}/v1/flows/echo/tasks`, 'POST', { input: 2 }); // accepted, its commit held
    await until(() => s.runtime.store!.breaker.state === 'open', 10_000, 'the breaker to open');
    // While the breaker is open (a cool-down of 300 ms after each failed probe), new work is refused at once.
    const refused = await call(`${s.url}/v1/flows/echo/tasks`, 'POST', { input: 3 });
    expect(refused.status).toBe(503);
    expect(err(refused)['code']).toBe('ROOST_ERR_STORE_UNAVAILABLE');
    const ready = await call(`${s.url}/ready`, 'GET');
    expect(ready.status).toBe(503);
    expect((ready.json['checks'] as { name: string; status: string }[]).find((c) => c.name === 'store')!.status).toBe('fail');
    down = false;
    // The held submission is acknowledged once the journal is back: nothing accepted was lost.
    expect((await held).status).toBe(202);
  });
});

/** Prometheus text → series `{ name, labels, value }`. */
function parseMetrics(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    expect(m, `not an exposition line: ${line}`).not.toBeNull();
    const labels: Record<string, string> = {};
    for (const part of (m![2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[part[1]!] = part[2]!;
    out.push({ name: m![1]!, labels, value: Number(m![3]) });
  }
  return out;
}

describe('/metrics', () => {
  it('exposes the series derived from events, HTTP and the process, with bounded labels only', async () => {
    const s = await start((rt) => {
      echo(rt);
      rt.flow({
        name: 'flaky',
        edges: [
          node(
            'try',
            (env: Envelope<number>) => {
              if (env.attempt < 2) throw new Error('once');
              return env.payload;
            },
            { retries: 1, backoff: { baseMs: 1, maxMs: 1, jitter: 0 } },
          ).to(),
        ],
      });
    });
    for (let i = 0; i < 3; i++) await call(`${s.url}/v1/flows/echo/tasks?wait=1000`, 'POST', { input: i });
    await call(`${s.url}/v1/flows/flaky/tasks?wait=2000`, 'POST', { input: 7 });
    await call(`${s.url}/v1/traces/0`, 'GET'); // a 400
    const r = await call(`${s.url}/metrics`, 'GET');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
    const series = parseMetrics(r.text);
    const value = (name: string, labels: Record<string, string> = {}): number | undefined =>
      series.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))?.value;
    expect(value('roost_tasks_received_total', { flow: 'echo' })).toBe(3);
    expect(value('roost_tasks_finished_total', { flow: 'echo', status: 'succeeded' })).toBe(3);
    expect(value('roost_node_messages_completed_total', { flow: 'flaky', node: 'try' })).toBe(1);
    expect(value('roost_node_retries_total', { flow: 'flaky', node: 'try' })).toBe(1);
    expect(value('roost_node_duration_seconds_count', { flow: 'echo', node: 'say', outcome: 'success' })).toBe(3);
    expect(value('roost_node_duration_seconds_count', { flow: 'flaky', node: 'try', outcome: 'error' })).toBe(1);
    expect(value('roost_queue_depth', { flow: 'echo', node: 'say' })).toBe(0);
    expect(value('roost_traces_in_flight')).toBe(0);
    expect(value('roost_dead_letters')).toBe(0);
    expect(value('roost_store_breaker_state')).toBe(0);
    expect(value('roost_http_requests_total', { method: 'POST', route: '/v1/flows/:flow/tasks', status: '200' })).toBe(4);
    expect(value('roost_http_requests_total', { method: 'GET', route: '/v1/traces/:traceId', status: '400' })).toBe(1);
    expect(series.some((x) => x.name === 'roost_store_operation_duration_seconds_count' && x.labels['operation'] === 'commit')).toBe(true);
    expect(series.some((x) => x.name === 'process_cpu_seconds_total')).toBe(true);
    expect(series.some((x) => x.name === 'nodejs_eventloop_lag_seconds')).toBe(true);
    // No label holds an unbounded value: nothing is keyed by trace, envelope or request.
    for (const x of series) {
      for (const key of Object.keys(x.labels)) expect(['flow', 'node', 'outcome', 'status', 'method', 'route', 'operation', 'agent', 'reason', 'kind', 'le', 'quantile', 'type', 'version', 'major', 'minor', 'patch', 'space']).toContain(key);
      for (const v of Object.values(x.labels)) expect(v).not.toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7/);
    }
    const json = await call(`${s.url}/metrics.json`, 'GET');
    const metrics = JSON.parse(json.text) as { name: string }[];
    expect(metrics.map((m) => m.name)).toEqual(expect.arrayContaining(['roost_tasks_received_total', 'roost_node_duration_seconds', 'roost_http_requests_total']));
  });
});
