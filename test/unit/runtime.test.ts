import { afterEach, describe, expect, it, vi } from 'vitest';
import { createRuntime, edge, join, node, route, routeBy, type Envelope, type Runtime } from '../../src/index.js';
import { deferred, startRuntime, tick, until } from '../helpers/runtime.js';
import { useFakeClock, useRealClock } from '../helpers/clock.js';

let rt: Runtime | undefined;
afterEach(async () => {
  useRealClock();
  await rt?.close();
  rt = undefined;
});

describe('lifecycle', () => {
  it('moves created → running → draining → stopped, and refuses illegal transitions with a code', async () => {
    rt = createRuntime({ logger: false });
    const a = node('a', () => 1);
    const flow = rt.flow({ name: 'f', edges: [a.to()] });
    expect(rt.state).toBe('created');
    await expect(flow.emit({})).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE', received: 'created' });
    await expect(rt.drain()).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE' });
    await rt.start();
    expect(rt.state).toBe('running');
    await expect(rt.start()).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE' });
    await rt.drain();
    expect(rt.state).toBe('stopped');
    await expect(flow.emit({})).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE' });
    expect(() => rt!.agent({ name: 'late', handler: () => 1 })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_STATE' }));
  });

  it('drain waits for traces in flight and refuses new ones meanwhile', async () => {
    ({ rt } = await startRuntime());
    const gate = deferred();
    const slow = node('slow', async () => {
      await gate.promise;
      return 'done';
    });
    const flow = rt.flow({ name: 'f', edges: [slow.to()] });
    await rt.start();
    const t = await flow.emit({});
    const result = flow.fetch(t.traceId);
    let drained = false;
    const draining = rt.drain().then(() => (drained = true));
    expect(rt.drain()).toBe(rt.drain());
    await tick();
    expect(rt.state).toBe('draining');
    expect(drained).toBe(false);
    await expect(flow.emit({})).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE' });
    gate.resolve();
    await draining;
    expect(await result).toBe('done');
    expect(rt.state).toBe('stopped');
  });

  it('close drains with a grace time, then cancels; repeat calls share one promise; async dispose closes', async () => {
    const r = createRuntime({ logger: false, drainTimeoutMs: 50 });
    const hang = node('hang', () => new Promise(() => {}));
    const flow = r.flow({ name: 'f', edges: [hang.to()] });
    await r.start();
    const t = await flow.emit({});
    const fetched = flow.fetch(t.traceId);
    const closing = r.close();
    expect(r.close()).toBe(closing);
    await closing;
    await expect(fetched).rejects.toMatchObject({ code: 'ROOST_ERR_TRACE_CANCELLED' });
    expect(r.state).toBe('stopped');
    expect(r.stats().timers).toBe(0);
    {
      await using disposable = createRuntime({ logger: false });
      await disposable.start();
      rt = disposable;
    }
    expect(rt.state).toBe('stopped');
  });
});

describe('options', () => {
  it('rejects unknown and out-of-range options naming the field, and freezes the resolved options', () => {
    expect(() => createRuntime({ limits: { maxAgents: 0 } })).toThrow(
      expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'limits.maxAgents', message: expect.stringContaining('got 0 (number)') }),
    );
    expect(() => createRuntime({ bogus: 1 } as never)).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'options.bogus' }));
    expect(() => createRuntime({ quarantine: { mode: 'nap' as never } })).toThrow(expect.objectContaining({ field: 'quarantine.mode' }));
    const input = { limits: { maxAgents: 5 } };
    const r = createRuntime({ ...input, logger: false });
    expect(Object.isFrozen(r.options)).toBe(true);
    expect(Object.isFrozen(r.options.limits)).toBe(true);
    expect(r.options.limits.maxAgents).toBe(5);
    expect(input).toEqual({ limits: { maxAgents: 5 } });
  });

  it('rejects bad node policies and flow options with the field', () => {
    const r = createRuntime({ logger: false });
    expect(() => r.flow({ name: 'f', edges: [node('a', () => 1, { timeoutMs: -5 }).to()] })).toThrow(
      expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'flow(f).node(a).policy.timeoutMs' }),
    );
    expect(() => r.flow({ name: 'g', edges: [node('b', () => 1).to()], queueCapacity: 0 })).toThrow(expect.objectContaining({ field: 'flow(g).queueCapacity' }));
    expect(() => r.flow({ name: 'bad name', edges: [] })).toThrow(expect.objectContaining({ field: 'flow.name' }));
    expect(() => r.flow({ name: 'h', edges: [] })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_FLOW_INVALID' }));
  });
});

