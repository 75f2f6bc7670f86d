import { afterEach, describe, expect, it, vi } from 'vitest';
import type { RoostError} from '../../src/index.js';
import { isRoostError, node, type Envelope, type NodeEvent, type Runtime } from '../../src/index.js';
import { deferred, startRuntime, typesOf, until } from '../helpers/runtime.js';
import { useFakeClock, useRealClock } from '../helpers/clock.js';

let rt: Runtime | undefined;
afterEach(async () => {
  useRealClock();
  await rt?.close();
  rt = undefined;
});

describe('timeouts', () => {
  it('fires the signal, frees the slot, and never delivers the late result', async () => {
    let events;
    ({ rt, events } = await startRuntime());
    const release = deferred();
    let seen: AbortSignal | undefined;
    const work = node(
      'work',
      async (env: Envelope<{ slow: boolean }>, ctx) => {
        if (!env.payload.slow) return 'fast';
        seen = ctx.signal;
        await release.promise; // ignores its abort
        return 'late';
      },
      { timeoutMs: 50 },
    );
    const flow = rt.flow({ name: 'to', edges: [work.to()] });
    await rt.start();
    const slow = await flow.emit({ slow: true });
    const fast = await flow.emit({ slow: false });
    await expect(flow.fetch(slow.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_NODE_TIMEOUT' });
    expect(seen!.aborted).toBe(true);
    expect(isRoostError(seen!.reason, 'ROOST_ERR_NODE_TIMEOUT')).toBe(true);
    // The slot freed at the timeout, although the first handler still runs (concurrency 1).
    expect(await flow.fetch(fast.traceId)).toBe('fast');
    expect(rt.getAgent('work').abandoned).toBe(1);
    release.resolve();
    await until(() => flow.stats().lateResults === 1);
    expect(rt.getAgent('work').abandoned).toBe(0);
    expect(typesOf(events, slow.traceId)).toEqual(['trace_start', 'node_start', 'node_timeout', 'node_failed', 'dead_letter_added', 'trace_failed', 'node_late_result']);
    // A result (or error) is delivered once; the fetch above released it.
    await expect(flow.fetch(slow.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_RESULT_EXPIRED' });
  });

  it('retries after a timeout, and the abandoned attempt cannot overwrite the retry', async () => {
    ({ rt } = await startRuntime());
    const first = deferred<string>();
    const work = node(
      'work',
      async (_env: Envelope, ctx) => {
        if (ctx.attempt === 1) return first.promise;
        return 'second';
      },
      { timeoutMs: 30, retries: 1, backoff: { baseMs: 1, jitter: 0 } },
    );
    const next = node('next', (env: Envelope<string>) => `${env.payload}!`);
    const flow = rt.flow({ name: 'to2', edges: [work.to(next)] });
    await rt.start();
    const t = await flow.emit({});
    await until(() => flow.activeTraces === 0);
    first.resolve('first');
    await until(() => flow.stats().lateResults === 1);
    expect(flow.outcome(t.traceId)).toMatchObject({ status: 'succeeded', result: 'second!' });
    expect(await flow.fetch(t.traceId)).toBe('second!');
  });

  it('the signal fires at the deadline when it comes before the timeout', async () => {
    let events;
    ({ rt, events } = await startRuntime());
    let reason: unknown;
    const work = node(
      'work',
      (_env: Envelope, ctx) =>
        new Promise((_, reject) => {
          ctx.signal.addEventListener('abort', () => {
            reason = ctx.signal.reason;
            reject(ctx.signal.reason as Error);
          });
        }),
      { timeoutMs: 10_000, retries: 3 },
    );
    const flow = rt.flow({ name: 'dl', edges: [work.to()] });
    await rt.start();
    const started = Date.now();
    const t = await flow.emit({}, { deadline: Date.now() + 60 });
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_DEADLINE_EXCEEDED' });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(isRoostError(reason, 'ROOST_ERR_DEADLINE_EXCEEDED')).toBe(true);
    expect(rt.deadLetters.size).toBe(0); // past its deadline: nothing to replay
    // The running handler times out as itself (the trace's own deadline timer comes after it).
    expect(typesOf(events, t.traceId)).toEqual(['trace_start', 'node_start', 'node_timeout', 'node_failed', 'trace_failed', 'node_late_result']);
    expect(rt.getAgent('work').info()).toMatchObject({ runs: 1, failures: 1 });
  });
});

describe('retries', () => {
  it('retries with exponential backoff (fake clock), the same idempotency key, and a rising attempt', async () => {
    useFakeClock(['setTimeout', 'clearTimeout', 'setImmediate']);
    let events;
    ({ rt, events } = await startRuntime());
    const seen: { attempt: number; key: string; at: number }[] = [];
    const flaky = node(
      'flaky',
      (_env: Envelope, ctx) => {
        seen.push({ attempt: ctx.attempt, key: ctx.idempotencyKey, at: Date.now() });
        if (ctx.attempt < 4) throw new Error(`boom ${ctx.attempt}`);
        return 'ok';
      },
      { retries: 3, backoff: { baseMs: 100, multiplier: 2, maxMs: 300, jitter: 0 }, timeoutMs: null },
    );
    const flow = rt.flow({ name: 'retry', edges: [flaky.to()] });
    await rt.start();
    const t = await flow.emit({});
    const result = flow.fetch(t.traceId);
    await vi.advanceTimersByTimeAsync(99);
    expect(seen).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(seen).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(200);
    expect(seen).toHaveLength(3);
    await vi.advanceTimersByTimeAsync(300); // capped at maxMs, not 400
    expect(seen).toHaveLength(4);
    expect(await result).toBe('ok');
    expect(seen.map((s) => s.attempt)).toEqual([1, 2, 3, 4]);
    expect(new Set(seen.map((s) => s.key)).size).toBe(1);
    expect(seen.map((s) => s.at - seen[0]!.at)).toEqual([0, 100, 300, 600]);
    const retries = events.filter((e): e is NodeEvent => e.type === 'node_retry');
    expect(retries.map((e) => e.delayMs)).toEqual([100, 200, 300]);
    expect(retries.map((e) => e.error?.message)).toEqual(['boom 1', 'boom 2', 'boom 3']);
  });

  it('jitter takes up to its share off the delay', async () => {
    const { backoffDelay, DEFAULT_BACKOFF } = await import('../../src/index.js');
    const b = { ...DEFAULT_BACKOFF, baseMs: 1000, jitter: 0.5 };
    expect(backoffDelay(b, 1, () => 0)).toBe(1000);
    expect(backoffDelay(b, 1, () => 0.999999)).toBe(500);
    expect(backoffDelay(b, 3, () => 0)).toBe(4000);
  });

  it('dead-letters after the last retry with the error and attempts, and fails the trace with the cause', async () => {
    ({ rt } = await startRuntime());
    const cause = new Error('always');
    const bad = node(
      'bad',
      () => {
        throw cause;
      },
      { retries: 2, backoff: { baseMs: 1, jitter: 0 } },
    );
    const flow = rt.flow({ name: 'dlq', edges: [bad.to()] });
    await rt.start();
    const t = await flow.emit({ x: 1 });
    const error = (await flow.fetch(t.traceId).catch((e: unknown) => e)) as RoostError;
    expect(error.code).toBe('ROOST_ERR_NODE_FAILED');
    expect(error.cause).toBe(cause);
    const [letter] = rt.deadLetters.list();
    expect(letter).toMatchObject({ flow: 'dlq', node: 'bad', attempts: 3, error: { code: 'ROOST_ERR_NODE_FAILED' } });
    expect(letter!.envelope).toMatchObject({ traceId: t.traceId, payload: { x: 1 }, attempt: 3 });
  });

  it('does not retry a terminal error', async () => {
    ({ rt } = await startRuntime());
    let calls = 0;
    const bad = node(
      'bad',
      () => {
        calls++;
        throw Object.assign(new Error('bad input'), { retryable: false });
      },
      { retries: 5, backoff: { baseMs: 1 } },
    );
    const flow = rt.flow({ name: 'term', edges: [bad.to()] });
    await rt.start();
    const t = await flow.emit({});
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_NODE_FAILED' });
    expect(calls).toBe(1);
  });

  it('replays a dead letter as a new trace with the next attempt', async () => {
    ({ rt } = await startRuntime());
    let broken = true;
    const seen: number[] = [];
    const a = node('a', (env: Envelope<number>) => env.payload + 1);
    const b = node('b', (env: Envelope<number>, ctx) => {
      seen.push(ctx.attempt);
      if (broken) throw new Error('down');
      return env.payload * 10;
    });
    const flow = rt.flow({ name: 'replay', edges: [a.to(b)] });
    await rt.start();
    const t = await flow.emit(1);
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_NODE_FAILED' });
    const [letter] = rt.deadLetters.list();
    broken = false;
    const replayed = await rt.replayDeadLetter(letter!.id);
    expect(replayed).not.toBe(t.traceId);
    expect(await flow.fetch(replayed)).toBe(20);
    expect(seen).toEqual([1, 2]);
    expect(rt.deadLetters.size).toBe(0);
    await expect(rt.replayDeadLetter(letter!.id)).rejects.toMatchObject({ code: 'ROOST_ERR_DEAD_LETTER_NOT_FOUND' });
  });
});

describe('deadlines', () => {
  it('skips an envelope past its deadline and ends the trace with ROOST_ERR_DEADLINE_EXCEEDED', async () => {
    let events;
    ({ rt, events } = await startRuntime());
    let ran = false;
    const gate = deferred();
    const first = node('first', async () => {
      await gate.promise;
      return 1;
    });
    const second = node('second', () => {
      ran = true;
      return 2;
    });
    const flow = rt.flow({ name: 'skip', edges: [first.to(second)] });
    await rt.start();
    const t = await flow.emit({}, { deadline: Date.now() + 30 });
    await new Promise((r) => setTimeout(r, 60));
    gate.resolve();
    // first was already running when the deadline passed: the deadline aborted it.
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_DEADLINE_EXCEEDED' });
    expect(ran).toBe(false);
    const late = await flow.emit({}, { deadline: Date.now() - 1 });
    await expect(flow.fetch(late.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_DEADLINE_EXCEEDED' });
    expect(typesOf(events, late.traceId)).toEqual(['trace_start', 'deadline_skip', 'trace_failed']);
  });
});

describe('validation and middleware', () => {
  it('checks input and output against JSON Schemas, terminally', async () => {
    ({ rt } = await startRuntime());
    let calls = 0;
    const typed = node(
      'typed',
      (env: Envelope<{ n: number }>) => {
        calls++;
        return env.payload.n > 5 ? { wrong: true } : { n: env.payload.n * 2 };
      },
      {
        retries: 3,
        validate: {
          input: { type: 'object', required: ['n'], properties: { n: { type: 'number' } } },
          output: { type: 'object', required: ['n'] },
        },
      },
    );
    const flow = rt.flow({ name: 'schema', edges: [typed.to()] });
    await rt.start();
    expect(await flow.fetch((await flow.emit({ n: 2 })).traceId)).toEqual({ n: 4 });
    await expect(flow.fetch((await flow.emit({ n: 'x' })).traceId)).rejects.toMatchObject({
      code: 'ROOST_ERR_VALIDATION',
      field: 'typed.input.n',
    });
    await expect(flow.fetch((await flow.emit({ n: 9 })).traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_VALIDATION' });
    expect(calls).toBe(2); // bad input never reached the handler; no retries
  });

  it('middleware observes and transforms what goes in and comes out', async () => {
    const log: string[] = [];
    ({ rt } = await startRuntime({
      middlewares: [
        async (env, ctx, next) => {
          log.push(`in ${ctx.node} ${JSON.stringify(env.payload)}`);
          const out = await next({ ...env, payload: (env.payload as number) + 100 });
          return (out as number) * 2;
        },
      ],
    }));
    const a = node('a', (env: Envelope<number>) => env.payload + 1);
    const flow = rt.flow({ name: 'mw', edges: [a.to()] });
    await rt.start();
    expect(await flow.fetch((await flow.emit(1)).traceId)).toBe(204);
    expect(log).toEqual(['in a 1']);
  });

  it('a trace is finished (not expired) when its end events go out, so a listener can read its outcome', async () => {
    ({ rt } = await startRuntime());
    const seen: (string | undefined)[] = [];
    const slow = node('slow', (_env: Envelope, ctx) => new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error))));
    const flow = rt.flow({ name: 'ends', edges: [slow.to()] });
    rt.on((e) => {
      if (e.type === 'trace_cancel_finish' || e.type === 'trace_failed' || e.type === 'trace_success') seen.push(flow.outcome(e.traceId)?.status);
    });
    await rt.start();
    const { traceId } = await flow.emit(1);
    await new Promise((r) => setTimeout(r, 10));
    await flow.cancel(traceId);
    expect(seen).toEqual(['cancelled']);
  });

  it("a handler that throws at once reaches middleware as a rejected promise from next", async () => {
    const seen: string[] = [];
    ({ rt } = await startRuntime({
      middlewares: [
        (env, _ctx, next) =>
          next(env).catch((err: unknown) => {
            seen.push((err as Error).message);
            throw err;
          }),
      ],
    }));
    const a = node('a', () => {
      throw new Error('sync boom');
    });
    const flow = rt.flow({ name: 'mw-sync', edges: [a.to()] });
    await rt.start();
    await expect(flow.fetch((await flow.emit(1)).traceId)).rejects.toThrow('sync boom');
    expect(seen).toEqual(['sync boom']);
  });

  it('ctx gives trace id, tenant, flow, node, deadline and a bound logger', async () => {
    ({ rt } = await startRuntime());
    const a = node('a', (env: Envelope, ctx) => ({
      traceId: ctx.traceId === env.traceId,
      tenant: ctx.tenant,
      flow: ctx.flow,
      node: ctx.node,
      deadline: ctx.deadline,
      logs: typeof ctx.logger.info,
    }));
    const flow = rt.flow({ name: 'ctx', edges: [a.to()] });
    await rt.start();
    const deadline = Date.now() + 60_000;
    const t = await flow.emit({}, { tenant: 'acme', deadline });
    expect(await flow.fetch(t.traceId)).toEqual({ traceId: true, tenant: 'acme', flow: 'ctx', node: 'a', deadline, logs: 'function' });
  });
});
