/**
 * `runtime.singleton` in one process: option validation, the single-process behaviour on
 * memory and SQLite (it always wins), and the leadership rules (renewal, the clock check, a
 * failed or superseded renewal, fn returning or throwing, stop and close) on runtimes sharing
 * one in-memory store. The fleet proof, with real processes on PostgreSQL, is
 * test/integration/singleton.test.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  createRuntime,
  isRoostError,
  resolveSingletonOptions,
  DEFAULT_SINGLETON_HEARTBEAT_MS as DEFAULT_HEARTBEAT_MS,
  DEFAULT_SINGLETON_LEASE_MS as DEFAULT_LEASE_MS,
  MemoryStore,
  RuntimeMetrics,
  type LeaderEvent,
  type Runtime,
  type SingletonContext,
  type Store,
} from '../../src/index.js';
import { deferred, until } from '../helpers/runtime.js';

const dir = mkdtempSync(join(tmpdir(), 'roost-singleton-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const open: Runtime[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()));
});

/** A started runtime, closed after the test, with its leader events. */
async function runtime(store: Store | string, owner: string): Promise<{ rt: Runtime; events: LeaderEvent[] }> {
  const rt = createRuntime({ logger: false, store, owner });
  open.push(rt);
  const events: LeaderEvent[] = [];
  rt.on((e) => {
    if (e.type === 'leader_elected' || e.type === 'leader_lost') events.push(e);
  });
  await rt.start();
  return { rt, events };
}

/** `inner`, with some methods replaced (a Proxy, so the store's own fields stay its own). */
function overriding(inner: Store, methods: Partial<Store>): Store {
  return new Proxy(inner, {
    get(target, prop) {
      const own = (methods as Record<string | symbol, unknown>)[prop];
      if (own !== undefined) return own;
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** A duty that records its contexts and runs until its signal aborts. */
function duty(): { fn: (ctx: SingletonContext) => Promise<void>; contexts: SingletonContext[] } {
  const contexts: SingletonContext[] = [];
  return {
    contexts,
    fn: (ctx) => {
      contexts.push(ctx);
      return new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
    },
  };
}

// Short enough for quick tests, long enough that a loaded machine (an fsync, a GC pause) does not lapse a lease.
const FAST = { heartbeatMs: 100, leaseMs: 500 };

describe('singleton options', () => {
  it('defaults: a 5 s heartbeat, a lease of 2 heartbeats (10 s), a restart delay of one heartbeat; frozen', () => {
    const o = resolveSingletonOptions('cron', undefined);
    expect(o).toEqual({ heartbeatMs: DEFAULT_HEARTBEAT_MS, leaseMs: DEFAULT_LEASE_MS, restartDelayMs: DEFAULT_HEARTBEAT_MS });
    expect([DEFAULT_HEARTBEAT_MS, DEFAULT_LEASE_MS]).toEqual([5_000, 10_000]);
    // Failover bound of the defaults: a lease lapses after leaseMs, a candidate polls every heartbeat.
    expect(DEFAULT_LEASE_MS + DEFAULT_HEARTBEAT_MS).toBeLessThanOrEqual(15_000);
    expect(Object.isFrozen(o)).toBe(true);
    expect(resolveSingletonOptions('cron', { heartbeatMs: 1_000 })).toEqual({ heartbeatMs: 1_000, leaseMs: 2_000, restartDelayMs: 1_000 });
    expect(resolveSingletonOptions('cron', { heartbeatMs: 500, leaseMs: 1_500, restartDelayMs: 0 })).toEqual({ heartbeatMs: 500, leaseMs: 1_500, restartDelayMs: 0 });
  });

  it('refuses bad values with ROOST_ERR_INVALID_OPTION naming the field', () => {
    const cases: [unknown, string][] = [
      [{ heartbeatMs: 0 }, 'singleton(cron).heartbeatMs'],
      [{ heartbeatMs: 5.5 }, 'singleton(cron).heartbeatMs'],
      [{ heartbeatMs: '5000' }, 'singleton(cron).heartbeatMs'],
      [{ leaseMs: 9_999 }, 'singleton(cron).leaseMs'], // under 2 × the default heartbeat
      [{ heartbeatMs: 500, leaseMs: 999 }, 'singleton(cron).leaseMs'],
      [{ leaseMs: Number.NaN }, 'singleton(cron).leaseMs'],
      [{ restartDelayMs: -1 }, 'singleton(cron).restartDelayMs'],
      [{ heartbeat: 5 }, 'singleton(cron).heartbeat'],
      ['fast', 'singleton(cron)'],
    ];
    for (const [options, field] of cases) {
      let caught: unknown;
      try {
        resolveSingletonOptions('cron', options);
      } catch (error) {
        caught = error;
      }
      expect(isRoostError(caught, 'ROOST_ERR_INVALID_OPTION'), JSON.stringify(options)).toBe(true);
      expect((caught as { field?: string }).field).toBe(field);
    }
    expect(() => resolveSingletonOptions('cron', { heartbeatMs: 500, leaseMs: 999 })).toThrow(/from 1000 \(2 × heartbeatMs\)/);
  });

  it('runtime.singleton checks the name, fn, options, the store and the state, and refuses a second duty of one name', async () => {
    const { rt } = await runtime('memory:', 'p1');
    expect(() => rt.singleton('bad name', () => {})).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'singleton.name' }));
    expect(() => rt.singleton('cron', 'x' as never)).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'singleton(cron).fn' }));
    expect(() => rt.singleton('cron', () => {}, { leaseMs: 1 })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'singleton(cron).leaseMs' }));
    const handle = rt.singleton('cron', duty().fn, FAST);
    expect(() => rt.singleton('cron', () => {})).toThrow(expect.objectContaining({ code: 'ROOST_ERR_ALREADY_EXISTS', field: 'singleton.name' }));
    await handle.stop();
    rt.singleton('cron', duty().fn, FAST); // the name is free again once stopped

    const bare = createRuntime({ logger: false });
    open.push(bare);
    await bare.start();
    expect(() => bare.singleton('cron', () => {})).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_STATE', field: 'store' }));
    const created = createRuntime({ logger: false, store: 'memory:' });
    open.push(created);
    expect(() => created.singleton('cron', () => {})).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_STATE', field: 'runtime.state' }));
  });
});

