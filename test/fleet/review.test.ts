/**
 * The fleet's hard cases, found by review (in-process transport): each was a bug, each test failed before its fix.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { InProcessBroker, InProcessTransport, MemoryStore, createRuntime, node, type Handler, type Runtime, type RoostEvent } from '../../src/index.js';
import { addRequest, pendingRequests } from '../../src/store/requests.js';
import { until } from '../helpers/runtime.js';

const open: Runtime[] = [];
afterEach(async () => {
  for (const rt of open.splice(0).reverse()) await rt.close();
});

interface App {
  readonly mid: Handler;
  readonly policy?: { timeoutMs?: number; retries?: number; concurrency?: number };
  readonly onC?: (payload: unknown) => void;
}

function setup(rt: Runtime, app: App): void {
  const a = node('a', (env) => env.payload);
  const mid = node('mid', app.mid, { concurrency: 4, ...app.policy });
  const c = node('c', (env) => {
    app.onC?.(env.payload);
    return env.payload;
  });
  rt.flow({ name: 'f', edges: [a.to(mid), mid.to(c), c.to()] });
}

interface Opts {
  workers?: number;
  leaseMs?: number;
  routing?: 'registry' | 'group';
  ownerStore?: MemoryStore;
  workerStore?: MemoryStore;
  maxQueued?: number;
}

async function startWorker(broker: InProcessBroker, ns: string, id: string, app: App, o: Opts): Promise<Runtime> {
  const w = createRuntime({
    logger: false,
    drainTimeoutMs: 300,
    ...(o.workerStore === undefined ? {} : { store: o.workerStore }),
    fleet: { transport: new InProcessTransport({ broker }), namespace: ns, id, role: 'worker', host: ['f/mid'], leaseMs: o.leaseMs ?? 2_000, heartbeatMs: 20, ...(o.maxQueued === undefined ? {} : { maxQueued: o.maxQueued }) },
  });
  setup(w, app);
  open.push(w);
  await w.start();
  return w;
}

async function startOwner(broker: InProcessBroker, ns: string, app: App, o: Opts, owner = 'o1'): Promise<{ rt: Runtime; events: RoostEvent[] }> {
  const rt = createRuntime({
    logger: false,
    owner,
    drainTimeoutMs: 300,
    ...(o.ownerStore === undefined ? {} : { store: o.ownerStore }),
    fleet: { transport: new InProcessTransport({ broker }), namespace: ns, id: 'owner', remote: ['f/mid'], leaseMs: o.leaseMs ?? 2_000, heartbeatMs: 20, routing: o.routing ?? 'registry' },
  });
  const events: RoostEvent[] = [];
  rt.on((e) => events.push(e));
  setup(rt, app);
  open.push(rt);
  await rt.start();
  return { rt, events };
}

function ns(): string {
  return `r${Math.random().toString(36).slice(2, 8)}`;
}

describe('fleet review: worker', () => {
  it('aborting a queued job must not start another one beyond the node concurrency', async () => {
    const broker = new InProcessBroker();
    const space = ns();
    let running = 0;
    let maxRunning = 0;
    const started: string[] = [];
    const app: App = {
      policy: { concurrency: 1 },
      mid: (env, ctx) =>
        new Promise((resolve, reject) => {
          running++;
          maxRunning = Math.max(maxRunning, running);
          started.push(env.traceId);
          ctx.signal.addEventListener('abort', () => {
            running--;
            reject(ctx.signal.reason as Error);
          });
          setTimeout(() => {
            running--;
            resolve(env.payload);
          }, 1_500);
        }),
    };
    await startWorker(broker, space, 'w0', app, {});
    const { rt } = await startOwner(broker, space, app, {});
    const flow = rt.getFlow('f')!;
    const t1 = await flow.emit({ n: 1 });
    await until(() => started.length === 1, 5_000, 'first running');
    const t2 = await flow.emit({ n: 2 });
    const t3 = await flow.emit({ n: 3 });
    await new Promise((r) => setTimeout(r, 100)); // t2 and t3 queued on the worker
    await flow.cancel(t2.traceId);
    await new Promise((r) => setTimeout(r, 200));
    // concurrency 1: t3 must wait for t1. It starts at once instead.
    expect(maxRunning).toBe(1);
    await flow.fetch(t1.traceId).catch(() => {});
    await flow.fetch(t3.traceId).catch(() => {});
  });

  it('a worker without a store keeps a bounded number of step values', async () => {
    const broker = new InProcessBroker();
    const space = ns();
    const app: App = {
      mid: async (env, ctx) => {
        await ctx.step('s', () => ({ big: 'x'.repeat(1_000) }));
        return env.payload;
      },
    };
    const w = await startWorker(broker, space, 'w0', app, {});
    const { rt } = await startOwner(broker, space, app, {});
    const flow = rt.getFlow('f')!;
    for (let round = 0; round < 11; round++) {
      const traces = await Promise.all(Array.from({ length: 200 }, (_, i) => flow.emit({ n: i })));
      await Promise.all(traces.map((t) => flow.fetch(t.traceId)));
    }
    const memory = (w.fleet as unknown as { worker: { memory: Map<string, unknown> } }).worker.memory;
    // 2,200 traces' steps: the worker keeps the newest 2,000.
    expect(memory.size).toBe(2_000);
  });
});

describe('fleet review: dispatcher', () => {
  it('a redelivery after a lost worker does not send the first run\'s ctx.emit on again', async () => {
    const broker = new InProcessBroker();
    const space = ns();
    let first = true;
    const seenAtC: unknown[] = [];
    const app: App = {
      onC: (p) => seenAtC.push(p),
      mid: async (_env, ctx) => {
        await ctx.emit({ emitted: 1 });
        if (first) {
          first = false;
          await new Promise(() => {}); // this worker hangs after its emit (then its transport is cut)
        }
        return undefined;
      },
    };
    const workers = [await startWorker(broker, space, 'w0', app, { leaseMs: 300 }), await startWorker(broker, space, 'w1', app, { leaseMs: 300 })];
    const { rt } = await startOwner(broker, space, app, { leaseMs: 300 });
    const flow = rt.getFlow('f')!;
    const { traceId } = await flow.emit({ n: 1 });
    await until(() => workers.some((w) => w.fleet!.stats().worker!.held === 1), 5_000, 'a worker holds it');
    await until(() => seenAtC.length === 1, 5_000, 'the first emit reached c');
    const stuck = workers.find((w) => w.fleet!.stats().worker!.held === 1)!;
    void stuck.fleet!.transport.close();
    await flow.fetch(traceId).catch(() => {});
    await new Promise((r) => setTimeout(r, 200));
    // One input, one run's worth of output: c must see the emit once.
    expect(seenAtC).toHaveLength(1);
  });

  it('an owner restarted over its journal sends the resumed envelope to the worker holding it, which answers instead of running it again', async () => {
    const broker = new InProcessBroker();
    const space = ns();
    const store = new MemoryStore();
    const runs: string[] = [];
    const release: (() => void)[] = [];
    const app = (who: string): App => ({
      mid: (env) =>
        new Promise((resolve) => {
          runs.push(who);
          release.push(() => resolve(env.payload));
        }),
    });
    await startWorker(broker, space, 'w0', app('w0'), {});
    await startWorker(broker, space, 'w1', app('w1'), {});
    const first = await startOwner(broker, space, app('owner'), { ownerStore: store, routing: 'group' });
    const { traceId } = await first.rt.getFlow('f')!.emit({ n: 1 });
    await until(() => runs.length === 1, 5_000, 'a worker runs it');
    await first.rt.close(); // drain times out: the trace stays in the journal, the worker keeps running it
    open.splice(open.indexOf(first.rt), 1);
    const second = await startOwner(broker, space, app('owner'), { ownerStore: store, routing: 'group' });
    await new Promise((r) => setTimeout(r, 300));
    // README: "a worker still running one answers the new owner" - instead another worker runs it too.
    expect(runs).toHaveLength(1);
    for (const r of release) r();
    await second.rt.getFlow('f')!.fetch(traceId).catch(() => {});
  });
});

describe('fleet review: runtime', () => {
  it('a worker sharing the store leaves replay requests to the owners', async () => {
    const broker = new InProcessBroker();
    const space = ns();
    const store = new MemoryStore();
    // An ordinary process makes a dead letter, then stops.
    const plain = createRuntime({ logger: false, store, owner: 'plain', drainTimeoutMs: 300 });
    let fail = true;
    setup(plain, {
      policy: { retries: 0 },
      mid: (env) => {
        if (fail) throw Object.assign(new Error('boom'), { retryable: false });
        return env.payload;
      },
    });
    await plain.start();
    const { traceId } = await plain.getFlow('f')!.emit({ n: 1 });
    await plain.getFlow('f')!.fetch(traceId).catch(() => {});
    const letterId = plain.deadLetters.list({})[0]!.id;
    await plain.close();
    fail = false;
    // A worker of the fleet shares the store.
    await startWorker(broker, space, 'w0', { mid: (env) => env.payload }, { workerStore: store });
    await addRequest(store, 'replay', letterId);
    await new Promise((r) => setTimeout(r, 1_500));
    // The replay request must wait for an owner; the worker took it and dropped it.
    expect(await pendingRequests(store)).toHaveLength(1);
  });
});

describe('fleet review: routing and close', () => {
  it('a quarantined agent on one worker: the tasks routed to it go to another worker', async () => {
    const broker = new InProcessBroker();
    const space = ns();
    const app: App = { policy: { retries: 2 }, mid: (env) => new Promise((r) => setTimeout(() => r(env.payload), 50)) };
    const w0 = await startWorker(broker, space, 'w0', app, {});
    await startWorker(broker, space, 'w1', app, {});
    w0.quarantine('mid'); // e.g. after a burst of failures there; it stays until restore()
    const { rt } = await startOwner(broker, space, app, {});
    await until(() => rt.fleet!.list().filter((p) => p.nodes.includes('f/mid')).length === 2, 5_000, 'both workers listed');
    const flow = rt.getFlow('f')!;
    const traces = await Promise.all(Array.from({ length: 20 }, (_, i) => flow.emit({ i })));
    const outcomes = await Promise.all(traces.map((t) => flow.fetch(t.traceId).then(() => 'ok', (e: { code: string }) => e.code)));
    // w1 is healthy and idle: every task should succeed there.
    expect(outcomes.filter((o) => o !== 'ok')).toEqual([]);
  });

  it('busy answers are re-sent with a growing backoff', async () => {
    const broker = new InProcessBroker();
    const space = ns();
    const app: App = { policy: { concurrency: 1 }, mid: (env) => new Promise((r) => setTimeout(() => r(env.payload), 2_000)) };
    await startWorker(broker, space, 'w0', app, { maxQueued: 0 });
    const { rt, events } = await startOwner(broker, space, app, {});
    const flow = rt.getFlow('f')!;
    const traces = await Promise.all(Array.from({ length: 20 }, (_, i) => flow.emit({ i })));
    await new Promise((r) => setTimeout(r, 1_500));
    const busy = events.filter((e) => e.type === 'dispatch_redelivered').length;
    for (const t of traces) await flow.cancel(t.traceId).catch(() => {});
    // 19 tasks waiting for one slot for 1.5 s: the backoff (50 ms, doubling) allows about five re-sends each.
    expect(busy).toBeLessThan(19 * 6);
  });

  it('closing a worker hands back its queued tasks without starting them', async () => {
    const broker = new InProcessBroker();
    const space = ns();
    let starts = 0;
    let closing = false;
    let startedWhileClosing = 0;
    const app: App = {
      policy: { concurrency: 1 },
      mid: () => {
        starts++;
        if (closing) startedWhileClosing++;
        return new Promise(() => {}); // ignores its signal
      },
    };
    const w = await startWorker(broker, space, 'w0', app, {});
    const { rt } = await startOwner(broker, space, app, {});
    const flow = rt.getFlow('f')!;
    for (let i = 0; i < 3; i++) await flow.emit({ i });
    await until(() => w.fleet!.stats().worker!.held === 3, 5_000, 'one running, two queued');
    closing = true;
    await w.close();
    open.splice(open.indexOf(w), 1);
    expect(startedWhileClosing).toBe(0);
    expect(starts).toBe(1);
    expect(w.fleet!.stats().worker!.busy).toBe(2); // the two queued went back to their owner
  });
});

describe('fleet review: steps across attempts', () => {
  const stepApp = (counter: { n: number }): App => ({
    policy: { timeoutMs: 200, retries: 1 },
    mid: async (env, ctx) => {
      await ctx.step('charge', async () => {
        counter.n++;
        await new Promise((r) => setTimeout(r, 500)); // outlives the attempt's timeout
        return 'charged';
      });
      return env.payload;
    },
  });

  it('locally: a retry waits for the step the timed-out attempt is still running (fn runs once)', async () => {
    const counter = { n: 0 };
    const rt = createRuntime({ logger: false, drainTimeoutMs: 300 });
    setup(rt, stepApp(counter));
    open.push(rt);
    await rt.start();
    const { traceId } = await rt.getFlow('f')!.emit({ n: 1 });
    await rt.getFlow('f')!.fetch(traceId).catch(() => {});
    expect(counter.n).toBe(1);
  });

  it('on a worker: a retry waits for the step its timed-out attempt still runs (fn runs once)', async () => {
    const broker = new InProcessBroker();
    const space = ns();
    const counter = { n: 0 };
    await startWorker(broker, space, 'w0', stepApp(counter), {});
    const { rt } = await startOwner(broker, space, stepApp(counter), {});
    const { traceId } = await rt.getFlow('f')!.emit({ n: 1 });
    await rt.getFlow('f')!.fetch(traceId).catch(() => {});
    expect(counter.n).toBe(1);
  });
});

describe('fleet review, second pass', () => {
  it('a fire-and-forget ctx.emit on a worker goes on and never becomes an unhandled rejection', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    const listeners = process.listeners('unhandledRejection');
    process.removeAllListeners('unhandledRejection');
    process.on('unhandledRejection', onUnhandled);
    try {
      const broker = new InProcessBroker();
      const space = ns();
      const atC: unknown[] = [];
      const app: App = {
        onC: (p) => atC.push(p),
        mid: (env, ctx) => {
          void ctx.emit({ side: 1 }); // fine locally: resolves (or waits) and never rejects
          return env.payload;
        },
      };
      await startWorker(broker, space, 'w0', app, {});
      const { rt } = await startOwner(broker, space, app, {});
      const flow = rt.getFlow('f')!;
      const { traceId } = await flow.emit({ n: 1 });
      await flow.fetch(traceId).catch(() => {});
      await new Promise((r) => setTimeout(r, 200));
      expect(atC).toHaveLength(2); // the emit did go on at the owner...
      expect(unhandled).toEqual([]); // ...and the worker process saw no unhandled rejection
    } finally {
      process.off('unhandledRejection', onUnhandled);
      for (const l of listeners) process.on('unhandledRejection', l);
    }
  });

  it('a dispatch resumed from the journal follows its run\'s abort: a cancelled trace\'s task goes to no worker', async () => {
    const broker = new InProcessBroker();
    const space = ns();
    const store = new MemoryStore();
    const runs: string[] = [];
    const app = (who: string): App => ({
      mid: (_env, ctx) =>
        new Promise((_resolve, reject) => {
          runs.push(who);
          ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error));
        }),
    });
    const w0 = await startWorker(broker, space, 'w0', app('w0'), { leaseMs: 300 });
    const first = await startOwner(broker, space, app('owner'), { ownerStore: store, routing: 'group', leaseMs: 300 });
    const { traceId } = await first.rt.getFlow('f')!.emit({ n: 1 });
    await until(() => runs.length === 1, 5_000, 'w0 runs it');
    await first.rt.close();
    open.splice(open.indexOf(first.rt), 1);
    await w0.close(); // the worker holding it dies too
    open.splice(open.indexOf(w0), 1);
    const second = await startOwner(broker, space, app('owner'), { ownerStore: store, routing: 'group', leaseMs: 300 });
    await second.rt.getFlow('f')!.cancel(traceId).catch(() => {});
    await new Promise((r) => setTimeout(r, 100));
    await startWorker(broker, space, 'w1', app('w1'), { leaseMs: 300 });
    await new Promise((r) => setTimeout(r, 1_200)); // a few leases
    expect(second.rt.fleet!.stats().dispatcher!.outstanding).toBe(0); // the cancelled run's dispatch is gone
    expect(runs).toEqual(['w0']); // and no worker runs the cancelled trace's task again
  });

  it('a worker whose dispatch settled elsewhere is answered for its late emit and does not wait for ever', async () => {
    const broker = new InProcessBroker();
    const space = ns();
    let n = 0;
    const app: App = {
      mid: async (env, ctx) => {
        if (n++ === 0) {
          // the first holder is slow: its lease runs out (e.g. beats lost / event loop stalls)
          await new Promise((r) => setTimeout(r, 700));
          await ctx.emit({ late: 1 }); // the owner has settled this dispatch: no 'relayed' ever comes
          return env.payload;
        }
        return env.payload;
      },
    };
    const ws = [await startWorker(broker, space, 'w0', app, { leaseMs: 300 }), await startWorker(broker, space, 'w1', app, { leaseMs: 300 })];
    const { rt } = await startOwner(broker, space, app, { leaseMs: 300, routing: 'group' });
    // stall the first holder's beats by cutting only its answers to the owner: simplest, close its worker beat timer
    const flow = rt.getFlow('f')!;
    const { traceId } = await flow.emit({ n: 1 });
    await until(() => ws.some((w) => w.fleet!.stats().worker!.held === 1), 5_000, 'held');
    const holder = ws.find((w) => w.fleet!.stats().worker!.held === 1)!;
    // its beats stop reaching the owner (a partition of the owner topic only)
    const t = holder.fleet!.transport as unknown as { publish: (topic: string, e: unknown) => Promise<void> };
    const orig = t.publish.bind(t);
    let cut = true;
    t.publish = (topic, e) => (cut && topic.includes('/owner/') ? Promise.resolve() : orig(topic, e));
    await flow.fetch(traceId);
    cut = false;
    await new Promise((r) => setTimeout(r, 1_500));
    expect(holder.fleet!.stats().worker!.held).toBe(0); // its late emit was answered: the handler finished
  });

  it('an owner restarted while its worker waits on a relayed emit: the emit reaches the new owner and the run ends', async () => {
    const broker = new InProcessBroker();
    const space = ns();
    const store = new MemoryStore();
    let go: (() => void) | null = null;
    let runs = 0;
    const app: App = {
      mid: async (env, ctx) => {
        runs++;
        await new Promise<void>((r) => (go = r));
        await ctx.emit({ side: 1 }); // goes to the owner that is gone
        return env.payload;
      },
    };
    await startWorker(broker, space, 'w0', app, {});
    const first = await startOwner(broker, space, app, { ownerStore: store, routing: 'group' });
    const { traceId } = await first.rt.getFlow('f')!.emit({ n: 1 });
    await until(() => go !== null, 5_000, 'w0 runs it');
    await first.rt.close();
    open.splice(open.indexOf(first.rt), 1);
    go!(); // the handler emits while no owner listens
    const second = await startOwner(broker, space, app, { ownerStore: store, routing: 'group' });
    const result = await Promise.race([
      second.rt.getFlow('f')!.fetch(traceId).then(() => 'done', () => 'failed'),
      new Promise((r) => setTimeout(() => r('stuck'), 2_500)),
    ]);
    expect(runs).toBe(1);
    expect(result).not.toBe('stuck');
  });

  it('a remote node with timeoutMs and no live worker times out at the owner', async () => {
    const broker = new InProcessBroker();
    const space = ns();
    const app: App = { policy: { timeoutMs: 200, retries: 0 }, mid: (env) => env.payload };
    const { rt } = await startOwner(broker, space, app, { leaseMs: 200, routing: 'group' });
    const { traceId } = await rt.getFlow('f')!.emit({ n: 1 });
    const result = await Promise.race([
      rt.getFlow('f')!.fetch(traceId).then(() => 'done', (e: Error) => `failed: ${e.message}`),
      new Promise((r) => setTimeout(() => r('stuck'), 2_500)),
    ]);
    expect(result).not.toBe('stuck');
  });
});
