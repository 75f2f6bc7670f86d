import { afterEach, describe, expect, it } from 'vitest';
import { edge, isRoostError, node, type Envelope, type Runtime } from '../../src/index.js';
import { deferred, startRuntime, tick, typesOf, until } from '../helpers/runtime.js';

let rt: Runtime | undefined;
afterEach(async () => {
  await rt?.close();
  rt = undefined;
});

describe('bounded edges and backpressure', () => {
  it('never holds more than an edge capacity, and a fast producer waits (wait policy)', async () => {
    const started = await startRuntime();
    rt = started.rt;
    const gate = deferred();
    const slow = node('slow', async (env: Envelope<{ i: number }>) => {
      await gate.promise;
      return env.payload.i;
    });
    const flow = rt.flow({ name: 'bp', edges: [slow.to()], queueCapacity: 4 });
    await rt.start();
    let accepted = 0;
    const emits = Array.from({ length: 20 }, (_, i) => flow.emit({ i }).then((r) => (accepted++, r)));
    await tick();
    // One is running, four are queued, the other fifteen producers wait for room.
    expect(accepted).toBe(5);
    expect(flow.stats().queued).toBe(4);
    expect(flow.stats().running).toBe(1);
    let maxQueued = 0;
    rt.on((e) => {
      if (e.type === 'node_start') maxQueued = Math.max(maxQueued, (e).queueDepthIn);
    });
    gate.resolve();
    const ids = await Promise.all(emits);
    const results = await Promise.all(ids.map((r) => flow.fetch(r.traceId)));
    expect(results).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(maxQueued).toBeLessThanOrEqual(4);
    expect(accepted).toBe(20);
  });

  it('keeps FIFO order per edge, across waiting producers too', async () => {
    ({ rt } = await startRuntime());
    const seen: number[] = [];
    const a = node('a', (env: Envelope<{ i: number }>) => env.payload.i);
    const b = node('b', async (env: Envelope<number>) => {
      seen.push(env.payload);
      await new Promise((r) => setImmediate(r));
      return env.payload;
    });
    const flow = rt.flow({ name: 'fifo', edges: [a.to(b)], queueCapacity: 2 });
    await rt.start();
    const ids = await Promise.all(Array.from({ length: 50 }, (_, i) => flow.emit({ i })));
    await Promise.all(ids.map((r) => flow.fetch(r.traceId)));
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  it('reject policy at the ingress refuses with ROOST_ERR_QUEUE_FULL and accepts nothing', async () => {
    ({ rt } = await startRuntime());
    const gate = deferred();
    const slow = node('slow', async () => {
      await gate.promise;
      return 1;
    });
    const flow = rt.flow({ name: 'rej', edges: [slow.to()], queueCapacity: 2, overflow: 'reject' });
    await rt.start();
    await flow.emit({}); // running
    await tick();
    await flow.emit({});
    await flow.emit({});
    await expect(flow.emit({})).rejects.toMatchObject({ code: 'ROOST_ERR_QUEUE_FULL' });
    expect(rt.stats().inFlightTraces).toBe(3);
    gate.resolve();
  });

  it('reject policy on an inner edge fails that trace, dead-letters the envelope and says so in an event', async () => {
    let events;
    ({ rt, events } = await startRuntime());
    const gate = deferred();
    const a = node('a', () => 'x');
    const b = node('b', async () => {
      await gate.promise;
      return 'done';
    });
    const flow = rt.flow({ name: 'rej2', edges: [a.to(edge(b, { capacity: 1, overflow: 'reject' }))] });
    await rt.start();
    const t1 = await flow.emit({}); // b runs it
    await until(() => flow.stats().running === 1);
    const t2 = await flow.emit({}); // queued on a->b
    await until(() => flow.stats().queued === 1);
    const t3 = await flow.emit({}); // a->b is full: refused
    await expect(flow.fetch(t3.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_QUEUE_FULL' });
    expect(typesOf(events, t3.traceId)).toContain('queue_overflow');
    expect(rt.deadLetters.list({ flow: 'rej2' }).map((d) => d.envelope.traceId)).toEqual([t3.traceId]);
    gate.resolve();
    expect(await flow.fetch(t1.traceId)).toBe('done');
    expect(await flow.fetch(t2.traceId)).toBe('done');
  });

  it('drop_oldest evicts the oldest envelope to the dead-letter queue, never silently', async () => {
    let events;
    ({ rt, events } = await startRuntime());
    const gate = deferred();
    const slow = node('slow', async (env: Envelope<{ i: number }>) => {
      await gate.promise;
      return env.payload.i;
    });
    const flow = rt.flow({ name: 'drop', edges: [slow.to()], queueCapacity: 2, overflow: 'drop_oldest' });
    await rt.start();
    const ids = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await flow.emit({ i })).traceId);
      await tick();
    }
    // 0 runs; 1 and 2 were queued, then pushed out by 3 and 4.
    for (const dropped of [ids[1]!, ids[2]!]) await expect(flow.fetch(dropped)).rejects.toMatchObject({ code: 'ROOST_ERR_QUEUE_FULL' });
    expect(rt.deadLetters.list().map((d) => d.envelope.payload)).toEqual([{ i: 1 }, { i: 2 }]);
    expect(events.filter((e) => e.type === 'queue_overflow')).toHaveLength(2);
    gate.resolve();
    expect(await Promise.all([ids[0]!, ids[3]!, ids[4]!].map((t) => flow.fetch(t)))).toEqual([0, 3, 4]);
    expect(flow.stats().queued).toBe(0);
  });

  it('an emit waiting for room can be given up with its AbortSignal', async () => {
    ({ rt } = await startRuntime());
    const gate = deferred();
    const ran: number[] = [];
    const slow = node('slow', async (env: Envelope<{ n: number }>) => {
      ran.push(env.payload.n);
      await gate.promise;
      return 1;
    });
    const flow = rt.flow({ name: 'abortwait', edges: [slow.to()], queueCapacity: 1 });
    await rt.start();
    await flow.emit({ n: 1 });
    await tick();
    await flow.emit({ n: 2 });
    const ac = new AbortController();
    const waiting = flow.emit({ n: 3 }, { signal: ac.signal });
    ac.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'ROOST_ERR_TRACE_CANCELLED' });
    expect(flow.stats().queued).toBe(1);
    gate.resolve();
    await until(() => flow.stats().activeTraces === 0);
    await tick();
    // The given-up task never ran and left nothing behind.
    expect(ran).toEqual([1, 2]);
    expect(flow.stats()).toMatchObject({ queued: 0, running: 0, succeeded: 2, cancelled: 1 });
  });
});

