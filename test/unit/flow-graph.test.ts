import { afterEach, describe, expect, it } from 'vitest';
import { join, node, route, routeBy, subflow, type Envelope, type Runtime, type TraceStreamItem } from '../../src/index.js';
import { deferred, startRuntime, until } from '../helpers/runtime.js';

let rt: Runtime | undefined;
afterEach(async () => {
  await rt?.close();
  rt = undefined;
});

describe('routers', () => {
  it('routes by a discriminant field, with a fallback and ROOST_ERR_NO_ROUTE without one', async () => {
    ({ rt } = await startRuntime());
    const bill = node('bill', (env: Envelope<{ type: string }>) => `bill:${env.payload.type}`);
    const ship = node('ship', () => 'ship');
    const other = node('other', () => 'other');
    const flow = rt.flow({ name: 'disc', edges: [routeBy('by-type', 'type', { invoice: bill, order: ship }, { otherwise: other }).to()] });
    const strict = rt.flow({ name: 'disc2', edges: [routeBy('by-type2', 'type', { invoice: bill }).to()] });
    await rt.start();
    const run = async (f: typeof flow, payload: unknown): Promise<unknown> => f.fetch((await f.emit(payload)).traceId);
    expect(await run(flow, { type: 'invoice' })).toBe('bill:invoice');
    expect(await run(flow, { type: 'order' })).toBe('ship');
    expect(await run(flow, { type: 'refund' })).toBe('other');
    expect(await run(flow, 'not an object')).toBe('other');
    await expect(run(strict, { type: 'order' })).rejects.toMatchObject({ code: 'ROOST_ERR_NO_ROUTE' });
  });

  it('routes by predicate: the first that holds wins', async () => {
    ({ rt } = await startRuntime());
    const big = node('big', () => 'big');
    const small = node('small', () => 'small');
    const r = route('size', [
      [(e) => (e.payload as number) > 100, big],
      [(e) => (e.payload as number) > 0, small],
    ]);
    const flow = rt.flow({ name: 'pred', edges: [r.to()] });
    await rt.start();
    const run = async (payload: number): Promise<unknown> => flow.fetch((await flow.emit(payload)).traceId);
    expect(await run(500)).toBe('big');
    expect(await run(5)).toBe('small');
    await expect(run(-1)).rejects.toMatchObject({ code: 'ROOST_ERR_NO_ROUTE' });
  });
});

describe('fan-out and join', () => {
  it('joins k branches of one trace, per trace', async () => {
    ({ rt } = await startRuntime());
    const fan = node('fan', (env: Envelope<number>) => env.payload);
    const double = node('double', (env: Envelope<number>) => Promise.resolve(env.payload * 2), { concurrency: 4 });
    const square = node('square', (env: Envelope<number>) => env.payload ** 2, { concurrency: 4 });
    const j = join('both');
    const sum = node('sum', (env: Envelope<number[]>) => [...env.payload].sort((a, b) => a - b));
    const flow = rt.flow({ name: 'join', edges: [fan.to(double, square), double.to(j), square.to(j), j.to(sum)] });
    await rt.start();
    const ids = await Promise.all([3, 4, 5].map((n) => flow.emit(n)));
    expect(await Promise.all(ids.map((t) => flow.fetch(t.traceId)))).toEqual([
      [6, 9],
      [8, 16],
      [10, 25],
    ]);
  });

  it('a join that does not get k envelopes in time fails with ROOST_ERR_JOIN_TIMEOUT', async () => {
    ({ rt } = await startRuntime());
    const fan = node('fan', () => 1);
    const some = node('some', () => 'x');
    const none = node('none', () => undefined); // sends nothing on
    const j = join('j', { timeoutMs: 50 });
    const flow = rt.flow({ name: 'jt', edges: [fan.to(some, none), some.to(j), none.to(j)] });
    await rt.start();
    const started = Date.now();
    const t = await flow.emit({});
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_JOIN_TIMEOUT' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
    expect(flow.stats().joinsWaiting).toBe(0);
  });

  it('a failed branch ends the join with its error at once, without waiting for the timeout', async () => {
    ({ rt } = await startRuntime());
    const fan = node('fan', () => 1);
    const ok = node('ok', () => 'x');
    const bad = node('bad', () => {
      throw new Error('branch down');
    });
    const j = join('j', { timeoutMs: 60_000 });
    const flow = rt.flow({ name: 'jf', edges: [fan.to(ok, bad), ok.to(j), bad.to(j)] });
    await rt.start();
    const started = Date.now();
    const t = await flow.emit({});
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_NODE_FAILED', message: expect.stringContaining('branch down') });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(flow.stats().joinsWaiting).toBe(0); // the failed branch cleared the join's state and timer
  });

  it('fan-out to several egress nodes gives an array of their outputs', async () => {
    ({ rt } = await startRuntime());
    const fan = node('fan', () => 1);
    const a = node('a', () => 'a');
    const b = node('b', async () => {
      await new Promise((r) => setTimeout(r, 5));
      return 'b';
    });
    const flow = rt.flow({ name: 'multi', edges: [fan.to(a, b)] });
    await rt.start();
    expect(await flow.fetch((await flow.emit(0)).traceId)).toEqual(['a', 'b']);
  });
});