describe('limits', () => {
  it('maxAgents → ROOST_ERR_RESOURCE_LIMIT; duplicate names → ROOST_ERR_ALREADY_EXISTS', () => {
    const r = createRuntime({ logger: false, limits: { maxAgents: 2 } });
    r.agent({ name: 'a', handler: () => 1 });
    expect(() => r.agent({ name: 'a', handler: () => 1 })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_ALREADY_EXISTS' }));
    r.agent({ name: 'b', handler: () => 1 });
    expect(() => r.agent({ name: 'c', handler: () => 1 })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_RESOURCE_LIMIT', field: 'limits.maxAgents' }));
  });

  it('maxInFlightTraces → emit refused with ROOST_ERR_RESOURCE_LIMIT until one ends', async () => {
    ({ rt } = await startRuntime({ limits: { maxInFlightTraces: 2 } }));
    const gate = deferred();
    const slow = node('slow', async () => {
      await gate.promise;
      return 1;
    });
    const flow = rt.flow({ name: 'f', edges: [slow.to()] });
    await rt.start();
    const t1 = await flow.emit({});
    await flow.emit({});
    await expect(flow.emit({})).rejects.toMatchObject({ code: 'ROOST_ERR_RESOURCE_LIMIT', field: 'limits.maxInFlightTraces' });
    gate.resolve();
    await flow.fetch(t1.traceId);
    await until(() => rt!.stats().inFlightTraces === 0);
    await flow.emit({});
  });

  it('maxConcurrentRuns → a flow that would exceed it is refused with ROOST_ERR_RESOURCE_LIMIT', () => {
    const r = createRuntime({ logger: false, limits: { maxConcurrentRuns: 10 } });
    r.flow({ name: 'f1', edges: [node('a', () => 1, { concurrency: 6 }).to()] });
    expect(() => r.flow({ name: 'f2', edges: [node('b', () => 1, { concurrency: 5 }).to()] })).toThrow(
      expect.objectContaining({ code: 'ROOST_ERR_RESOURCE_LIMIT', field: 'limits.maxConcurrentRuns' }),
    );
    expect(r.stats().reservedRuns).toBe(6);
    r.flow({ name: 'f3', edges: [node('c', () => 1, { concurrency: 4 }).to()] });
  });

  it('a payload over the cap → ROOST_ERR_PAYLOAD_TOO_LARGE; a payload that is not JSON → ROOST_ERR_ENVELOPE_INVALID', async () => {
    ({ rt } = await startRuntime({ maxPayloadBytes: 1024 }));
    const flow = rt.flow({ name: 'f', edges: [node('a', () => 1).to()] });
    await rt.start();
    await expect(flow.emit({ big: 'x'.repeat(2000) })).rejects.toMatchObject({ code: 'ROOST_ERR_PAYLOAD_TOO_LARGE', field: 'payload' });
    await expect(flow.emit({ n: 1n })).rejects.toMatchObject({ code: 'ROOST_ERR_ENVELOPE_INVALID', field: 'payload' });
    await expect(flow.emit({}, { tenant: 'no spaces' })).rejects.toMatchObject({ code: 'ROOST_ERR_ENVELOPE_INVALID', field: 'emit.options.tenant' });
    await expect(flow.emit({}, { traceId: 'not-a-uuid' })).rejects.toMatchObject({ code: 'ROOST_ERR_ENVELOPE_INVALID', field: 'emit.options.traceId' });
    await expect(flow.emit({}, { deadline: 1.5 })).rejects.toMatchObject({ field: 'emit.options.deadline' });
    await expect(flow.emit({}, { tenatn: 'x' } as never)).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'emit.options.tenatn' });
    expect(rt.stats().inFlightTraces).toBe(0);
  });
});

