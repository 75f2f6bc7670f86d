/**
 * Several processes on one PostgreSQL journal (runtimes in this process, each with its own
 * pool): each unfinished trace is resumed by exactly one of them, and a process whose owner lease
 * lapses has its traces taken over. Each test works in a schema of its own, dropped afterwards.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRuntime, node, PostgresStore, type Envelope, type Runtime, type Store } from '../../src/index.js';
import { until } from '../helpers/runtime.js';

import { assertPgReachable, dropSchemas, freshPgUrl } from '../helpers/postgres.js';

const freshUrl = (): string => freshPgUrl('shared');
beforeAll(assertPgReachable);
afterAll(dropSchemas);

const runtimes: Runtime[] = [];
const stores: Store[] = [];
afterEach(async () => {
  for (const rt of runtimes.splice(0)) await rt.close();
  for (const s of stores.splice(0)) await s.close();
});
/** A store whose owner-lease renewals fail once `cut` (the process is gone, as far as the others can tell). */
function cuttable(inner: Store): Store & { cut(): void } {
  let cut = false;
  return Object.assign(Object.create(inner) as Store, {
    acquireLease(name: string, holder: string, ttlMs: number, now: number) {
      return cut ? Promise.reject(new Error('partitioned')) : inner.acquireLease(name, holder, ttlMs, now);
    },
    cut(): void {
      cut = true;
    },
  });
}

function flowOn(rt: Runtime, handler: (env: Envelope<number>) => unknown) {
  return rt.flow({ name: 'shared', edges: [node('work', handler, { timeoutMs: null, concurrency: 4 }).to()] });
}

describe('a journal shared by several processes', () => {
  it('a lapsed owner\'s traces are taken over, each by exactly one of the others', async () => {
    const url = freshUrl();
    const leaseMs = 300;
    const aStore = cuttable(new PostgresStore(url));
    stores.push(aStore);
    const a = createRuntime({ logger: false, store: aStore, owner: 'A', ownerLeaseMs: leaseMs, drainTimeoutMs: 10 });
    runtimes.push(a);
    const fa = flowOn(a, () => new Promise(() => {})); // A never finishes anything
    await a.start();
    const ids = await Promise.all(Array.from({ length: 12 }, (_, i) => fa.emit(i)));
    aStore.cut(); // A stops renewing: after its lease, it counts as dead

    const ran = new Map<number, string[]>();
    const worker = (owner: string) => {
      const rt = createRuntime({ logger: false, store: url, owner, ownerLeaseMs: leaseMs });
      runtimes.push(rt);
      flowOn(rt, (env) => {
        ran.set(env.payload, [...(ran.get(env.payload) ?? []), owner]);
        return env.payload * 2;
      });
      return rt;
    };
    const [b, c] = [worker('B'), worker('C')];
    const started = Date.now();
    await Promise.all([b.start(), c.start()]);
    const check = new PostgresStore(url);
    stores.push(check);
    let running = ids.length;
    await until(() => {
      void check.listTraces({ flow: 'shared', status: 'running', limit: 100 }).then((p) => (running = p.traces.length));
      return running === 0;
    }, 15_000, 'every trace to finish');
    // A's lease (300 ms) had to lapse first; with scans every 100 ms, well within 15 s (50× margin).
    expect(Date.now() - started).toBeLessThan(15_000);
    expect([...ran.keys()].sort((x, y) => x - y)).toEqual(ids.map((_, i) => i));
    for (const [task, owners] of ran) expect(owners, `task ${task}`).toHaveLength(1); // each ran once
    for (const t of ids) expect(await check.getTrace('shared', t.traceId)).toMatchObject({ status: 'succeeded' });
  });

  it('a live owner keeps its traces: the others do not touch them', async () => {
    const url = freshUrl();
    const a = createRuntime({ logger: false, store: url, owner: 'A', ownerLeaseMs: 300, drainTimeoutMs: 10 });
    runtimes.push(a);
    let aRuns = 0;
    const fa = flowOn(a, () => {
      aRuns++;
      return new Promise(() => {});
    });
    await a.start();
    await fa.emit(1);
    let bRuns = 0;
    const b = createRuntime({ logger: false, store: url, owner: 'B', ownerLeaseMs: 300 });
    runtimes.push(b);
    flowOn(b, () => ++bRuns);
    await b.start();
    await new Promise((r) => setTimeout(r, 1_000)); // three lease periods: A renews, B must leave its trace alone
    expect(aRuns).toBe(1);
    expect(bRuns).toBe(0);
  });
});