describe('subflows', () => {
  it('runs a child flow as a node, passing the deadline and tenant', async () => {
    ({ rt } = await startRuntime());
    const inner = node('inner', (env: Envelope<number>) => ({ n: env.payload + 1, deadline: env.deadline, tenant: env.tenant }));
    const child = rt.flow({ name: 'child', edges: [inner.to()] });
    const parent = rt.flow({ name: 'parent', edges: [subflow('call-child', child).to()] });
    await rt.start();
    const deadline = Date.now() + 30_000;
    const t = await parent.emit(1, { deadline, tenant: 'acme' });
    expect(await parent.fetch(t.traceId)).toEqual({ n: 2, deadline, tenant: 'acme' });
  });

  it('cancelling the parent cancels the child trace and aborts its handler', async () => {
    ({ rt } = await startRuntime());
    let childSignal: AbortSignal | undefined;
    let childTrace = '';
    const inner = node('inner', (_env: Envelope, ctx) => {
      childSignal = ctx.signal;
      childTrace = ctx.traceId;
      return new Promise(() => {});
    });
    const child = rt.flow({ name: 'child', edges: [inner.to()] });
    const parent = rt.flow({ name: 'parent', edges: [subflow('call', child, { timeoutMs: null }).to()] });
    await rt.start();
    const t = await parent.emit({});
    await until(() => childSignal !== undefined);
    await parent.cancel(t.traceId);
    await until(() => childSignal!.aborted);
    expect(childTrace).not.toBe(t.traceId);
    expect(child.stats()).toMatchObject({ activeTraces: 0, running: 0, queued: 0, cancelled: 1 });
  });
});