describe.each([
  { store: 'memory', url: (): string => 'memory:' },
  { store: 'SQLite', url: (): string => `sqlite:${join(dir, `one-${Math.random().toString(36).slice(2)}.db`)}` },
])('one process on $store', ({ url }) => {
  it('always wins: runs fn with the token, the fence and the owner id; fenced writes land; metrics follow', async () => {
    const { rt, events } = await runtime(url(), 'solo');
    const metrics = new RuntimeMetrics(rt);
    const d = duty();
    const handle = rt.singleton('cron', d.fn, FAST);
    expect(handle.state).toBe('candidate');
    await until(() => d.contexts.length === 1, 2_000, 'fn to start');
    const ctx = d.contexts[0]!;
    expect(handle).toMatchObject({ name: 'cron', state: 'leader', isLeader: true, token: ctx.token });
    expect(ctx).toMatchObject({ name: 'cron', holder: rt.owner, fence: { name: 'singleton:cron', token: ctx.token } });
    expect(rt.owner).toBe('solo');
    expect(events).toEqual([{ type: 'leader_elected', ts: expect.any(Number), name: 'cron', holder: 'solo', token: ctx.token, reason: null }]);
    expect(await ctx.putValue('cron:state', { n: 1 }, 0)).toBe(1);
    await ctx.commit({ steps: [{ stepKey: 'cron:step', traceId: 'cron', value: 1, ts: 1 }] });
    expect(await rt.store!.getStep('cron:step')).toEqual({ value: 1 });
    // Renewals keep the term: the same token several leases later.
    await new Promise((r) => setTimeout(r, 4 * FAST.leaseMs));
    expect(handle.token).toBe(ctx.token);
    expect(ctx.signal.aborted).toBe(false);
    expect(events).toHaveLength(1);
    const text = await metrics.text();
    expect(text).toMatch(/^roost_leader\{name="cron"\} 1$/m);
    expect(text).toMatch(/^roost_leader_changes_total\{name="cron"\} 1$/m);

    await handle.stop();
    expect(handle).toMatchObject({ state: 'stopped', isLeader: false, token: null });
    expect(ctx.signal.aborted).toBe(true);
    expect(isRoostError(ctx.signal.reason, 'ROOST_ERR_FENCED')).toBe(true);
    expect(events.at(-1)).toMatchObject({ type: 'leader_lost', name: 'cron', holder: 'solo', token: ctx.token, reason: 'released' });
    expect((await rt.store!.getLease('singleton:cron'))!.until).toBe(0); // released, not left to lapse
    await expect(ctx.putValue('cron:state', { n: 2 }, 1)).rejects.toMatchObject({ code: 'ROOST_ERR_FENCED' });
    // Past the local check, the store itself refuses the old term.
    await expect(rt.store!.putValue('cron:state', { n: 2 }, 1, ctx.fence)).rejects.toMatchObject({ code: 'ROOST_ERR_FENCED', details: { failure: 'released' } });
    expect(await rt.store!.getValue('cron:state')).toEqual({ value: { n: 1 }, version: 1 });
    expect(await metrics.text()).toMatch(/^roost_leader\{name="cron"\} 0$/m);
    metrics.close();
  });

  it('closing the runtime aborts fn and gives the lease up, with reason closed', async () => {
    const { rt, events } = await runtime(url(), 'solo');
    const d = duty();
    rt.singleton('cron', d.fn, FAST);
    await until(() => d.contexts.length === 1, 2_000, 'fn to start');
    await rt.close();
    expect(d.contexts[0]!.signal.aborted).toBe(true);
    expect(events.map((e) => [e.type, e.reason])).toEqual([
      ['leader_elected', null],
      ['leader_lost', 'closed'],
    ]);
    expect(() => rt.singleton('late', () => {})).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_STATE' }));
  });
});