describe('cancel', () => {
  it('leaves nothing of the trace queued or running, aborts its handlers, and fails its fetch', async () => {
    let events;
    ({ rt, events } = await startRuntime());
    const signals: AbortSignal[] = [];
    const gate = deferred();
    const fan = node('fan', () => 'go');
    const work = (name: string) =>
      node(name, async (_env: Envelope, ctx) => {
        signals.push(ctx.signal);
        await gate.promise;
        return name;
      });
    const b = work('b');
    const c = work('c');
    const other = work('other');
    const flow = rt.flow({ name: 'cancel', edges: [fan.to(b, c, other)] });
    await rt.start();
    const keep = await flow.emit({}); // its b, c and other run
    const victim = await flow.emit({}); // its b, c and other are queued behind
    await until(() => signals.length === 3);
    expect(flow.stats().queued).toBe(3);
    const fetched = flow.fetch(victim.traceId);
    expect(await flow.cancel(victim.traceId)).toBe(true);
    await expect(fetched).rejects.toMatchObject({ code: 'ROOST_ERR_TRACE_CANCELLED' });
    expect(flow.stats().queued).toBe(0);
    expect(typesOf(events, victim.traceId)).toEqual(
      expect.arrayContaining(['trace_cancel_start', 'trace_cancel_drop', 'trace_cancel_finish']),
    );
    const drop = events.find((e) => e.type === 'trace_cancel_drop' && e.traceId === victim.traceId);
    expect(drop).toMatchObject({ count: 3 });
    expect(await flow.cancel(victim.traceId)).toBe(false);
    gate.resolve();
    expect(await flow.fetch(keep.traceId)).toEqual(['b', 'c', 'other']);
    expect(signals.every((s) => !s.aborted)).toBe(true);
  });

  it('aborts a running handler and frees its slot at once', async () => {
    ({ rt } = await startRuntime());
    let seen: AbortSignal | undefined;
    const stuck = node('stuck', async (env: Envelope<{ hang: boolean }>, ctx) => {
      if (!env.payload.hang) return 'ok';
      seen = ctx.signal;
      await new Promise(() => {}); // ignores everything
      return 'never';
    });
    const flow = rt.flow({ name: 'cancel2', edges: [stuck.to()] });
    await rt.start();
    const t = await flow.emit({ hang: true });
    await until(() => seen !== undefined);
    const next = await flow.emit({ hang: false });
    await flow.cancel(t.traceId);
    expect(seen!.aborted).toBe(true);
    expect(isRoostError(seen!.reason, 'ROOST_ERR_TRACE_CANCELLED')).toBe(true);
    expect(await flow.fetch(next.traceId)).toBe('ok');
    expect(flow.stats()).toMatchObject({ queued: 0, running: 0, activeTraces: 0 });
  });

  it('stop() cancels every running trace and refuses new ones', async () => {
    ({ rt } = await startRuntime());
    const hang = node('hang', () => new Promise(() => {}));
    const flow = rt.flow({ name: 'stopme', edges: [hang.to()] });
    await rt.start();
    const t = await flow.emit({});
    flow.stop();
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_TRACE_CANCELLED' });
    await expect(flow.emit({})).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE' });
  });
});
