/**
 * The fleet's protocol between an owner and its workers, with every process in this one (the
 * in-process transport, a broker of their own): what crosses processes for real is in
 * fleet.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { InProcessBroker, InProcessTransport, createRuntime, node, type Envelope, type Runtime, type RoostEvent, type Handler } from '../../src/index.js';
import { until } from '../helpers/runtime.js';

const open: Runtime[] = [];
afterEach(async () => {
  for (const rt of open.splice(0).reverse()) await rt.close();
});

interface App {
  readonly mid: Handler;
  readonly policy?: { timeoutMs?: number; retries?: number; concurrency?: number };
}

/** The same app on every process: a → mid → c. */
function setup(rt: Runtime, app: App): void {
  const a = node('a', (env) => ({ n: (env.payload as { n: number }).n + 1 }));
  const mid = node('mid', app.mid, { concurrency: 4, ...app.policy });
  const c = node('c', (env) => ({ ...(env.payload as object), c: true }));
  rt.flow({ name: 'f', edges: [a.to(mid), mid.to(c), c.to()] });
}

async function fleet(app: App, options: { workers?: number; leaseMs?: number } = {}): Promise<{ owner: Runtime; workers: Runtime[]; events: RoostEvent[]; broker: InProcessBroker }> {
  const broker = new InProcessBroker();
  const ns = `t${Math.random().toString(36).slice(2, 8)}`;
  const leaseMs = options.leaseMs ?? 2_000;
  const workers: Runtime[] = [];
  for (let i = 0; i < (options.workers ?? 1); i++) {
    const w = createRuntime({ logger: false, drainTimeoutMs: 1_000, fleet: { transport: new InProcessTransport({ broker }), namespace: ns, id: `w${i}`, role: 'worker', host: ['f/mid'], leaseMs } });
    setup(w, app);
    open.push(w);
    await w.start();
    workers.push(w);
  }
  const owner = createRuntime({ logger: false, drainTimeoutMs: 1_000, fleet: { transport: new InProcessTransport({ broker }), namespace: ns, id: 'owner', remote: ['f/mid'], leaseMs } });
  const events: RoostEvent[] = [];
  owner.on((e) => events.push(e));
  setup(owner, app);
  open.push(owner);
  await owner.start();
  return { owner, workers, events, broker };
}