describe('leadership on runtimes sharing one store', () => {
  it('exactly one of three leads; when it closes another takes over within a heartbeat or two, with a higher token', async () => {
    const store = new MemoryStore();
    const all = await Promise.all(['a', 'b', 'c'].map((o) => runtime(store, o)));
    const duties = all.map(({ rt }) => {
      const d = duty();
      return { d, handle: rt.singleton('cron', d.fn, FAST) };
    });
    await until(() => duties.some((x) => x.handle.isLeader), 2_000, 'a leader');
    await new Promise((r) => setTimeout(r, 3 * FAST.leaseMs));
    expect(duties.filter((x) => x.handle.isLeader)).toHaveLength(1);
    expect(duties.reduce((n, x) => n + x.d.contexts.length, 0)).toBe(1);
    const first = duties.findIndex((x) => x.handle.isLeader);
    const token = duties[first]!.handle.token!;
    const closedAt = Date.now();
    await all[first]!.rt.close();
    await until(() => duties.some((x) => x.handle.isLeader), 2_000, 'a new leader');
    expect(Date.now() - closedAt).toBeLessThan(10 * FAST.heartbeatMs); // a released lease goes at the next poll
    const next = duties.filter((x) => x.handle.isLeader);
    expect(next).toHaveLength(1);
    expect(next[0]!.handle.token).toBeGreaterThan(token);
    expect(all[first]!.events.map((e) => e.reason)).toEqual([null, 'closed']);
  });

  it('a leader whose renewals hang steps down when its lease would lapse (the clock check); its late writes are refused', async () => {
    const inner = new MemoryStore();
    let hang = false;
    const stuck = overriding(inner, {
      acquireLease: (...args) => (hang ? new Promise(() => {}) : inner.acquireLease(...args)),
    });
    const a = await runtime(stuck, 'a');
    const d = duty();
    a.rt.singleton('cron', d.fn, FAST);
    await until(() => d.contexts.length === 1, 2_000, 'fn to start');
    const b = await runtime(inner, 'b');
    const db = duty();
    b.rt.singleton('cron', db.fn, FAST);
    hang = true;
    const hungAt = Date.now();
    await until(() => a.events.some((e) => e.type === 'leader_lost'), 2_000, 'a to step down');
    expect(a.events.at(-1)).toMatchObject({ type: 'leader_lost', reason: 'lapsed', token: d.contexts[0]!.token });
    // Not before its lease could lapse (the last renewal was under a heartbeat before the hang), and not much after.
    const took = Date.now() - hungAt;
    expect(took).toBeGreaterThanOrEqual(FAST.leaseMs - FAST.heartbeatMs - 5);
    expect(d.contexts[0]!.signal.aborted).toBe(true);
    await until(() => db.contexts.length === 1, 2_000, 'b to lead');
    expect(db.contexts[0]!.token).toBeGreaterThan(d.contexts[0]!.token);
    // a's late write, straight to the store with its old fence: refused, b's term holds the lease.
    await expect(inner.putValue('k', 'from a', 0, d.contexts[0]!.fence)).rejects.toMatchObject({
      code: 'ROOST_ERR_FENCED',
      details: { failure: 'superseded', currentHolder: 'b', currentToken: db.contexts[0]!.token },
    });
    expect(await db.contexts[0]!.putValue('k', 'from b', 0)).toBe(1);
    hang = false;
  });

  it('a leader whose event loop stalls past its lease stops when it wakes', async () => {
    const { rt, events } = await runtime('memory:', 'a');
    const d = duty();
    rt.singleton('cron', d.fn, FAST);
    await until(() => d.contexts.length === 1, 2_000, 'fn to start');
    const stalledUntil = Date.now() + 3 * FAST.leaseMs;
    while (Date.now() < stalledUntil) {
      // a synchronous stall, as a SIGSTOP or a long GC pause
    }
    await until(() => events.length >= 2, 2_000, 'a to notice');
    expect(events[1]).toMatchObject({ type: 'leader_lost', reason: 'lapsed', token: d.contexts[0]!.token });
    // Nobody else holds it: this process leads again, in a new term.
    await until(() => d.contexts.length === 2, 2_000, 'a new term');
    expect(d.contexts[1]!.token).toBeGreaterThan(d.contexts[0]!.token);
    await expect(d.contexts[0]!.putValue('k', 1, 0)).rejects.toMatchObject({ code: 'ROOST_ERR_FENCED' });
  });

  it('a renewal that fails steps down (renew_failed); one that finds another holder steps down (superseded)', async () => {
    const inner = new MemoryStore();
    let fail = false;
    const flaky = overriding(inner, {
      acquireLease: (...args) => (fail ? Promise.reject(new Error('store down')) : inner.acquireLease(...args)),
    });
    const a = await runtime(flaky, 'a');
    const d = duty();
    a.rt.singleton('cron', d.fn, FAST);
    await until(() => d.contexts.length === 1, 2_000, 'fn to start');
    fail = true;
    await until(() => a.events.length >= 2, 2_000, 'a to step down');
    expect(a.events[1]).toMatchObject({ type: 'leader_lost', reason: 'renew_failed' });
    fail = false;
    await until(() => d.contexts.length === 2, 2_000, 'a to lead again');
    // Another process takes the lease (its clock says it lapsed): a's next renewal finds it held.
    const lease = (await inner.getLease('singleton:cron'))!;
    const taken = (await inner.acquireLease('singleton:cron', 'intruder', 60_000, lease.until + 1))!;
    await until(() => a.events.length >= 4, 2_000, 'a to step down again');
    expect(a.events[3]).toMatchObject({ type: 'leader_lost', reason: 'superseded', token: d.contexts[1]!.token });
    await expect(d.contexts[1]!.commit({ steps: [{ stepKey: 's', traceId: 't', value: 1, ts: 1 }] })).rejects.toMatchObject({ code: 'ROOST_ERR_FENCED' });
    expect((await inner.getLease('singleton:cron'))!.token).toBe(taken.token); // a did not release the intruder's lease
  });

  it('a lease an earlier process with the same owner id left is not continued: this process starts a new term', async () => {
    const store = new MemoryStore();
    // A process named "p" led and died without releasing; a new one under the same name starts.
    const left = (await store.acquireLease('singleton:cron', 'p', 60_000, Date.now()))!;
    const { rt, events } = await runtime(store, 'p');
    const d = duty();
    rt.singleton('cron', d.fn, FAST);
    await until(() => d.contexts.length === 1, 2_000, 'fn to start');
    expect(d.contexts[0]!.token).toBeGreaterThan(left.token);
    expect(events).toMatchObject([{ type: 'leader_elected', token: d.contexts[0]!.token }]);
    await expect(store.putValue('k', 'from the dead', 0, { name: 'singleton:cron', token: left.token })).rejects.toMatchObject({ code: 'ROOST_ERR_FENCED' });
  });

  it('fn that returns or throws while leading runs again after restartDelayMs, in the same term', async () => {
    const { rt, events } = await runtime('memory:', 'a');
    const runs: number[] = [];
    const third = deferred();
    rt.singleton(
      'cron',
      (ctx) => {
        runs.push(ctx.token);
        if (runs.length === 1) return; // returns
        if (runs.length === 2) throw new Error('boom'); // throws
        third.resolve();
        return new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
      },
      { ...FAST, restartDelayMs: 10 },
    );
    await third.promise;
    expect(runs).toHaveLength(3);
    expect(new Set(runs).size).toBe(1);
    expect(events.map((e) => e.type)).toEqual(['leader_elected']);
  });

  it('a process whose fn ignores its signal does not try for the lease again until fn returns', async () => {
    const { rt, events } = await runtime('memory:', 'a');
    const release = deferred();
    let runs = 0;
    rt.singleton(
      'cron',
      async () => {
        runs++;
        await release.promise; // ignores ctx.signal
      },
      FAST,
    );
    await until(() => runs === 1, 2_000, 'fn to start');
    const stalledUntil = Date.now() + 3 * FAST.leaseMs;
    while (Date.now() < stalledUntil) {
      // stall past the lease: the term ends while fn still runs
    }
    await until(() => events.length >= 2, 2_000, 'the term to end');
    await new Promise((r) => setTimeout(r, 5 * FAST.heartbeatMs));
    expect(runs).toBe(1);
    expect(events).toHaveLength(2);
    release.resolve();
    await until(() => runs === 2, 2_000, 'a new term once fn returned');
    expect(events.map((e) => e.type)).toEqual(['leader_elected', 'leader_lost', 'leader_elected']);
  });
});
