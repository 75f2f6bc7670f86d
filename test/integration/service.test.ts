/**
 * The HTTP API over a real socket: every route, the error shape and codes, tenant scoping,
 * idempotency keys, OpenAPI.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { node, type Envelope, type Runtime } from '../../src/index.js';
import { deferred, eventually } from '../helpers/runtime.js';
import { call, startService, type Running } from '../helpers/service.js';

let s: Running;
let gate = deferred();
let failing = true;

function flows(rt: Runtime): void {
  rt.flow({ name: 'double', edges: [node('twice', (env: Envelope<number>) => env.payload * 2).to()] });
  rt.flow({
    name: 'slow',
    edges: [
      node('wait', async (env: Envelope<unknown>, ctx) => {
        await Promise.race([gate.promise, new Promise((_r, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error)))]);
        return env.payload;
      }).to(),
    ],
  });
  rt.flow({
    name: 'flaky',
    edges: [
      node('work', (env: Envelope<string>) => {
        if (failing) throw new Error('backend down');
        return `${env.payload} done`;
      }).to(),
    ],
  });
}

beforeAll(async () => {
  s = await startService(flows);
});
afterAll(async () => {
  gate.resolve();
  await s.close();
});

const json = (r: { json: Record<string, unknown> }): Record<string, unknown> => r.json;
const err = (r: { json: Record<string, unknown> }): Record<string, unknown> => r.json['error'] as Record<string, unknown>;

describe('tasks', () => {
  it('submits a task (202), reads the trace, and waits for a result with ?wait', async () => {
    const submitted = await call(`${s.url}/v1/flows/double/tasks`, 'POST', { input: 21 });
    expect(submitted.status).toBe(202);
    expect(json(submitted)).toMatchObject({ flow: 'double', tenant: 'default', status: 'running', deduplicated: false });
    const traceId = String(json(submitted)['traceId']);
    expect(submitted.headers.get('x-request-id')).toMatch(/.+/);
    const trace = await eventually(
      async () => json(await call(`${s.url}/v1/traces/${traceId}`, 'GET')),
      (t) => t['status'] === 'succeeded',
      5_000,
      'the trace to succeed',
    );
    expect(trace).toMatchObject({ traceId, flow: 'double', status: 'succeeded', result: 42 });
    expect(typeof trace['durationMs']).toBe('number');
    const waited = await call(`${s.url}/v1/flows/double/tasks?wait=2000`, 'POST', { input: 5 });
    expect(waited.status).toBe(200);
    expect(json(waited)).toMatchObject({ status: 'succeeded', result: 10 });
    // The answer carried the result: the runtime holds it no longer, and the journal still has it.
    const waitedId = String(json(waited)['traceId']);
    expect(s.runtime.getFlow('double')!.outcome(waitedId)).toBeUndefined();
    expect(json(await call(`${s.url}/v1/traces/${waitedId}`, 'GET'))).toMatchObject({ status: 'succeeded', result: 10 });
  });

  it('an Idempotency-Key: same body returns the first trace (200), another body is 409', async () => {
    const headers = { 'idempotency-key': `order-${Math.random()}` };
    const first = await call(`${s.url}/v1/flows/double/tasks`, 'POST', { input: 1 }, headers);
    expect(first.status).toBe(202);
    const again = await call(`${s.url}/v1/flows/double/tasks`, 'POST', { input: 1 }, headers);
    expect(again.status).toBe(200);
    expect(json(again)).toMatchObject({ traceId: json(first)['traceId'], deduplicated: true });
    const other = await call(`${s.url}/v1/flows/double/tasks`, 'POST', { input: 2 }, headers);
    expect(other.status).toBe(409);
    expect(err(other)).toMatchObject({ code: 'ROOST_ERR_IDEMPOTENCY_CONFLICT', details: { traceId: json(first)['traceId'] } });
    expect(typeof err(other)['requestId']).toBe('string');
  });

  it('a trace of another tenant is not found; lists are scoped by tenant', async () => {
    const mine = await call(`${s.url}/v1/flows/double/tasks?wait=2000`, 'POST', { input: 3 }, { 'x-roost-tenant': 'acme' });
    const traceId = String(json(mine)['traceId']);
    expect((await call(`${s.url}/v1/traces/${traceId}`, 'GET', undefined, { 'x-roost-tenant': 'acme' })).status).toBe(200);
    const other = await call(`${s.url}/v1/traces/${traceId}`, 'GET', undefined, { 'x-roost-tenant': 'globex' });
    expect(other.status).toBe(404);
    expect(err(other)).toMatchObject({ code: 'ROOST_ERR_NOT_FOUND', details: { field: 'traceId' } });
    expect((await call(`${s.url}/v1/traces/${traceId}`, 'GET')).status).toBe(404); // default tenant
    const list = await call(`${s.url}/v1/traces?limit=100`, 'GET', undefined, { 'x-roost-tenant': 'acme' });
    const traces = json(list)['traces'] as { traceId: string; tenant: string }[];
    expect(traces.map((t) => t.traceId)).toContain(traceId);
    expect(traces.every((t) => t.tenant === 'acme')).toBe(true);
    expect((await call(`${s.url}/v1/traces/${traceId}/history`, 'GET', undefined, { 'x-roost-tenant': 'globex' })).status).toBe(404);
    expect((await call(`${s.url}/v1/traces/${traceId}/cancel`, 'POST', undefined, { 'x-roost-tenant': 'globex' })).status).toBe(404);
  });

  it('lists traces newest first, by status, a page at a time', async () => {
    const tenant = { 'x-roost-tenant': `pages-${Date.now()}` };
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(String(json(await call(`${s.url}/v1/flows/double/tasks?wait=2000`, 'POST', { input: i }, tenant))['traceId']));
    const first = await call(`${s.url}/v1/traces?limit=2`, 'GET', undefined, tenant);
    expect((json(first)['traces'] as { traceId: string }[]).map((t) => t.traceId)).toEqual([ids[4], ids[3]]);
    const second = await call(`${s.url}/v1/traces?limit=2&cursor=${encodeURIComponent(String(json(first)['next']))}`, 'GET', undefined, tenant);
    expect((json(second)['traces'] as { traceId: string }[]).map((t) => t.traceId)).toEqual([ids[2], ids[1]]);
    expect(json(await call(`${s.url}/v1/traces?status=failed`, 'GET', undefined, tenant))['traces']).toEqual([]);
    const bad = await call(`${s.url}/v1/traces?limit=0`, 'GET', undefined, tenant);
    expect(bad.status).toBe(400);
    expect(err(bad)).toMatchObject({ code: 'ROOST_ERR_BAD_REQUEST', details: { field: 'querystring.limit' } });
  });

  it('cancels a running trace; its history is the journaled events in order', async () => {
    gate = deferred();
    const submitted = await call(`${s.url}/v1/flows/slow/tasks`, 'POST', { input: 'x' });
    const traceId = String(json(submitted)['traceId']);
    const cancelled = await call(`${s.url}/v1/traces/${traceId}/cancel`, 'POST');
    expect(json(cancelled)).toMatchObject({ traceId, cancelled: true, status: 'cancelled' });
    await eventually(async () => json(await call(`${s.url}/v1/traces/${traceId}`, 'GET'))['status'], (st) => st === 'cancelled', 5_000, 'the cancel to be journaled');
    expect(json(await call(`${s.url}/v1/traces/${traceId}/cancel`, 'POST'))).toMatchObject({ cancelled: false, status: 'cancelled' });
    const history = await call(`${s.url}/v1/traces/${traceId}/history`, 'GET');
    const types = (json(history)['events'] as { type: string }[]).map((e) => e.type);
    expect(types[0]).toBe('trace_start');
    expect(types).toContain('trace_cancel_finish');
  });
});

describe('request errors share one shape, with stable codes', () => {
  const cases: [string, string, string, unknown, Record<string, string>, number, string, string | undefined][] = [
    ['a body that is not JSON', 'POST', '/v1/flows/double/tasks', '{nope', {}, 400, 'ROOST_ERR_BAD_REQUEST', 'body'],
    ['an unknown body field', 'POST', '/v1/flows/double/tasks', { input: 1, inptu: 2 }, {}, 400, 'ROOST_ERR_BAD_REQUEST', 'body.inptu'],
    ['a deadline that is not an integer', 'POST', '/v1/flows/double/tasks', { input: 1, deadline: 'soon' }, {}, 400, 'ROOST_ERR_BAD_REQUEST', 'body.deadline'],
    ['a bad tenant header', 'POST', '/v1/flows/double/tasks', { input: 1 }, { 'x-roost-tenant': 'a b' }, 400, 'ROOST_ERR_BAD_REQUEST', 'header.x-roost-tenant'],
    ['an unknown flow', 'POST', '/v1/flows/nope/tasks', { input: 1 }, {}, 404, 'ROOST_ERR_NOT_FOUND', 'flow'],
    ['a bad flow name', 'POST', '/v1/flows/no%20pe/tasks', { input: 1 }, {}, 400, 'ROOST_ERR_BAD_REQUEST', 'params.flow'],
    ['a trace id that is not a UUIDv7', 'GET', '/v1/traces/42', undefined, {}, 400, 'ROOST_ERR_BAD_REQUEST', 'params.traceId'],
    ['an unknown route', 'GET', '/v1/nothing-here', undefined, {}, 404, 'ROOST_ERR_NOT_FOUND', 'path'],
    ['a body over the cap', 'POST', '/v1/flows/double/tasks', { input: 'x'.repeat(1_100_000) }, {}, 413, 'ROOST_ERR_PAYLOAD_TOO_LARGE', 'body'],
    ['a payload over the runtime cap', 'POST', '/v1/flows/double/tasks', { input: 'x'.repeat(300_000) }, {}, 413, 'ROOST_ERR_PAYLOAD_TOO_LARGE', undefined],
  ];
  for (const [what, method, path, body, headers, status, code, field] of cases) {
    it(`${what}: ${status} ${code}`, async () => {
      const r = await call(`${s.url}${path}`, method, body, headers);
      expect(r.status).toBe(status);
      expect(err(r)).toMatchObject({ code, requestId: r.headers.get('x-request-id') });
      expect(typeof err(r)['message']).toBe('string');
      if (field !== undefined) expect((err(r)['details'] as Record<string, unknown>)['field']).toBe(field);
    });
  }
  it('keeps a request id the client sent', async () => {
    const r = await call(`${s.url}/v1/traces/42`, 'GET', undefined, { 'x-request-id': 'client-req-7' });
    expect(r.headers.get('x-request-id')).toBe('client-req-7');
    expect(err(r)['requestId']).toBe('client-req-7');
  });
});

describe('dead letters and agents', () => {
  it('lists, shows, replays and deletes dead letters of the tenant', async () => {
    failing = true;
    const tenant = { 'x-roost-tenant': 'dlq-tenant' };
    for (const p of ['a', 'b']) await call(`${s.url}/v1/flows/flaky/tasks?wait=2000`, 'POST', { input: p }, tenant);
    const list = await call(`${s.url}/v1/dead-letters?flow=flaky`, 'GET', undefined, tenant);
    const letters = json(list)['deadLetters'] as { id: string; node: string; error: { code: string } }[];
    expect(letters).toHaveLength(2);
    expect(letters[0]).toMatchObject({ node: 'work', error: { code: 'ROOST_ERR_NODE_FAILED' } });
    expect(json(await call(`${s.url}/v1/dead-letters?flow=flaky`, 'GET'))['deadLetters']).toEqual([]); // another tenant's
    const [a, b] = letters.map((l) => l.id) as [string, string];
    expect(json(await call(`${s.url}/v1/dead-letters/${a}`, 'GET', undefined, tenant))).toMatchObject({ id: a, flow: 'flaky' });
    expect((await call(`${s.url}/v1/dead-letters/${a}`, 'GET')).status).toBe(404);
    failing = false;
    const replayed = await call(`${s.url}/v1/dead-letters/${a}/replay`, 'POST', undefined, tenant);
    expect(replayed.status).toBe(202);
    const replayTrace = String(json(replayed)['traceId']);
    await eventually(async () => json(await call(`${s.url}/v1/traces/${replayTrace}`, 'GET', undefined, tenant))['status'], (st) => st === 'succeeded', 5_000, 'the replay to succeed');
    expect((await call(`${s.url}/v1/dead-letters/${b}`, 'DELETE', undefined, tenant)).status).toBe(204);
    expect((await call(`${s.url}/v1/dead-letters/${b}`, 'GET', undefined, tenant)).status).toBe(404);
    expect(s.logs.lines.some((l) => l['audit'] === 'dead_letter_replay' && l['deadLetterId'] === a)).toBe(true);
    expect(s.logs.lines.some((l) => l['audit'] === 'dead_letter_delete' && l['deadLetterId'] === b)).toBe(true);
  });

  it('shows agents, and quarantines and restores one', async () => {
    const agents = json(await call(`${s.url}/v1/agents`, 'GET'))['agents'] as { name: string; state: string }[];
    expect(agents.map((a) => a.name)).toEqual(expect.arrayContaining(['twice', 'wait', 'work']));
    expect(json(await call(`${s.url}/v1/agents/twice/quarantine`, 'POST'))).toMatchObject({ name: 'twice', state: 'quarantined' });
    const refused = await call(`${s.url}/v1/flows/double/tasks`, 'POST', { input: 1 });
    expect(refused.status).toBe(503);
    expect(err(refused)['code']).toBe('ROOST_ERR_QUARANTINED');
    expect(json(await call(`${s.url}/v1/agents/twice/restore`, 'POST'))).toMatchObject({ name: 'twice', state: 'ready' });
    expect((await call(`${s.url}/v1/agents/nobody`, 'GET')).status).toBe(404);
    expect(s.logs.lines.some((l) => l['audit'] === 'agent_quarantine')).toBe(true);
    expect(s.logs.lines.some((l) => l['audit'] === 'agent_restore')).toBe(true);
  });
});

describe('/openapi.json', () => {
  it('describes every route of the API with its parameters', async () => {
    const doc = json(await call(`${s.url}/openapi.json`, 'GET'));
    expect(doc['openapi']).toBe('3.1.0');
    const paths = doc['paths'] as Record<string, Record<string, { parameters?: { name: string; in: string }[]; requestBody?: unknown }>>;
    for (const p of ['/v1/flows/{flow}/tasks', '/v1/traces', '/v1/traces/{traceId}', '/v1/traces/{traceId}/events', '/v1/dead-letters/{id}/replay', '/v1/agents/{name}/restore', '/v1/ws', '/health', '/metrics']) {
      expect(Object.keys(paths)).toContain(p);
    }
    expect(paths['/v1/flows/{flow}/tasks']!['post']!.parameters).toEqual(
      expect.arrayContaining([expect.objectContaining({ name: 'flow', in: 'path' }), expect.objectContaining({ name: 'wait', in: 'query' })]),
    );
    expect(paths['/v1/flows/{flow}/tasks']!['post']!.requestBody).toBeDefined();
    expect(JSON.stringify(doc)).not.toContain('"roost-error#"');
  });
});