describe('quarantine', () => {
  it('quarantines by failure ratio in the window, refuses its work, and restore brings it back', async () => {
    let events;
    ({ rt, events } = await startRuntime({ quarantine: { minRuns: 10, failureRatio: 0.5, windowMs: 60_000 } }));
    let failing = true;
    const agent = rt.agent({
      name: 'shaky',
      handler: () => {
        if (failing) throw new Error('down');
        return 'up';
      },
    });
    const flow = rt.flow({ name: 'f', edges: [node(agent).to()] });
    await rt.start();
    for (let i = 0; i < 10; i++) await flow.fetch((await flow.emit(i)).traceId).catch(() => {});
    expect(agent.state).toBe('quarantined');
    expect(events.find((e) => e.type === 'agent_quarantined')).toMatchObject({ agent: 'shaky', reason: 'failure_ratio', runs: 10, failures: 10 });
    await expect(flow.emit({})).rejects.toMatchObject({ code: 'ROOST_ERR_QUARANTINED' });
    failing = false;
    rt.restore('shaky');
    expect(agent.state).toBe('ready');
    expect(events.at(-1)).toMatchObject({ type: 'agent_restored', agent: 'shaky' });
    expect(await flow.fetch((await flow.emit({})).traceId)).toBe('up');
    expect(() => rt!.restore('shaky')).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_STATE' }));
  });

  it('never quarantines a busy agent with rare errors', async () => {
    ({ rt } = await startRuntime({ quarantine: { minRuns: 20, failureRatio: 0.5 } }));
    const busy = rt.agent({
      name: 'busy',
      handler: (env: Envelope<number>) => {
        if (env.payload % 50 === 0) throw new Error('rare');
        return env.payload;
      },
      policy: { concurrency: 8 },
    });
    const flow = rt.flow({ name: 'f', edges: [node(busy).to()], queueCapacity: 256 });
    await rt.start();
    const ids = await Promise.all(Array.from({ length: 3000 }, (_, i) => flow.emit(i)));
    const outcomes = await Promise.allSettled(ids.map((t) => flow.fetch(t.traceId)));
    expect(outcomes.filter((o) => o.status === 'rejected')).toHaveLength(60);
    expect(busy.state).toBe('ready');
  });

  it('counts only the sliding window: old failures age out', async () => {
    useFakeClock();
    ({ rt } = await startRuntime({ quarantine: { minRuns: 10, failureRatio: 0.5, windowMs: 1000 } }));
    let failing = true;
    const agent = rt.agent({
      name: 'moody',
      handler: () => {
        if (failing) throw Object.assign(new Error('down'), { retryable: false });
        return 'ok';
      },
    });
    const flow = rt.flow({ name: 'f', edges: [node(agent).to()] });
    await rt.start();
    for (let i = 0; i < 9; i++) await flow.fetch((await flow.emit(i)).traceId).catch(() => {});
    expect(agent.state).toBe('ready'); // 9 runs: under minRuns
    vi.advanceTimersByTime(1200); // those 9 failures leave the window
    failing = false;
    for (let i = 0; i < 9; i++) await flow.fetch((await flow.emit(i)).traceId);
    failing = true;
    await flow.fetch((await flow.emit(0)).traceId).catch(() => {});
    // Lifetime: 10 failures of 19 runs (over half). In the window: 1 of 10.
    expect(agent.state).toBe('ready');
    expect(agent.info()).toMatchObject({ runs: 10, failures: 1 });
  });

  it('quarantines when handlers that ignored their abort pile up past maxAbandoned', async () => {
    ({ rt } = await startRuntime({ quarantine: { maxAbandoned: 2, minRuns: 1000 } }));
    const stubborn = rt.agent({ name: 'stubborn', handler: () => new Promise(() => {}), policy: { timeoutMs: 10, concurrency: 4 } });
    const flow = rt.flow({ name: 'f', edges: [node(stubborn).to()] });
    await rt.start();
    const ids = await Promise.all([1, 2, 3].map((i) => flow.emit(i)));
    await Promise.allSettled(ids.map((t) => flow.fetch(t.traceId)));
    expect(stubborn.abandoned).toBe(3);
    await tick(); // the cap is checked a turn after the aborts, once honouring handlers had their chance
    expect(stubborn.info()).toMatchObject({ state: 'quarantined', abandoned: 3 });
  });

  it('park mode keeps work queued while quarantined and resumes it on restore', async () => {
    ({ rt } = await startRuntime({ quarantine: { mode: 'park' } }));
    const worker = rt.agent({ name: 'worker', handler: (env: Envelope<number>) => env.payload * 2 });
    const flow = rt.flow({ name: 'f', edges: [node(worker).to()] });
    await rt.start();
    worker.quarantine();
    const ids = await Promise.all([1, 2, 3].map((i) => flow.emit(i)));
    await tick();
    expect(flow.stats()).toMatchObject({ queued: 3, running: 0 });
    rt.restore('worker');
    expect(await Promise.all(ids.map((t) => flow.fetch(t.traceId)))).toEqual([2, 4, 6]);
  });

  it('reject mode dead-letters queued work of a quarantined agent', async () => {
    ({ rt } = await startRuntime());
    const gate = deferred();
    const worker = rt.agent({
      name: 'worker',
      handler: async () => {
        await gate.promise;
        return 1;
      },
    });
    const flow = rt.flow({ name: 'f', edges: [node(worker).to()] });
    await rt.start();
    const first = await flow.emit(0);
    const queued = await flow.emit(1);
    worker.quarantine();
    gate.resolve();
    expect(await flow.fetch(first.traceId)).toBe(1);
    await expect(flow.fetch(queued.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_QUARANTINED' });
    expect(rt.deadLetters.list()[0]).toMatchObject({ node: 'worker', error: { code: 'ROOST_ERR_QUARANTINED' } });
  });
});

describe('idempotency window', () => {
  it('the same key with another request fingerprint is a conflict, not a repeat', async () => {
    ({ rt } = await startRuntime());
    const flow = rt.flow({ name: 'f', edges: [node('a', (env: Envelope<number>) => env.payload).to()] });
    await rt.start();
    const first = await flow.emit(1, { idempotencyKey: 'k', idempotencyFingerprint: 'body-1' });
    expect(await flow.emit(1, { idempotencyKey: 'k', idempotencyFingerprint: 'body-1' })).toEqual({ traceId: first.traceId, deduplicated: true });
    await expect(flow.emit(2, { idempotencyKey: 'k', idempotencyFingerprint: 'body-2' })).rejects.toMatchObject({
      code: 'ROOST_ERR_IDEMPOTENCY_CONFLICT',
      field: 'emit.options.idempotencyKey',
      details: { traceId: first.traceId },
    });
    // No fingerprint on either side: the same request as far as anyone can tell.
    expect((await flow.emit(3, { idempotencyKey: 'k' })).traceId).toBe(first.traceId);
    const plain = await flow.emit(1, { idempotencyKey: 'p' });
    expect((await flow.emit(1, { idempotencyKey: 'p', idempotencyFingerprint: 'x' })).traceId).toBe(plain.traceId);
    await expect(flow.emit(1, { idempotencyKey: 'q', idempotencyFingerprint: '' })).rejects.toMatchObject({ field: 'emit.options.idempotencyFingerprint' });
  });


  it('a repeated key returns the first trace, per flow and tenant', async () => {
    ({ rt } = await startRuntime());
    let runs = 0;
    const a = node('a', (env: Envelope<number>) => {
      runs++;
      return env.payload;
    });
    const flow = rt.flow({ name: 'f', edges: [a.to()] });
    await rt.start();
    const first = await flow.emit(1, { idempotencyKey: 'order-7' });
    const again = await flow.emit(2, { idempotencyKey: 'order-7' });
    expect(again).toEqual({ traceId: first.traceId, deduplicated: true });
    const otherTenant = await flow.emit(3, { idempotencyKey: 'order-7', tenant: 'acme' });
    expect(otherTenant.deduplicated).toBe(false);
    expect(await flow.fetch(first.traceId)).toBe(1);
    await flow.fetch(otherTenant.traceId);
    expect(runs).toBe(2);
  });

  it('forgets keys after the TTL', async () => {
    useFakeClock();
    ({ rt } = await startRuntime({ idempotency: { ttlMs: 1000, max: 100 } }));
    const flow = rt.flow({ name: 'f', edges: [node('a', () => 1).to()] });
    await rt.start();
    const first = await flow.emit(1, { idempotencyKey: 'k' });
    vi.advanceTimersByTime(999);
    expect((await flow.emit(1, { idempotencyKey: 'k' })).traceId).toBe(first.traceId);
    vi.advanceTimersByTime(1);
    const later = await flow.emit(1, { idempotencyKey: 'k' });
    expect(later.deduplicated).toBe(false);
    expect(later.traceId).not.toBe(first.traceId);
  });

  it('forgets the oldest keys beyond the count', async () => {
    ({ rt } = await startRuntime({ idempotency: { ttlMs: 60_000, max: 2 } }));
    const flow = rt.flow({ name: 'f', edges: [node('a', () => 1).to()] });
    await rt.start();
    const k1 = await flow.emit(1, { idempotencyKey: 'k1' });
    const k2 = await flow.emit(1, { idempotencyKey: 'k2' });
    await flow.emit(1, { idempotencyKey: 'k3' });
    expect((await flow.emit(1, { idempotencyKey: 'k2' })).traceId).toBe(k2.traceId);
    expect((await flow.emit(1, { idempotencyKey: 'k1' })).traceId).not.toBe(k1.traceId);
  });

  it('internal retries and replays do not pass through the window', async () => {
    ({ rt } = await startRuntime());
    let broken = true;
    const a = node(
      'a',
      (_env: Envelope, ctx) => {
        if (broken || ctx.attempt === 1) throw new Error('x');
        return ctx.attempt;
      },
      { retries: 1, backoff: { baseMs: 1 } },
    );
    const flow = rt.flow({ name: 'f', edges: [a.to()] });
    await rt.start();
    const t = await flow.emit({}, { idempotencyKey: 'once' });
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_NODE_FAILED' });
    broken = false;
    const replay = await rt.replayDeadLetter(rt.deadLetters.list()[0]!.id);
    expect(replay).not.toBe(t.traceId);
    expect(await flow.fetch(replay)).toBe(3);
  });
});

describe('bounded memory', () => {
  it('unfetched results expire after the TTL: a late fetch gets ROOST_ERR_RESULT_EXPIRED', async () => {
    useFakeClock();
    ({ rt } = await startRuntime({ results: { ttlMs: 1000, max: 100 } }));
    const flow = rt.flow({ name: 'f', edges: [node('a', () => 'r').to()] });
    await rt.start();
    const t = await flow.emit({});
    await until(() => flow.activeTraces === 0);
    vi.advanceTimersByTime(999);
    expect(flow.outcome(t.traceId)).toMatchObject({ status: 'succeeded', result: 'r' }); // still held, unfetched
    vi.advanceTimersByTime(2);
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_RESULT_EXPIRED' });
    await expect(flow.fetch('0190a0f0-0000-7000-8000-000000000000')).rejects.toMatchObject({ code: 'ROOST_ERR_RESULT_EXPIRED' });
    await expect(flow.fetch('ffffffff-ffff-7fff-bfff-ffffffffffff')).rejects.toMatchObject({ code: 'ROOST_ERR_TRACE_NOT_FOUND' });
  });

  it('delivers a result once: every waiting fetch gets it, then it is released', async () => {
    ({ rt } = await startRuntime());
    const gate = deferred();
    const a = node('a', async () => {
      await gate.promise;
      return 'once';
    });
    const flow = rt.flow({ name: 'f', edges: [a.to()] });
    await rt.start();
    const t = await flow.emit({});
    const both = Promise.all([flow.fetch(t.traceId), flow.fetch(t.traceId)]);
    gate.resolve();
    expect(await both).toEqual(['once', 'once']);
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_RESULT_EXPIRED' });
    const unfetched = await flow.emit({});
    await until(() => flow.activeTraces === 0);
    expect(await flow.fetch(unfetched.traceId)).toBe('once');
    await expect(flow.fetch(unfetched.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_RESULT_EXPIRED' });
  });

  it('keeps at most results.max unfetched results', async () => {
    ({ rt } = await startRuntime({ results: { ttlMs: 60_000, max: 5 } }));
    const flow = rt.flow({ name: 'f', edges: [node('a', (e: Envelope<number>) => e.payload).to()] });
    await rt.start();
    const ids = [];
    for (let i = 0; i < 20; i++) ids.push((await flow.emit(i)).traceId);
    await until(() => flow.activeTraces === 0);
    await expect(flow.fetch(ids[0]!)).rejects.toMatchObject({ code: 'ROOST_ERR_RESULT_EXPIRED' });
    expect(await flow.fetch(ids[19]!)).toBe(19);
    expect(await flow.fetch(ids[15]!)).toBe(15);
    await expect(flow.fetch(ids[14]!)).rejects.toMatchObject({ code: 'ROOST_ERR_RESULT_EXPIRED' });
  });

  it('the dead-letter queue has a cap and says when it evicts', async () => {
    let events;
    ({ rt, events } = await startRuntime({ deadLetters: { max: 3 } }));
    const bad = node('bad', () => {
      throw Object.assign(new Error('no'), { retryable: false });
    });
    const flow = rt.flow({ name: 'f', edges: [bad.to()] });
    await rt.start();
    for (let i = 0; i < 5; i++) await flow.fetch((await flow.emit(i)).traceId).catch(() => {});
    expect(rt.deadLetters.list().map((d) => d.envelope.payload)).toEqual([2, 3, 4]);
    expect(events.filter((e) => e.type === 'dead_letter_evicted')).toHaveLength(2);
  });
});

describe('fixes from review', () => {
  it('start and drain in the wrong state reject (not throw); unknown flows are ROOST_ERR_FLOW_NOT_FOUND', async () => {
    const r = createRuntime({ logger: false });
    await expect(r.drain()).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE' });
    await r.start();
    await expect(r.start()).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE' });
    await expect(r.emit('nope', {})).rejects.toMatchObject({ code: 'ROOST_ERR_FLOW_NOT_FOUND', received: 'nope' });
    await r.close();
  });

  it('validates ingressQueue, edge and join options with coded errors', () => {
    const r = createRuntime({ logger: false });
    const a = node('a', () => 1);
    expect(() => r.flow({ name: 'f', edges: [a.to()], ingressQueue: { capacity: 1.5 } })).toThrow(
      expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'flow(f).ingressQueue.capacity' }),
    );
    expect(() => r.flow({ name: 'f', edges: [a.to()], ingressQueue: { capacity: 0 } })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION' }));
    expect(() => r.flow({ name: 'f', edges: [a.to()], ingressQueue: { overflow: 'bogus' as never } })).toThrow(
      expect.objectContaining({ field: 'flow(f).ingressQueue.overflow' }),
    );
    expect(() => edge(a, null as never)).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION' }));
    expect(() => edge(a, { capacty: 3 } as never)).toThrow(expect.objectContaining({ field: 'edge.options.capacty' }));
    expect(() => join('j', { k: 2, timeout: 5 } as never)).toThrow(expect.objectContaining({ field: 'join(j).options.timeout' }));
    expect(() => routeBy('r', 'type', { x: a }, { otherwize: a } as never)).toThrow(expect.objectContaining({ field: 'routeBy(r).options.otherwize' }));
    expect(() => route('r', [[() => true, a]], { other: a } as never)).toThrow(expect.objectContaining({ field: 'route(r).options.other' }));
  });

  it('drain rejects unknown or bad options', async () => {
    const r = createRuntime({ logger: false });
    await r.start();
    await expect(r.drain({ timeout: 5 } as never)).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'drain.options.timeout' });
    await expect(r.drain({ timeoutMs: -1 })).rejects.toMatchObject({ field: 'drain.options.timeoutMs' });
    expect(r.state).toBe('running');
    await r.close();
  });

  it('limits that retrying cannot fix are not retryable', () => {
    const r = createRuntime({ logger: false, limits: { maxAgents: 1, maxConcurrentRuns: 1 } });
    r.agent({ name: 'a', handler: () => 1 });
    let error: unknown;
    try {
      r.agent({ name: 'b', handler: () => 1 });
    } catch (e) {
      error = e;
    }
    expect(error).toMatchObject({ code: 'ROOST_ERR_RESOURCE_LIMIT', retryable: false });
  });

  it('an emit whose signal is already aborted is refused, accepting nothing', async () => {
    ({ rt } = await startRuntime());
    const flow = rt.flow({ name: 'f', edges: [node('a', () => 1).to()] });
    await rt.start();
    await expect(flow.emit({}, { signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'ROOST_ERR_TRACE_CANCELLED', field: 'emit.options.signal' });
    await expect(flow.emit({}, { signal: 'x' as never })).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'emit.options.signal' });
    expect(rt.stats().inFlightTraces).toBe(0);
  });

  it('results.max counts only results still held unfetched', async () => {
    ({ rt } = await startRuntime({ results: { ttlMs: 60_000, max: 2 } }));
    const flow = rt.flow({ name: 'f', edges: [node('a', (e: Envelope<string>) => e.payload).to()] });
    await rt.start();
    const a = await flow.emit('A');
    await until(() => flow.activeTraces === 0);
    const b = await flow.emit('B');
    expect(await flow.fetch(b.traceId)).toBe('B');
    const c = await flow.emit('C');
    await until(() => flow.activeTraces === 0);
    expect(await flow.fetch(a.traceId)).toBe('A'); // B was fetched, so only A and C are held
    expect(await flow.fetch(c.traceId)).toBe('C');
  });
});
