/**
 * Edge cases a review found: abandoned attempts, user code that throws where the runtime calls
 * it, cancellation races, deadlines of waiting traces, joins with surplus branches, and memory
 * that must follow what is held rather than what went through.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  edge,
  isRoostError,
  join,
  node,
  subflow,
  uuidv7,
  type Envelope,
  type HandlerContext,
  type Runtime,
} from '../../src/index.js';
import { TimerQueue, TimedCallback } from '../../src/resilience/timer-queue.js';
import { deferred, startRuntime, tick, typesOf, until } from '../helpers/runtime.js';

let rt: Runtime | undefined;
afterEach(async () => {
  vi.restoreAllMocks();
  await rt?.close();
  rt = undefined;
});

describe('an abandoned attempt', () => {
  it('keeps a dead ctx while the retry runs: aborted signal, emit and reply refused, its own attempt', async () => {
    ({ rt } = await startRuntime());
    const contexts: HandlerContext[] = [];
    const second = deferred<string>();
    const work = node(
      'work',
      (_env: Envelope, ctx) => {
        contexts.push(ctx);
        return ctx.attempt === 1 ? new Promise(() => {}) : second.promise;
      },
      { timeoutMs: 30, retries: 1, backoff: { baseMs: 1, maxMs: 1, multiplier: 1, jitter: 0 } },
    );
    const flow = rt.flow({ name: 'abandon', edges: [work.to()] });
    await rt.start();
    const t = await flow.emit({});
    await until(() => contexts.length === 2);
    const [first, retry] = contexts as [HandlerContext, HandlerContext];
    // Read after the retry began: the first attempt's view must not have been reset by it.
    expect(first.signal.aborted).toBe(true);
    expect(isRoostError(first.signal.reason, 'ROOST_ERR_NODE_TIMEOUT')).toBe(true);
    expect(first.attempt).toBe(1);
    await expect(first.reply('from the abandoned attempt')).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE' });
    await expect(first.emit('from the abandoned attempt')).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE' });
    expect(retry.signal.aborted).toBe(false);
    expect(retry.attempt).toBe(2);
    expect(retry.idempotencyKey).toBe(first.idempotencyKey);
    second.resolve('from the retry');
    expect(await flow.fetch(t.traceId)).toBe('from the retry');
  });
});

describe('user code that throws where the runtime calls it', () => {
  it('a throwing retryable predicate fails the run with its own error, no retry', async () => {
    let events;
    ({ rt, events } = await startRuntime());
    let calls = 0;
    const work = node(
      'work',
      () => {
        calls++;
        throw new Error('handler failed');
      },
      {
        retries: 3,
        retryable: () => {
          throw new Error('predicate blew up');
        },
      },
    );
    const flow = rt.flow({ name: 'pred', edges: [work.to()] });
    await rt.start();
    const t = await flow.emit({});
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_NODE_FAILED', message: expect.stringContaining('handler failed') });
    expect(calls).toBe(1);
    expect(typesOf(events, t.traceId)).toContain('node_failed');
  });

  it('a throwing random source fails the run instead of escaping', async () => {
    ({ rt } = await startRuntime({
      random: () => {
        throw new Error('no entropy');
      },
    }));
    const work = node(
      'work',
      () => {
        throw new Error('flaky');
      },
      { retries: 2, backoff: { baseMs: 1, maxMs: 10, multiplier: 2, jitter: 0.5 } },
    );
    const flow = rt.flow({ name: 'rand', edges: [work.to()] });
    await rt.start();
    const t = await flow.emit({});
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_NODE_FAILED' });
  });

  it('a thenable whose then throws, or whose then getter throws, fails the run', async () => {
    ({ rt } = await startRuntime());
    const thenThrows = node('then-throws', () => ({
      then(): void {
        throw new Error('bad then');
      },
    }));
    const getterThrows = node('getter-throws', () => ({
      get then(): never {
        throw new Error('bad getter');
      },
    }));
    const a = rt.flow({ name: 'a', edges: [thenThrows.to()] });
    const b = rt.flow({ name: 'b', edges: [getterThrows.to()] });
    await rt.start();
    await expect(a.fetch((await a.emit({})).traceId)).rejects.toMatchObject({ message: expect.stringContaining('bad then') });
    await expect(b.fetch((await b.emit({})).traceId)).rejects.toMatchObject({ message: expect.stringContaining('bad getter') });
    expect(a.stats()).toMatchObject({ activeTraces: 0, running: 0, failed: 1 });
  });

  it('a payload with a throwing getter is refused with a RoostError naming the payload', async () => {
    ({ rt } = await startRuntime());
    const flow = rt.flow({ name: 'getter', edges: [node('n', () => 1).to()] });
    await rt.start();
    const payload = {
      get boom(): never {
        throw new Error('getter');
      },
    };
    await expect(flow.emit(payload)).rejects.toMatchObject({ code: 'ROOST_ERR_ENVELOPE_INVALID', field: 'payload' });
    expect(flow.stats().activeTraces).toBe(0);
  });
});

describe('cancellation races', () => {
  it('a subflow cancelled while its child emit waits for room cancels the child task', async () => {
    ({ rt } = await startRuntime());
    const gate = deferred();
    const ran: string[] = [];
    const inner = node('inner', async (env: Envelope<string>) => {
      ran.push(env.payload);
      await gate.promise;
      return env.payload;
    });
    const child = rt.flow({ name: 'child', edges: [inner.to()], ingressQueue: { capacity: 1 } });
    const parent = rt.flow({ name: 'parent', edges: [subflow('call', child, { timeoutMs: null }).to()] });
    await rt.start();
    await child.emit('a'); // runs
    await until(() => ran.length === 1);
    await child.emit('b'); // fills the ingress edge
    const p = await parent.emit('c'); // its child emit waits for room
    await until(() => child.stats().activeTraces === 3);
    await parent.cancel(p.traceId);
    await until(() => child.stats().cancelled === 1);
    gate.resolve();
    await until(() => child.stats().activeTraces === 0);
    await tick();
    expect(ran).toEqual(['a', 'b']); // the parent's task never ran in the child
  });

  it('a cancelled handler that ignores its abort counts as abandoned until it settles', async () => {
    ({ rt } = await startRuntime());
    const release = deferred();
    const started = deferred();
    const agent = rt.agent({
      name: 'stubborn',
      handler: async () => {
        started.resolve();
        await release.promise;
        return 1;
      },
    });
    const flow = rt.flow({ name: 'f', edges: [node(agent).to()] });
    await rt.start();
    const t = await flow.emit({});
    await started.promise;
    await flow.cancel(t.traceId);
    expect(agent.abandoned).toBe(1);
    release.resolve();
    await until(() => agent.abandoned === 0);
    expect(flow.stats().lateResults).toBe(0); // a cancelled run's settling is not a late result
  });

  it('many cancelled handlers that honour their abort never quarantine the agent', async () => {
    ({ rt } = await startRuntime({ quarantine: { maxAbandoned: 2 } }));
    let started = 0;
    const agent = rt.agent({
      name: 'polite',
      handler: (_env, ctx) =>
        new Promise((_resolve, reject) => {
          started++;
          ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error));
        }),
      policy: { concurrency: 10 },
    });
    const flow = rt.flow({ name: 'f', edges: [node(agent).to()] });
    await rt.start();
    const ids = await Promise.all(Array.from({ length: 10 }, (_, i) => flow.emit(i)));
    await until(() => started === 10);
    // All at once, in one synchronous loop: ten handlers aborted before any could settle.
    for (const t of ids) void flow.cancel(t.traceId);
    expect(agent.abandoned).toBe(10);
    await tick();
    await tick();
    expect(agent.abandoned).toBe(0);
    expect(agent.state).toBe('ready');
  });

  it('a cancelled handler whose emit evicted its own envelope (drop_oldest) is told so', async () => {
    ({ rt } = await startRuntime());
    const gate = deferred();
    const results: PromiseSettledResult<void>[] = [];
    const blocker = node('sink', async () => {
      await gate.promise;
      return 'done';
    });
    const source = node('source', async (env: Envelope<string>, ctx) => {
      if (env.payload === 'hold') return 'hold';
      // The sink is busy; the edge holds one: the second emit evicts the first, of this trace.
      results.push(...(await Promise.allSettled([ctx.emit('one'), ctx.emit('two')])));
      return undefined;
    });
    const flow = rt.flow({
      name: 'drop',
      edges: [source.to(edge(blocker, { capacity: 1, overflow: 'drop_oldest' }))],
      ingressQueue: { capacity: 4 },
    });
    await rt.start();
    await flow.emit('hold'); // occupies the sink
    await until(() => flow.stats().running === 1 && flow.stats().queued === 0);
    const t = await flow.emit('go');
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_QUEUE_FULL' });
    await until(() => results.length === 2);
    expect(results[1]).toMatchObject({ status: 'rejected', reason: { code: 'ROOST_ERR_QUEUE_FULL' } });
    gate.resolve();
  });
});

describe('a send that fails its own trace', () => {
  it('rejects ctx.emit once, and the other edge\'s abandoned wait is no unhandled rejection', async () => {
    ({ rt } = await startRuntime());
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const gate = deferred();
      const blocked = async (): Promise<string> => {
        await gate.promise;
        return 'done';
      };
      const b = node('b', blocked, { timeoutMs: null });
      const c = node('c', blocked, { timeoutMs: null });
      let seen: unknown;
      const src = node('src', async (env: Envelope<string>, ctx) => {
        if (env.payload === 'fill') return 'fill';
        await ctx.emit('x').catch((e: unknown) => (seen = e));
        return undefined;
      });
      const flow = rt.flow({
        name: 'two-edges',
        edges: [src.to(edge(b, { capacity: 1, overflow: 'wait' }), edge(c, { capacity: 1, overflow: 'reject' }))],
        ingressQueue: { capacity: 8 },
      });
      await rt.start();
      await flow.emit('fill'); // b and c each run one, blocked
      await until(() => flow.stats().running === 2);
      await flow.emit('fill'); // fills both edges
      await until(() => flow.stats().queued === 2);
      const t = await flow.emit('go'); // waits on b's edge, is refused by c's: the trace fails
      await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_QUEUE_FULL' });
      await until(() => seen !== undefined);
      expect(seen).toMatchObject({ code: 'ROOST_ERR_QUEUE_FULL' });
      await tick();
      await tick();
      expect(unhandled).toEqual([]);
      gate.resolve();
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});

describe('deadlines of traces that wait', () => {
  it('a trace queued behind a busy node fails at its deadline, not when it is dequeued', async () => {
    ({ rt } = await startRuntime());
    const gate = deferred();
    const busy = node('busy', async () => {
      await gate.promise;
      return 1;
    }, { timeoutMs: null });
    const flow = rt.flow({ name: 'dl', edges: [busy.to()] });
    await rt.start();
    await flow.emit({}); // holds the only slot until the gate opens
    const started = Date.now();
    const t = await flow.emit({}, { deadline: started + 100 });
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_DEADLINE_EXCEEDED' });
    expect(Date.now() - started).toBeLessThan(5_000); // the gate never opened: only the deadline ended it
    expect(flow.stats().queued).toBe(0);
    gate.resolve();
  });

  it('a trace parked behind a quarantined agent fails at its deadline', async () => {
    ({ rt } = await startRuntime({ quarantine: { mode: 'park' } }));
    const agent = rt.agent({ name: 'parked', handler: () => 1 });
    const flow = rt.flow({ name: 'park', edges: [node(agent).to()] });
    await rt.start();
    rt.quarantine('parked');
    const t = await flow.emit({}, { deadline: Date.now() + 100 });
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_DEADLINE_EXCEEDED' });
    expect(flow.stats()).toMatchObject({ activeTraces: 0, queued: 0 });
  });

  it('a deadline beyond the 24.8-day setTimeout limit neither fires early nor spins', () => {
    const setTimeoutSpy = vi.spyOn(globalThis, 'setTimeout');
    const fired: number[] = [];
    const timers = new TimerQueue();
    timers.schedule(new TimedCallback(() => fired.push(1)), Date.now() + 30 * 24 * 3600 * 1000);
    expect(setTimeoutSpy).toHaveBeenCalledTimes(1);
    expect(setTimeoutSpy.mock.calls[0]![1]).toBe(2_147_483_647);
    expect(fired).toEqual([]);
    timers.close();
  });
});

describe('joins', () => {
  it('a join of k below the arriving branches fires once; the surplus is dropped with join_surplus', async () => {
    let events;
    ({ rt, events } = await startRuntime());
    const fan = node('fan', () => 1);
    const a = node('a', () => 'a');
    const b = node('b', async () => {
      await new Promise((r) => setTimeout(r, 5));
      return 'b';
    });
    const c = node('c', async () => {
      await new Promise((r) => setTimeout(r, 20));
      return 'c';
    });
    const first2 = join('first2', { k: 2, timeoutMs: 200 });
    const out = node('out', (env: Envelope<string[]>) => env.payload.length);
    const flow = rt.flow({ name: 'quorum', edges: [fan.to(a, b, c), a.to(first2), b.to(first2), c.to(first2), first2.to(out)] });
    await rt.start();
    const t = await flow.emit({});
    expect(await flow.fetch(t.traceId)).toBe(2);
    expect(typesOf(events, t.traceId).filter((x) => x === 'join_surplus')).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 400)); // past the join's timeout: nothing fails late
    expect(flow.stats()).toMatchObject({ succeeded: 1, failed: 0, joinsWaiting: 0, activeTraces: 0 });
  });
});

describe('memory follows what is held', () => {
  it('fetched results do not pile up behind one held unfetched result', async () => {
    ({ rt } = await startRuntime({ results: { ttlMs: 600_000, max: 10_000 } }));
    const flow = rt.flow({ name: 'held', edges: [node('n', (env: Envelope<number>) => env.payload).to()] });
    await rt.start();
    const held = await flow.emit(-1);
    await until(() => flow.stats().activeTraces === 0);
    for (let i = 0; i < 5_000; i++) await flow.fetch((await flow.emit(i)).traceId);
    // Internal: the FIFO of finished traces (reached into because nothing public shows it).
    const internal = flow as unknown as { finished: unknown[]; finishedHead: number };
    expect(internal.finished.length - internal.finishedHead).toBeLessThan(2_000);
    expect(await flow.fetch(held.traceId)).toBe(-1);
  });

  it('a trace id from the future does not make unknown ids look expired', async () => {
    ({ rt } = await startRuntime());
    const flow = rt.flow({ name: 'future', edges: [node('n', () => 1).to()] });
    await rt.start();
    // Made by hand (a caller's id), not by uuidv7(), whose clock would then move on too.
    const ms = (Date.now() + 365 * 24 * 3600 * 1000).toString(16).padStart(12, '0');
    const future = `${ms.slice(0, 8)}-${ms.slice(8)}-7000-8000-000000000001`;
    await flow.fetch((await flow.emit({}, { traceId: future })).traceId);
    await new Promise((r) => setTimeout(r, 5));
    // An id minted after that fetch is unknown, not expired (the watermark stopped at now).
    await expect(flow.fetch(uuidv7())).rejects.toMatchObject({ code: 'ROOST_ERR_TRACE_NOT_FOUND' });
  });
});

describe('close after drain', () => {
  it('close() bounds a drain() started without a timeout', async () => {
    ({ rt } = await startRuntime({ drainTimeoutMs: 100 }));
    const flow = rt.flow({ name: 'stuck', edges: [node('stuck', () => new Promise(() => {}), { timeoutMs: null }).to()] });
    await rt.start();
    await flow.emit({});
    await until(() => flow.stats().running === 1);
    const draining = rt.drain();
    const started = Date.now();
    await rt.close();
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(rt.state).toBe('stopped');
    await draining;
  });
});