describe('fleet over the in-process transport', () => {
  it('runs a remote node on a worker and the rest on the owner', async () => {
    const seen: string[] = [];
    const { owner, workers } = await fleet({
      mid: (env, ctx) => {
        seen.push(ctx.node);
        return { ...(env.payload as object), mid: ctx.attempt };
      },
    });
    const flow = owner.getFlow('f')!;
    const { traceId } = await flow.emit({ n: 1 });
    await expect(flow.fetch(traceId)).resolves.toEqual({ n: 2, mid: 1, c: true });
    expect(seen).toEqual(['mid']);
    expect(workers[0]!.fleet!.stats().worker).toMatchObject({ completed: 1, failed: 0 });
    expect(owner.fleet!.stats().dispatcher).toMatchObject({ dispatched: 1, outstanding: 0 });
  });

  it('relays ctx.emit, ctx.chunk and steps, and the error of a throwing handler drives the owner\'s retries', async () => {
    let calls = 0;
    let effects = 0;
    const { owner } = await fleet({
      policy: { retries: 2 },
      mid: async (_env, ctx) => {
        calls++;
        ctx.chunk({ progress: calls });
        await ctx.step('charge', () => ++effects);
        if (calls < 3) throw new Error(`flaky ${calls}`);
        await ctx.emit({ extra: true });
        return undefined;
      },
    });
    const flow = owner.getFlow('f')!;
    const { traceId } = await flow.emit({ n: 1 });
    await expect(flow.fetch(traceId)).resolves.toEqual({ extra: true, c: true });
    expect(calls).toBe(3);
    expect(effects).toBe(1); // the step ran once over three attempts (retries keep the input's step key)
  });

  it('a terminal error fails the trace with the worker\'s code; a plain error is wrapped as locally', async () => {
    const { owner } = await fleet({
      mid: (env) => {
        if ((env.payload as { n: number }).n === 2) throw Object.assign(new Error('no'), { retryable: false });
        throw new TypeError('bad');
      },
      policy: { retries: 3 },
    });
    const flow = owner.getFlow('f')!;
    const one = await flow.emit({ n: 1 });
    await expect(flow.fetch(one.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_NODE_FAILED', message: expect.stringContaining('after 1 attempt(s): no') });
    const two = await flow.emit({ n: 5 });
    await expect(flow.fetch(two.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_NODE_FAILED', message: expect.stringContaining('after 4 attempt(s): bad') });
    expect(owner.deadLetters.size).toBe(2);
  });

  it('cancel on the owner aborts the handler on the worker', async () => {
    let aborted: unknown = null;
    const started: string[] = [];
    const { owner } = await fleet({
      mid: (env, ctx) =>
        new Promise((_, reject) => {
          started.push(env.traceId);
          ctx.signal.addEventListener('abort', () => {
            aborted = ctx.signal.reason;
            reject(ctx.signal.reason as Error);
          });
        }),
    });
    const flow = owner.getFlow('f')!;
    const { traceId } = await flow.emit({ n: 1 });
    await until(() => started.length === 1, 5_000, 'the worker started');
    await flow.cancel(traceId);
    await expect(flow.fetch(traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_TRACE_CANCELLED' });
    await until(() => aborted !== null, 5_000, 'the worker saw the abort');
    expect(aborted).toMatchObject({ code: 'ROOST_ERR_TRACE_CANCELLED' });
  });

  it('a node timeout aborts the worker\'s handler, and the retry runs again', async () => {
    const reasons: string[] = [];
    let calls = 0;
    const { owner } = await fleet({
      policy: { timeoutMs: 200, retries: 1 },
      mid: (env, ctx) => {
        calls++;
        if (calls === 2) return env.payload;
        return new Promise((_, reject) => ctx.signal.addEventListener('abort', () => {
          reasons.push((ctx.signal.reason as { code: string }).code);
          reject(ctx.signal.reason as Error);
        }));
      },
    });
    const flow = owner.getFlow('f')!;
    const { traceId } = await flow.emit({ n: 1 });
    await expect(flow.fetch(traceId)).resolves.toEqual({ n: 2, c: true });
    await until(() => reasons.length === 1, 5_000, 'the first attempt aborted on the worker');
    expect(reasons[0]).toBe('ROOST_ERR_NODE_TIMEOUT');
  });

  it('a remote node\'s timeout runs from the start of the run on the worker, not while the task waits there for a slot', async () => {
    // Concurrency 1 on the worker, 30 tasks of 100 ms each, a timeout of 1 s: most wait longer
    // than the timeout for their slot, none runs longer than it.
    const { owner } = await fleet({ policy: { concurrency: 1, timeoutMs: 1_000 }, mid: (env) => new Promise((r) => setTimeout(() => r(env.payload), 100)) });
    const flow = owner.getFlow('f')!;
    const traces = await Promise.all(Array.from({ length: 30 }, (_, i) => flow.emit({ n: i })));
    const outcomes = await Promise.all(traces.map((t) => flow.fetch(t.traceId).then(() => 'ok', (e: { code?: string }) => e.code ?? 'error')));
    expect(outcomes.filter((o) => o !== 'ok')).toEqual([]);
  }, 20_000);

  it('a handler that ignores its abort past the timeout: the owner hears of the timeout at once, and retries', async () => {
    let calls = 0;
    const { owner, workers } = await fleet({
      policy: { timeoutMs: 200, retries: 1 },
      mid: (env) => {
        calls++;
        return calls === 1 ? new Promise(() => {}) : env.payload; // the first never settles
      },
    });
    const flow = owner.getFlow('f')!;
    const start = Date.now();
    const { traceId } = await flow.emit({ n: 1 });
    await expect(flow.fetch(traceId)).resolves.toEqual({ n: 2, c: true });
    expect(Date.now() - start).toBeLessThan(1_500); // not a lease (2 s): the worker answered the timeout
    expect(calls).toBe(2);
    expect(workers[0]!.listAgents().find((a) => a.name === 'mid')!.abandoned).toBe(1);
  });

  it('backpressure crosses processes: a worker\'s ctx.emit waits while the owner\'s next edge is full', async () => {
    const broker = new InProcessBroker();
    const ns = `t${Math.random().toString(36).slice(2, 8)}`;
    const seen: number[] = [];
    let handlerMs = -1;
    const app = (rt: Runtime): void => {
      const mid = node('mid', async (_env, ctx) => {
        const start = Date.now();
        for (let i = 0; i < 30; i++) await ctx.emit({ i });
        handlerMs = Date.now() - start;
        return undefined;
      });
      const slow = node('slow', (env) => new Promise((r) => setTimeout(() => r(seen.push((env.payload as { i: number }).i)), 10)));
      rt.flow({ name: 'bp', edges: [mid.to(slow), slow.to()], queueCapacity: 2 });
    };
    const w = createRuntime({ logger: false, drainTimeoutMs: 500, fleet: { transport: new InProcessTransport({ broker }), namespace: ns, id: 'w', role: 'worker', host: ['bp/mid'] } });
    app(w);
    open.push(w);
    await w.start();
    const owner = createRuntime({ logger: false, drainTimeoutMs: 500, fleet: { transport: new InProcessTransport({ broker }), namespace: ns, id: 'o', remote: ['bp/mid'] } });
    app(owner);
    open.push(owner);
    await owner.start();
    const flow = owner.getFlow('bp')!;
    const { traceId } = await flow.emit({});
    await flow.fetch(traceId);
    expect(seen).toEqual(Array.from({ length: 30 }, (_, i) => i));
    // 30 emits into an edge of 2 in front of a 10 ms node: the handler keeps the node's pace
    // (about 280 ms); without backpressure its emits would all resolve within a few ms.
    expect(handlerMs).toBeGreaterThan(150);
  });

  it('a worker that stops answering: the lease runs out and another worker gets the envelope', async () => {
    let first = true;
    const { owner, workers, events } = await fleet(
      {
        mid: async (env) => {
          if (first) {
            first = false;
            await new Promise(() => {}); // the first run never settles: its worker hangs
          }
          return env.payload;
        },
      },
      { workers: 2, leaseMs: 300 },
    );
    // The hanging worker's heartbeats would renew the lease: cut it off by closing its transport.
    const flow = owner.getFlow('f')!;
    const { traceId } = await flow.emit({ n: 1 });
    await until(() => workers.some((w) => w.fleet!.stats().worker!.held === 1), 5_000, 'a worker holds it');
    const stuck = workers.find((w) => w.fleet!.stats().worker!.held === 1)!;
    void stuck.fleet!.transport.close(); // its subscriptions end now; its close waits for the hanging run
    await expect(flow.fetch(traceId)).resolves.toEqual({ n: 2, c: true });
    expect(events.filter((e) => e.type === 'dispatch_redelivered')).toHaveLength(1);
  });

  it('routes first deliveries by the registry: the least-loaded worker with room gets them', async () => {
    const broker = new InProcessBroker();
    const ns = `t${Math.random().toString(36).slice(2, 8)}`;
    const held: string[] = [];
    const release: (() => void)[] = [];
    const hang =
      (who: string): Handler =>
      (env) =>
        new Promise((resolve) => {
          held.push(who);
          release.push(() => resolve(env.payload));
        });
    const opts = (id: string, role: 'owner' | 'worker') =>
      ({ transport: new InProcessTransport({ broker }), namespace: ns, id, role, heartbeatMs: 20, ...(role === 'worker' ? { host: ['f/mid'] } : { remote: ['f/mid'] }) }) as const;
    for (const [id, concurrency] of [['small', 1], ['big', 8]] as const) {
      const w = createRuntime({ logger: false, drainTimeoutMs: 500, fleet: opts(id, 'worker') });
      setup(w, { mid: hang(id), policy: { concurrency } });
      open.push(w);
      await w.start();
    }
    const owner = createRuntime({ logger: false, drainTimeoutMs: 500, fleet: opts('owner', 'owner') });
    setup(owner, { mid: hang('owner') });
    open.push(owner);
    await owner.start();
    await until(() => owner.fleet!.list().filter((p) => p.nodes.includes('f/mid')).length === 2, 5_000, 'both workers in the registry');
    const flow = owner.getFlow('f')!;
    const traces = await Promise.all(Array.from({ length: 8 }, (_, i) => flow.emit({ n: i })));
    await until(() => held.length === 8, 5_000, 'all eight running');
    // By capacity and what the owner has out with each: one to `small`, seven to `big` (the
    // broker's round-robin over the group would have given each four).
    expect(held.filter((w) => w === 'small')).toHaveLength(1);
    expect(held.filter((w) => w === 'big')).toHaveLength(7);
    for (const r of release) r();
    await Promise.all(traces.map((t) => flow.fetch(t.traceId)));
  });

  it('acknowledges the tasks taken together, shortly after, and a task answered by then not at all; answers of one turn go out in one run', async () => {
    // What the worker publishes to the owner, grouped by synchronous run (a microtask checkpoint
    // ends one): a transport writes what one run publishes as one socket write.
    const runs: { t: string; ks: number }[][] = [];
    let run: { t: string; ks: number }[] | null = null;
    class Recording extends InProcessTransport {
      override publish(topic: string, env: Envelope): Promise<void> {
        if (topic.includes('/owner/')) {
          if (run === null) {
            runs.push((run = []));
            queueMicrotask(() => (run = null));
          }
          const m = env.payload as { t: string; ks?: string[] };
          run.push({ t: m.t, ks: m.ks?.length ?? 0 });
        }
        return super.publish(topic, env);
      }
    }
    const broker = new InProcessBroker();
    const ns = `t${Math.random().toString(36).slice(2, 8)}`;
    const release: (() => void)[] = [];
    const app: App = {
      policy: { concurrency: 8 },
      // n > 100: a short task (5 ms); else one that waits to be released.
      mid: (env) => new Promise((resolve) => ((env.payload as { n: number }).n > 100 ? setTimeout(() => resolve(env.payload), 5) : release.push(() => resolve(env.payload)))),
    };
    const w = createRuntime({ logger: false, drainTimeoutMs: 1_000, fleet: { transport: new Recording({ broker }), namespace: ns, id: 'w', role: 'worker', host: ['f/mid'] } });
    setup(w, app);
    open.push(w);
    await w.start();
    const owner = createRuntime({ logger: false, drainTimeoutMs: 1_000, fleet: { transport: new InProcessTransport({ broker }), namespace: ns, id: 'owner', remote: ['f/mid'] } });
    setup(owner, app);
    open.push(owner);
    await owner.start();
    const flow = owner.getFlow('f')!;
    const traces = await Promise.all(Array.from({ length: 8 }, (_, n) => flow.emit({ n })));
    await until(() => release.length === 8, 5_000, 'the worker runs all 8');
    // The 8 tasks came together: acknowledged by one beat, no ack each.
    await until(() => runs.length > 0, 5_000, 'the acknowledgement');
    expect(runs).toEqual([[{ t: 'beat', ks: 8 }]]);
    // The handlers finish in 8 callbacks of one turn (immediates queued together run in one check
    // phase, microtasks between them): their answers still go out in one run.
    for (const r of release) setImmediate(r);
    const results = await Promise.all(traces.map((t) => flow.fetch(t.traceId)));
    expect(results).toEqual(Array.from({ length: 8 }, (_, n) => ({ n: n + 1, c: true })));
    const answers = runs.filter((r) => r.some((m) => m.t === 'done'));
    expect(answers).toHaveLength(1);
    expect(answers[0]!.filter((m) => m.t === 'done')).toHaveLength(8);
    // A task answered within the acknowledgement's delay: its answer is all the owner hears of it.
    runs.length = 0;
    const quick = await flow.emit({ n: 200 });
    await expect(flow.fetch(quick.traceId)).resolves.toEqual({ n: 201, c: true });
    await new Promise((r) => setTimeout(r, 50)); // past the acknowledgement's delay
    expect(runs.flat()).toEqual([{ t: 'done', ks: 0 }]);
  });

  it('a process that begins to drain says draining in its presence at once', async () => {
    const { owner, workers } = await fleet({ mid: (env) => env.payload });
    await until(() => owner.fleet!.list().some((p) => p.id === 'w0' && p.status === 'available'), 5_000, 'the worker available');
    void workers[0]!.drain();
    await until(() => owner.fleet!.list().some((p) => p.id === 'w0' && p.status === 'draining'), 2_000, 'the worker draining');
  });

  it('refuses options that name no node, and bad option values', async () => {
    expect(() => createRuntime({ fleet: { transport: 'ftp://x' } })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'fleet.transport' }));
    expect(() => createRuntime({ fleet: { transport: new InProcessTransport(), remote: ['nope'] } })).toThrow(expect.objectContaining({ field: 'fleet.remote' }));
    expect(() => createRuntime({ fleet: { transport: new InProcessTransport(), leaseMs: 1 } })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION' }));
    const rt = createRuntime({ logger: false, fleet: { transport: new InProcessTransport(), remote: ['f/zzz'] } });
    setup(rt, { mid: (e) => e.payload });
    await expect(rt.start()).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'fleet.remote' });
    await rt.close();
  });
});