describe('cycles and the hop budget', () => {
  it('refuses a cycle unless allowed', () => {
    return startRuntime().then(({ rt: r }) => {
      rt = r;
      const a = node('a', () => 1);
      const b = node('b', () => 1);
      expect(() => r.flow({ name: 'cyc', edges: [a.to(b), b.to(a)], ingress: a })).toThrow(
        expect.objectContaining({ code: 'ROOST_ERR_FLOW_INVALID', message: expect.stringContaining('a -> b -> a') }),
      );
      expect(r.stats().agents).toBe(0); // nothing of the refused flow stays registered
    });
  });

  it('a loop ends with ROOST_ERR_HOP_BUDGET when it runs past maxHops', async () => {
    ({ rt } = await startRuntime());
    let runs = 0;
    const loop = node('loop', (env: Envelope<number>) => {
      runs++;
      return env.payload + 1;
    });
    const flow = rt.flow({ name: 'loop', edges: [loop.to(loop)], ingress: loop, allowCycles: true, maxHops: 10 });
    await rt.start();
    const t = await flow.emit(0);
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_HOP_BUDGET' });
    expect(runs).toBe(11);
  });

  it('a loop with an exit works within the budget', async () => {
    ({ rt } = await startRuntime());
    const done = node('done', (env: Envelope<number>) => env.payload);
    const step = node('step', (env: Envelope<{ n: number }>) => env.payload.n + 1);
    const check = routeBy('check', 'big', { true: done, false: step });
    const wrap = node('wrap', (env: Envelope<number>) => ({ big: env.payload >= 5, n: env.payload }));
    const flow = rt.flow({
      name: 'until5',
      edges: [wrap.to(check), step.to(wrap)],
      ingress: wrap,
      allowCycles: true,
      maxHops: 64,
    });
    await rt.start();
    expect(await flow.fetch((await flow.emit(0)).traceId)).toEqual({ big: true, n: 5 });
  });
});

describe('trace streams', () => {
  it('streams chunks and events, then the end with the result', async () => {
    ({ rt } = await startRuntime());
    const gate = deferred();
    const talk = node('talk', async (_env: Envelope, ctx) => {
      await gate.promise;
      ctx.chunk('hel');
      ctx.chunk('lo');
      return 'hello';
    });
    const flow = rt.flow({ name: 'stream', edges: [talk.to()] });
    await rt.start();
    const t = await flow.emit({});
    const stream = flow.stream(t.traceId);
    gate.resolve();
    const items: TraceStreamItem[] = [];
    for await (const item of stream) items.push(item);
    expect(items.map((i) => i.type)).toEqual(['chunk', 'chunk', 'node_success', 'trace_success', 'trace_end']);
    expect(items.filter((i) => i.type === 'chunk').map((i) => (i as { data: unknown }).data)).toEqual(['hel', 'lo']);
    expect(items.at(-1)).toMatchObject({ type: 'trace_end', status: 'succeeded', result: 'hello' });
  });

  it('a slow reader gets a bounded buffer and a gap marker, never unbounded memory', async () => {
    ({ rt } = await startRuntime({ streamBuffer: 8 }));
    const gate = deferred();
    const chatty = node('chatty', async (_env: Envelope, ctx) => {
      await gate.promise;
      for (let i = 0; i < 1000; i++) ctx.chunk(i);
      return 'done';
    });
    const flow = rt.flow({ name: 'chatty', edges: [chatty.to()] });
    await rt.start();
    const t = await flow.emit({});
    const stream = flow.stream(t.traceId);
    gate.resolve();
    await flow.fetch(t.traceId);
    const items: TraceStreamItem[] = [];
    for await (const item of stream) items.push(item);
    expect(items.length).toBeLessThanOrEqual(9);
    expect(items[0]).toMatchObject({ type: 'stream_gap' });
    expect((items[0] as { dropped: number }).dropped).toBeGreaterThan(990);
    expect(items.at(-1)).toMatchObject({ type: 'trace_end', status: 'succeeded' });
  });

  it('a stream of a finished trace yields its end; of an unknown trace, ROOST_ERR_TRACE_NOT_FOUND', async () => {
    ({ rt } = await startRuntime());
    const a = node('a', () => 7);
    const flow = rt.flow({ name: 'done', edges: [a.to()] });
    await rt.start();
    const t = await flow.emit({});
    await until(() => flow.activeTraces === 0);
    const items: TraceStreamItem[] = [];
    for await (const item of flow.stream(t.traceId)) items.push(item);
    expect(items).toMatchObject([{ type: 'trace_end', result: 7 }]);
    expect(() => flow.stream('0190a0f0-0000-7000-8000-000000000000')).toThrow(expect.objectContaining({ code: 'ROOST_ERR_TRACE_NOT_FOUND' }));
  });
});
