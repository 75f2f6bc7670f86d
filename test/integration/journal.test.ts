/**
 * The journal on the real send path, on SQLite files in a temp directory: what `emit` and
 * `fetch` wait for, what a second runtime on the same file resumes, and `ctx.step`.
 * (The SIGKILL crash test is in crash-resume.test.ts.)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createRuntime, edge, join, node, SqliteStore, type Envelope, type Runtime, type Store, type StoreBatch } from '../../src/index.js';
import { deferred, until } from '../helpers/runtime.js';
import { traceHistory } from '../../src/store/history.js';
import { addRequest, pendingRequests } from '../../src/store/requests.js';

const dir = mkdtempSync(joinPath(tmpdir(), 'roost-journal-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const freshPath = (): string => joinPath(dir, `j-${++n}.db`);

const runtimes: Runtime[] = [];
const stores: SqliteStore[] = [];
afterEach(async () => {
  for (const rt of runtimes.splice(0)) await rt.close();
  for (const s of stores.splice(0)) await s.close();
});

function runtime(path: string, extra: Parameters<typeof createRuntime>[0] = {}): Runtime {
  const rt = createRuntime({ logger: false, store: `sqlite:${path}`, ...extra });
  runtimes.push(rt);
  return rt;
}

/** A second connection to the journal, to look at what is committed. */
function look(path: string): SqliteStore {
  const s = new SqliteStore(path);
  stores.push(s);
  return s;
}

describe('emit and fetch wait for their commits', () => {
  it('the task is in the journal when emit resolves, the result when fetch resolves', async () => {
    const path = freshPath();
    const rt = runtime(path);
    const gate = deferred();
    const flow = rt.flow({
      name: 'f',
      edges: [
        node('a', (env: Envelope<number>) => env.payload + 1).to(node('b', async (env: Envelope<number>) => {
          await gate.promise;
          return env.payload * 10;
        })),
      ],
    });
    await rt.start();
    const t = await flow.emit(1, { idempotencyKey: 'task-1' });
    const store = look(path);
    expect(await store.getTrace('f', t.traceId)).toMatchObject({ status: 'running', idempotencyKey: 'task-1', tenant: 'default' });
    gate.resolve();
    expect(await flow.fetch(t.traceId)).toBe(20);
    expect(await store.getTrace('f', t.traceId)).toMatchObject({ status: 'succeeded', result: 20 });
    expect(await store.pendingEnvelopes('f')).toEqual([]);
    expect((await traceHistory(store, t.traceId)).map((e) => e.type)).toEqual(['trace_start', 'trace_success']);
    expect(await store.history(t.traceId)).toEqual([]); // the trace record holds them: no event rows
    expect((await rt.loadHistory(t.traceId)).map((e) => [e.type, e.event['elapsedMs'] !== undefined])).toEqual([
      ['trace_start', true],
      ['trace_success', true],
    ]);
  });

  it('a failure past its retries is a durable dead letter, and the failed trace is journaled', async () => {
    const path = freshPath();
    const rt = runtime(path);
    const flow = rt.flow({
      name: 'f',
      edges: [
        node(
          'bad',
          () => {
            throw new Error('always');
          },
          { retries: 1, backoff: { baseMs: 1, maxMs: 1, jitter: 0 } },
        ).to(),
      ],
    });
    await rt.start();
    const t = await flow.emit({ x: 1 });
    await expect(flow.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_NODE_FAILED' });
    const store = look(path);
    const letters = await store.listDeadLetters({ flow: 'f' });
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({ node: 'bad', traceId: t.traceId, attempts: 2, error: { code: 'ROOST_ERR_NODE_FAILED' } });
    expect(await store.getTrace('f', t.traceId)).toMatchObject({ status: 'failed', error: { code: 'ROOST_ERR_NODE_FAILED' } });
    const history = await traceHistory(store, t.traceId);
    expect(history.map((e) => e.type)).toEqual(['trace_start', 'node_retry', 'node_failed', 'trace_failed']);
    expect(history.at(-1)!.event).toMatchObject({ flow: 'f', traceId: t.traceId, error: { code: 'ROOST_ERR_NODE_FAILED' } });
    expect((await store.history(t.traceId)).map((e) => e.type)).toEqual(['node_retry', 'node_failed']);
  });
});

describe('opening the store', () => {
  it('start waits for the store to be ready (its migrations) outside storeTimeoutMs, and runs no operation before', async () => {
    const path = freshPath();
    let opened = false;
    const early: string[] = [];
    /** A journal whose opening takes five operation timeouts (a migration, or another process's under its lock). */
    class SlowToOpen extends SqliteStore {
      async ready(): Promise<void> {
        await new Promise((r) => setTimeout(r, 500));
        opened = true;
      }
      override listDeadLetters(query?: Parameters<SqliteStore['listDeadLetters']>[0]): ReturnType<SqliteStore['listDeadLetters']> {
        if (!opened) early.push('listDeadLetters');
        return super.listDeadLetters(query);
      }
    }
    const rt = createRuntime({ logger: false, store: new SlowToOpen(path), storeTimeoutMs: 100 });
    runtimes.push(rt);
    const flow = rt.flow({ name: 'f', edges: [node('a', (env: Envelope<number>) => env.payload + 1).to()] });
    // The opening is not an operation: five of storeTimeoutMs do not fail the start (a PostgreSQL
    // store's first operation used to carry its migrations, and timed out).
    await rt.start();
    expect(opened).toBe(true);
    expect(early).toEqual([]);
    expect(await flow.fetch((await flow.emit(1)).traceId)).toBe(2);
  });
});

describe('the idempotency window outlives the process', () => {
  it('a key emitted before a restart returns the first trace after it, also to concurrent repeats', async () => {
    const path = freshPath();
    const first = runtime(path);
    const f1 = first.flow({ name: 'idem', edges: [node('n', (env: Envelope<number>) => env.payload).to()] });
    await first.start();
    const original = await f1.emit(1, { idempotencyKey: 'order-17', tenant: 'acme' });
    await f1.fetch(original.traceId);
    await first.close();
    const second = runtime(path);
    let runs = 0;
    const f2 = second.flow({ name: 'idem', edges: [node('n', (env: Envelope<number>) => ++runs + env.payload).to()] });
    await second.start();
    const repeats = await Promise.all([1, 2, 3].map(() => f2.emit(1, { idempotencyKey: 'order-17', tenant: 'acme' })));
    expect(repeats).toEqual([1, 2, 3].map(() => ({ traceId: original.traceId, deduplicated: true })));
    const other = await f2.emit(1, { idempotencyKey: 'order-17', tenant: 'globex' }); // another tenant's key
    expect(other.deduplicated).toBe(false);
    await f2.fetch(other.traceId);
    expect(runs).toBe(1);
  });

  it('so does the fingerprint of the request that came with the key: another request is a conflict after a restart', async () => {
    const path = freshPath();
    const first = runtime(path);
    const f1 = first.flow({ name: 'fp', edges: [node('n', (env: Envelope<number>) => env.payload).to()] });
    await first.start();
    const original = await f1.emit(1, { idempotencyKey: 'k', idempotencyFingerprint: 'body-1' });
    await f1.fetch(original.traceId);
    await first.close();
    const second = runtime(path);
    const f2 = second.flow({ name: 'fp', edges: [node('n', (env: Envelope<number>) => env.payload).to()] });
    await second.start();
    await expect(f2.emit(2, { idempotencyKey: 'k', idempotencyFingerprint: 'body-2' })).rejects.toMatchObject({ code: 'ROOST_ERR_IDEMPOTENCY_CONFLICT' });
    expect(await f2.emit(1, { idempotencyKey: 'k', idempotencyFingerprint: 'body-1' })).toEqual({ traceId: original.traceId, deduplicated: true });
  });

  it('a replay of a dead letter does not take over its key: after a restart the key still names the first trace and its fingerprint', async () => {
    const path = freshPath();
    let fail = true;
    const flowOf = (rt: Runtime) =>
      rt.flow({
        name: 'rk',
        edges: [
          node('n', (env: Envelope<number>) => {
            if (fail) throw new Error('down');
            return env.payload;
          }, { retries: 0 }).to(),
        ],
      });
    const first = runtime(path);
    const f1 = flowOf(first);
    await first.start();
    const original = await f1.emit(1, { idempotencyKey: 'rk-1', idempotencyFingerprint: 'body-1' });
    await f1.fetch(original.traceId).catch(() => {});
    const [letter] = first.deadLetters.list();
    fail = false;
    const replay = await first.replayDeadLetter(letter!.id);
    await f1.fetch(replay);
    await first.close();
    const second = runtime(path);
    const f2 = flowOf(second);
    await second.start();
    await expect(f2.emit(2, { idempotencyKey: 'rk-1', idempotencyFingerprint: 'body-2' })).rejects.toMatchObject({ code: 'ROOST_ERR_IDEMPOTENCY_CONFLICT' });
    expect(await f2.emit(1, { idempotencyKey: 'rk-1', idempotencyFingerprint: 'body-1' })).toEqual({ traceId: original.traceId, deduplicated: true });
  });
});

describe('dead letters and history outlive the process', () => {
  it('a dead letter made before a restart is listed and replayed after it; history and listings read the journal', async () => {
    const path = freshPath();
    const flowOf = (rt: Runtime, fail: boolean) =>
      rt.flow({
        name: 'dlq',
        edges: [
          node('work', (env: Envelope<string>) => {
            if (fail) throw new Error('down');
            return `${env.payload} ok`;
          }).to(),
        ],
      });
    const first = runtime(path);
    const f1 = flowOf(first, true);
    await first.start();
    const t = await f1.emit('task', { tenant: 'acme' });
    await expect(f1.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_NODE_FAILED' });
    const [letter] = first.deadLetters.list();
    await first.close();

    const second = runtime(path);
    const f2 = flowOf(second, false);
    await second.start();
    expect(second.deadLetters.list().map((d) => d.id)).toEqual([letter!.id]);
    const replay = await second.replayDeadLetter(letter!.id);
    expect(await f2.fetch(replay)).toBe('task ok');
    expect(await look(path).getDeadLetter(letter!.id)).toBeNull(); // replayed: gone from the journal
    expect(await second.getTrace('dlq', t.traceId)).toMatchObject({ status: 'failed', tenant: 'acme' });
    expect((await second.loadHistory(t.traceId)).map((e) => e.type)).toEqual(['trace_start', 'node_failed', 'trace_failed']);
    const page = await second.listTraces({ flow: 'dlq', tenant: 'acme' });
    expect(page.traces.map((x) => x.traceId).sort()).toEqual([t.traceId, replay].sort());
  });

  it('without a store the journal reads are refused with a coded error', async () => {
    const rt = createRuntime({ logger: false });
    runtimes.push(rt);
    await expect(rt.loadHistory('x')).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE', field: 'store' });
    await expect(rt.listTraces()).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE' });
  });
});

describe('a second runtime on the same journal resumes what the first left', () => {
  it('re-queues pending envelopes at their nodes, keeps outputs, and finishes the traces', async () => {
    const path = freshPath();
    // The first runtime stops mid-flight: its middle node never returns (as if the process died).
    const first = runtime(path, { drainTimeoutMs: 10 });
    let bStarted = 0;
    const stuckB = (): Promise<never> => {
      bStarted++;
      return new Promise(() => {});
    };
    const stuck = first.flow({
      name: 'f',
      edges: [node('a', (env: Envelope<number>) => env.payload + 1).to(node('b', stuckB, { timeoutMs: null, concurrency: 1 }))],
    });
    await first.start();
    const ids = await Promise.all([1, 2, 3].map((i) => stuck.emit(i)));
    await until(() => bStarted === 1 && stuck.stats().queued === 2);
    await new Promise((r) => setTimeout(r, 20)); // let the outputs of `a` commit
    const second = runtime(path);
    const flow = second.flow({
      name: 'f',
      edges: [node('a', (env: Envelope<number>) => env.payload + 1).to(node('b', (env: Envelope<number>) => env.payload * 10))],
    });
    const seenAtA: number[] = [];
    second.on((e) => {
      if (e.type === 'node_start' && e.node === 'a') seenAtA.push(1);
    });
    await second.start();
    expect(await Promise.all(ids.map((t) => flow.fetch(t.traceId)))).toEqual([20, 30, 40]);
    expect(seenAtA).toEqual([]); // `a` had finished all three: only `b` ran again
    expect(await look(path).pendingEnvelopes('f')).toEqual([]);
  });

  it('rebuilds a join from the envelopes it had collected', async () => {
    const path = freshPath();
    const flowOf = (rt: Runtime, slowForever: boolean) => {
      const fan = node('fan', (env: Envelope<number>) => env.payload);
      const fast = node('fast', (env: Envelope<number>) => env.payload + 1);
      const slow = node('slow', slowForever ? () => new Promise(() => {}) : (env: Envelope<number>) => env.payload + 2, { timeoutMs: null });
      const both = join('both', { timeoutMs: 60_000 });
      const sum = node('sum', (env: Envelope<number[]>) => [...env.payload].sort((a, b) => a - b));
      return rt.flow({ name: 'j', edges: [fan.to(fast, slow), fast.to(both), slow.to(both), both.to(sum)] });
    };
    const first = runtime(path, { drainTimeoutMs: 10 });
    const f1 = flowOf(first, true);
    await first.start();
    const t = await f1.emit(10);
    await until(() => f1.stats().joinsWaiting === 1);
    await new Promise((r) => setTimeout(r, 20));
    const second = runtime(path);
    const f2 = flowOf(second, false);
    await second.start();
    expect(await f2.fetch(t.traceId)).toEqual([11, 12]);
  });
});

/** A store whose commits stop landing when frozen (as if the process died before them). */
function freezable(inner: Store): Store & { freeze(): void; abandon(): void } {
  let frozen = false;
  let dead = false;
  const stuck: ((error: Error) => void)[] = [];
  return Object.assign(Object.create(inner) as Store, {
    commit(batch: StoreBatch): Promise<void> {
      if (dead) return Promise.reject(new Error('abandoned'));
      if (!frozen) return inner.commit(batch);
      return new Promise<void>((_resolve, reject) => stuck.push(reject));
    },
    freeze(): void {
      frozen = true;
    },
    /** Fails the commits held and every later one, so the dead runtime can close. */
    abandon(): void {
      dead = true;
      for (const reject of stuck.splice(0)) reject(new Error('abandoned'));
    },
  });
}

describe('a node run again after a crash sends the same envelopes on', () => {
  it('so a step downstream gets the same stepKey as before the crash', async () => {
    const path = freshPath();
    const disk = look(path);
    const store = freezable(disk);
    const keys: string[] = [];
    const flowOf = (rt: Runtime, gate: Promise<void>) => {
      const a = node('a', async (env: Envelope<number>) => {
        await gate;
        return env.payload + 1;
      });
      const b = node(
        'b',
        async (env: Envelope<number>, ctx) => {
          await ctx.step('effect', ({ stepKey }) => keys.push(stepKey));
          return env.payload;
        },
        { timeoutMs: null },
      );
      return rt.flow({ name: 'd', edges: [a.to(b)] });
    };
    const first = createRuntime({ logger: false, store, drainTimeoutMs: 10 });
    runtimes.push(first);
    const gate = deferred();
    try {
      const f1 = flowOf(first, gate.promise);
      await first.start();
      const t = await f1.emit(1); // the task is committed
      store.freeze(); // from here on nothing of the first runtime lands
      gate.resolve();
      await until(() => keys.length === 1); // b ran its step on a's output, which never committed
      const second = runtime(path);
      const f2 = flowOf(second, Promise.resolve());
      await second.start(); // a runs again on the task: its output gets the same id
      expect(await f2.fetch(t.traceId)).toBe(2);
      expect(keys).toHaveLength(2); // the step's result never committed either: fn ran again …
      expect(keys[1]).toBe(keys[0]); // … under the same stepKey, so the outside system can dedup it
    } finally {
      store.abandon(); // even on failure: the first runtime must be able to close (in afterEach)
    }
  });
});

describe('an input run again after a crash does not duplicate what the journal already queued', () => {
  it('a node that waited for room re-creates an envelope already pending: it is queued once', async () => {
    const path = freshPath();
    const store = freezable(look(path));
    const flowOf = (rt: Runtime, block: boolean) => {
      const a = node('a', (env: Envelope<number>) => env.payload * 10);
      const b = node('b', block ? () => new Promise(() => {}) : (env: Envelope<number>) => env.payload + 1, { timeoutMs: null, concurrency: 1 });
      return rt.flow({ name: 'w', edges: [a.to(edge(b, { capacity: 1 }))] });
    };
    const first = createRuntime({ logger: false, store, drainTimeoutMs: 10 });
    runtimes.push(first);
    try {
      const f1 = flowOf(first, true);
      await first.start();
      const ids = [];
      for (const i of [1, 2, 3]) ids.push(await f1.emit(i)); // 1 runs at b, 2 waits in the edge, 3's send waits for room
      await until(() => f1.stats().queued === 1 && f1.stats().running === 2);
      await new Promise((r) => setTimeout(r, 20)); // 3's output is committed as pending at b; its input is not consumed
      store.freeze();
      const second = runtime(path);
      const f2 = flowOf(second, false);
      await second.start(); // a runs again on 3's input and re-creates the envelope already pending at b
      expect(await Promise.all(ids.map((t) => f2.fetch(t.traceId)))).toEqual([11, 21, 31]); // one output each, not [31, 31]
    } finally {
      store.abandon();
    }
  });
});

describe('what resume keeps', () => {
  it('a retried envelope keeps its attempt count, a deadline still holds, and a cancelled trace stays cancelled', async () => {
    const path = freshPath();
    const store = freezable(look(path));
    const attempts: number[] = [];
    const first = createRuntime({ logger: false, store, drainTimeoutMs: 10 });
    runtimes.push(first);
    try {
      const f1 = first.flow({
        name: 'keep',
        edges: [
          node(
            'n',
            async (env: Envelope<string>, ctx) => {
              if (env.payload !== 'retry') return new Promise(() => {});
              attempts.push(ctx.attempt);
              if (ctx.attempt < 3) throw new Error('again');
              return new Promise(() => {}); // the third attempt hangs: the process "dies" in it
            },
            { retries: 5, backoff: { baseMs: 1, maxMs: 1, jitter: 0 }, timeoutMs: null },
          ).to(),
        ],
      });
      await first.start();
      const retried = await f1.emit('retry');
      const late = await f1.emit('deadline', { deadline: Date.now() + 400 });
      const cancelled = await f1.emit('cancel-me');
      await until(() => attempts.length === 3);
      await f1.cancel(cancelled.traceId);
      await new Promise((r) => setTimeout(r, 30)); // the attempt count and the cancel commit
      store.freeze();

      const second = runtime(path);
      const seen: { payload: string; attempt: number }[] = [];
      const f2 = second.flow({
        name: 'keep',
        edges: [
          node(
            'n',
            async (env: Envelope<string>, ctx) => {
              seen.push({ payload: env.payload, attempt: ctx.attempt });
              if (env.payload === 'deadline') await new Promise((r) => setTimeout(r, 5_000));
              return `${env.payload} done`;
            },
            { timeoutMs: null },
          ).to(),
        ],
      });
      await second.start();
      expect(await f2.fetch(retried.traceId)).toBe('retry done');
      expect(seen.find((x) => x.payload === 'retry')).toEqual({ payload: 'retry', attempt: 3 }); // not 1
      await expect(f2.fetch(late.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_DEADLINE_EXCEEDED' });
      expect(seen.some((x) => x.payload === 'cancel-me')).toBe(false);
      expect(await look(path).getTrace('keep', cancelled.traceId)).toMatchObject({ status: 'cancelled' });
    } finally {
      store.abandon();
    }
  });
});

describe('requests through the journal (what the CLI asks of a running runtime)', () => {
  it('a deletion reaches the runtime holding the letter; a replay of a letter gone is dropped; a passing failure is asked again', async () => {
    const path = freshPath();
    const rt = runtime(path, { limits: { maxInFlightTraces: 2 } });
    const events: string[] = [];
    rt.on((e) => events.push(e.type));
    const hold = deferred();
    let healed = false;
    const flow = rt.flow({
      name: 'req',
      edges: [
        node('work', async (env: Envelope<string>) => {
          if (env.payload === 'hold') await hold.promise;
          if (env.payload.startsWith('bad') && !healed) throw new Error('backend down');
          return `${env.payload} done`;
        }).to(),
      ],
    });
    await rt.start();
    for (const p of ['bad-1', 'bad-2']) await flow.fetch((await flow.emit(p)).traceId).catch(() => {});
    const [d1, d2] = rt.deadLetters.list().map((l) => l.id) as [string, string];
    const cli = look(path);

    // roost dlq delete: the row goes at once, and the running runtime drops its copy.
    await cli.commit({ deadLettersRemoved: [d1] });
    await addRequest(cli, 'delete', d1);
    await until(() => !rt.deadLetters.has(d1), 5_000, 'the runtime to drop the deleted letter');
    expect(events).toContain('dead_letter_deleted');
    // A replay asked for it afterwards finds nothing to replay: the request is dropped, not kept for ever.
    await addRequest(cli, 'replay', d1);
    let left = -1;
    await until(() => {
      void pendingRequests(cli).then((r) => (left = r.length));
      return left === 0;
    }, 5_000, 'the request for a gone letter to be dropped');

    // A replay that fails for a passing reason (both in-flight slots taken) is asked again …
    healed = true;
    const busy = [await flow.emit('hold'), await flow.emit('hold')];
    await addRequest(cli, 'replay', d2);
    await new Promise((r) => setTimeout(r, 2_500)); // two polls: refused twice, asked again each time
    expect((await pendingRequests(cli)).map((r) => [r.op, r.id])).toEqual([['replay', d2]]);
    expect(rt.deadLetters.has(d2)).toBe(true);
    // … and carried out once there is room.
    hold.resolve();
    for (const t of busy) await flow.fetch(t.traceId);
    await until(() => !rt.deadLetters.has(d2), 5_000, 'the replay to happen');
    expect(events).toContain('dead_letter_replayed');
  }, 20_000);

  it('runtime.deleteDeadLetter removes a letter from memory and the journal, or says it has none', async () => {
    const path = freshPath();
    const rt = runtime(path);
    const flow = rt.flow({
      name: 'del',
      edges: [
        node('work', () => {
          throw new Error('no');
        }).to(),
      ],
    });
    await rt.start();
    await flow.fetch((await flow.emit(1)).traceId).catch(() => {});
    const [letter] = rt.deadLetters.list();
    await rt.deleteDeadLetter(letter!.id);
    expect(rt.deadLetters.list()).toEqual([]);
    expect(await look(path).getDeadLetter(letter!.id)).toBeNull();
    await expect(rt.deleteDeadLetter(letter!.id)).rejects.toMatchObject({ code: 'ROOST_ERR_DEAD_LETTER_NOT_FOUND' });
  });
});

describe('group commit', () => {
  it('the writes of one tick go in one transaction, and every emit of that tick resolves after it', async () => {
    const inner = look(freshPath());
    const commits: { traces: number; accepted: number; at: number }[] = [];
    const counting = Object.assign(Object.create(inner) as Store, {
      commit(batch: StoreBatch): Promise<void> {
        return inner.commit(batch).then(() => {
          commits.push({ traces: batch.traces?.length ?? 0, accepted: batch.accepted?.length ?? 0, at: performance.now() });
        });
      },
    });
    const rt = createRuntime({ logger: false, store: counting });
    runtimes.push(rt);
    const gate = deferred();
    const flow = rt.flow({
      name: 'gc',
      edges: [
        node('a', async (env: Envelope<number>) => {
          await gate.promise;
          return env.payload;
        }).to(),
      ],
    });
    await rt.start();
    const acked: number[] = [];
    const emits = Array.from({ length: 50 }, (_, i) => flow.emit(i).then((t) => (acked.push(performance.now()), t)));
    const traces = await Promise.all(emits);
    expect(commits[0]).toMatchObject({ traces: 50, accepted: 50 }); // one transaction for the 50 tasks of the tick
    expect(Math.min(...acked)).toBeGreaterThanOrEqual(commits[0]!.at); // none acknowledged before it landed
    gate.resolve();
    for (const t of traces) await flow.fetch(t.traceId);
    expect(commits.length).toBeLessThan(10); // and their ends in a few more, not one each
  });
});

describe('resume order', () => {
  it('envelopes waiting at a node are queued again in the order they were accepted', async () => {
    const path = freshPath();
    const store = freezable(look(path));
    const first = createRuntime({ logger: false, store, drainTimeoutMs: 10 });
    runtimes.push(first);
    try {
      const f1 = first.flow({
        name: 'order',
        edges: [node('n', () => new Promise(() => {}), { concurrency: 1, timeoutMs: null }).to()],
      });
      await first.start();
      for (let i = 0; i < 8; i++) await f1.emit(i); // the first runs (and hangs), the other seven wait
      await new Promise((r) => setTimeout(r, 30));
      store.freeze();
      const second = runtime(path);
      const seen: number[] = [];
      second.flow({
        name: 'order',
        edges: [node('n', (env: Envelope<number>) => void seen.push(env.payload), { concurrency: 1 }).to()],
      });
      await second.start();
      await until(() => seen.length === 8, 5_000, 'the resumed envelopes to run');
      expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    } finally {
      store.abandon();
    }
  });
});

describe('the retry budget across a resume', () => {
  it('counts from the envelope\'s acceptance, not from the attempt under way at the crash', async () => {
    const path = freshPath();
    const store = freezable(look(path));
    const attempts: number[] = [];
    const failing = (hang: boolean) =>
      node(
        'n',
        async (_env: Envelope<string>, ctx) => {
          attempts.push(ctx.attempt);
          if (hang && ctx.attempt === 2) return new Promise(() => {}); // the process "dies" in attempt 2
          throw new Error('always');
        },
        { retries: 2, backoff: { baseMs: 1, maxMs: 1, jitter: 0 }, timeoutMs: null },
      );
    const first = createRuntime({ logger: false, store, drainTimeoutMs: 10 });
    runtimes.push(first);
    try {
      const f1 = first.flow({ name: 'budget', edges: [failing(true).to()] });
      await first.start();
      const t = await f1.emit('x');
      await until(() => attempts.length === 2);
      await new Promise((r) => setTimeout(r, 30)); // the attempt count commits
      store.freeze();
      const second = runtime(path);
      const f2 = second.flow({ name: 'budget', edges: [failing(false).to()] });
      await second.start();
      await expect(f2.fetch(t.traceId)).rejects.toMatchObject({ code: 'ROOST_ERR_NODE_FAILED' });
      // Attempt 2 runs again after the resume, then attempt 3 is the last: 3 attempts in all, not 2 + 3.
      expect(attempts).toEqual([1, 2, 2, 3]);
      const letters = second.deadLetters.list({ flow: 'budget' });
      expect(letters.map((l) => l.attempts)).toEqual([3]);
    } finally {
      store.abandon();
    }
  });
});

describe('ctx.step while an attempt that timed out still runs it', () => {
  for (const kind of ['memory', 'sqlite'] as const) {
    it(`a retry waits for the step under way instead of running fn again (${kind} store)`, async () => {
      const rt = kind === 'memory' ? createRuntime({ logger: false }) : runtime(freshPath());
      if (kind === 'memory') runtimes.push(rt);
      let runs = 0;
      const flow = rt.flow({
        name: 'slow-step',
        edges: [
          node(
            'n',
            async (_env: Envelope<null>, ctx) =>
              ctx.step('charge', async () => {
                runs++;
                await new Promise((r) => setTimeout(r, 150));
                return 'charged';
              }),
            { timeoutMs: 100, retries: 3, backoff: { baseMs: 1, maxMs: 1, jitter: 0 } },
          ).to(),
        ],
      });
      await rt.start();
      const { traceId } = await flow.emit(null);
      // Attempt 1 times out at 100 ms while fn runs; attempt 2 gets fn's result at 150 ms.
      expect(await flow.fetch(traceId)).toBe('charged');
      expect(runs).toBe(1);
    });
  }
});

describe('ctx.checkpoint', () => {
  it('a handler run again after a crash goes on from its last committed checkpoint', async () => {
    const path = freshPath();
    const store = freezable(look(path));
    const firstDone: number[] = [];
    const first = createRuntime({ logger: false, store, drainTimeoutMs: 10 });
    runtimes.push(first);
    try {
      const f1 = first.flow({
        name: 'cp',
        edges: [
          node(
            'batch',
            async (_env: Envelope, ctx) => {
              const from = ((await ctx.lastCheckpoint<{ next: number }>()) ?? { next: 0 }).next;
              for (let i = from; i < 10; i++) {
                firstDone.push(i);
                await ctx.checkpoint({ next: i + 1 });
                if (i === 5) return new Promise(() => {}); // the process "dies" after item 5's checkpoint
              }
              return 'never';
            },
            { timeoutMs: null },
          ).to(),
        ],
      });
      await first.start();
      const t = await f1.emit({});
      await until(() => firstDone.length === 6);
      await new Promise((r) => setTimeout(r, 20));
      store.freeze();
      const secondDone: number[] = [];
      const second = runtime(path);
      const f2 = second.flow({
        name: 'cp',
        edges: [
          node('batch', async (_env: Envelope, ctx) => {
            const from = ((await ctx.lastCheckpoint<{ next: number }>()) ?? { next: 0 }).next;
            for (let i = from; i < 10; i++) {
              secondDone.push(i);
              await ctx.checkpoint({ next: i + 1 });
            }
            return secondDone.length;
          }).to(),
        ],
      });
      await second.start();
      expect(await f2.fetch(t.traceId)).toBe(4);
      expect(secondDone).toEqual([6, 7, 8, 9]);
    } finally {
      store.abandon();
    }
  });

  it('without a journal a retry reads the checkpoint of the failed attempt; a non-JSON state is refused', async () => {
    const rt = createRuntime({ logger: false });
    runtimes.push(rt);
    const seen: (number | undefined)[] = [];
    let refused: unknown;
    const flow = rt.flow({
      name: 'cp',
      edges: [
        node(
          'n',
          async (_env: Envelope, ctx) => {
            seen.push(await ctx.lastCheckpoint<number>());
            refused ??= await ctx.checkpoint({ big: 1n }).catch((e: unknown) => e);
            await ctx.checkpoint(ctx.attempt * 10);
            if (ctx.attempt < 2) throw new Error('again');
            return 'ok';
          },
          { retries: 1, backoff: { baseMs: 1, maxMs: 1, jitter: 0 } },
        ).to(),
      ],
    });
    await rt.start();
    expect(await flow.fetch((await flow.emit({})).traceId)).toBe('ok');
    expect(seen).toEqual([undefined, 10]);
    expect(refused).toMatchObject({ code: 'ROOST_ERR_ENVELOPE_INVALID', field: 'ctx.checkpoint.state' });
  });
});

describe('close with a journal', () => {
  it('leaves traces still running unfinished in the journal, and the next start resumes them', async () => {
    const path = freshPath();
    const first = runtime(path, { drainTimeoutMs: 20 });
    let started = 0;
    const f1 = first.flow({
      name: 'c',
      edges: [
        node(
          'slow',
          () => {
            started++;
            return new Promise(() => {});
          },
          { timeoutMs: null },
        ).to(),
      ],
    });
    await first.start();
    const t = await f1.emit('x');
    await until(() => started === 1);
    await first.close();
    expect(await look(path).getTrace('c', t.traceId)).toMatchObject({ status: 'running' });
    const second = runtime(path);
    const f2 = second.flow({ name: 'c', edges: [node('slow', (env: Envelope<string>) => `${env.payload} done`).to()] });
    await second.start();
    expect(await f2.fetch(t.traceId)).toBe('x done');
  });
});

describe('retention', () => {
  it('prunes finished traces (with their events) after retention.finishedMs; running ones stay', async () => {
    const path = freshPath();
    const rt = runtime(path, { retention: { finishedMs: 50, intervalMs: 20 }, drainTimeoutMs: 10 });
    const gate = deferred();
    const flow = rt.flow({
      name: 'r',
      edges: [
        node(
          'n',
          async (env: Envelope<string>) => {
            if (env.payload === 'hold') await gate.promise;
            return env.payload;
          },
          { timeoutMs: null },
        ).to(),
      ],
    });
    await rt.start();
    const done = await flow.emit('done');
    await flow.fetch(done.traceId);
    const held = await flow.emit('hold');
    const store = look(path);
    let gone = false;
    await until(() => {
      void store.getTrace('r', done.traceId).then((t) => (gone = t === null));
      return gone;
    }, 5_000, 'the finished trace to be pruned');
    expect(await store.history(done.traceId)).toEqual([]);
    expect(await store.getTrace('r', held.traceId)).toMatchObject({ status: 'running' });
    gate.resolve();
  });

  it('refuses new work with ROOST_ERR_STORE_FULL over retention.maxStoreBytes, until pruning makes room', async () => {
    const path = freshPath();
    const maxStoreBytes = 400_000;
    const rt = runtime(path, { retention: { maxStoreBytes, finishedMs: 3_600_000, intervalMs: 2_147_483_647 } });
    const flow = rt.flow({ name: 'full', edges: [node('n', (env: Envelope<string>) => env.payload).to()] });
    await rt.start();
    const big = 'x'.repeat(16 * 1024);
    let refused: unknown;
    for (let i = 0; i < 200 && refused === undefined; i++) {
      try {
        await flow.fetch((await flow.emit(big)).traceId);
        await new Promise((r) => setImmediate(r)); // the size check after the commit
      } catch (error) {
        refused = error;
      }
    }
    expect(refused).toMatchObject({ code: 'ROOST_ERR_STORE_FULL', field: 'retention.maxStoreBytes' });
    expect((await look(path).usedBytes())!).toBeGreaterThan(maxStoreBytes);
    // Everything is finished; prune it all (as retention would after finishedMs) and there is room again.
    await look(path).prune(Date.now() + 1);
    await rt.prune();
    let ok = false;
    await until(() => {
      void flow.emit('small').then(
        () => (ok = true),
        () => {},
      );
      return ok;
    }, 5_000, 'room after pruning');
  });
});

describe('ctx.step', () => {
  it('runs its function once across retries, with a stable stepKey', async () => {
    const path = freshPath();
    const rt = runtime(path);
    const ran: string[] = [];
    let attempts = 0;
    const flow = rt.flow({
      name: 's',
      edges: [
        node(
          'pay',
          async (_env: Envelope, ctx) => {
            attempts++;
            const receipt = await ctx.step('charge', ({ stepKey }) => {
              ran.push(stepKey);
              return { charged: 42 };
            });
            if (attempts < 3) throw new Error('flaky after the charge');
            return receipt;
          },
          { retries: 3, backoff: { baseMs: 1, maxMs: 1, jitter: 0 } },
        ).to(),
      ],
    });
    await rt.start();
    const t = await flow.emit({});
    expect(await flow.fetch(t.traceId)).toEqual({ charged: 42 });
    expect(attempts).toBe(3);
    expect(ran).toHaveLength(1);
    expect(ran[0]).toMatch(/^[0-9a-f]{32}$/);
    expect(await look(path).getStep(ran[0]!)).toEqual({ value: { charged: 42 } });
  });

  it('without a journal it still runs once per input across retries; bad arguments are coded errors', async () => {
    const rt = createRuntime({ logger: false });
    runtimes.push(rt);
    let ran = 0;
    let attempts = 0;
    let badName: unknown;
    const flow = rt.flow({
      name: 's',
      edges: [
        node(
          'pay',
          async (_env: Envelope, ctx) => {
            attempts++;
            badName = await ctx.step('', () => 1).catch((e: unknown) => e);
            await ctx.step('charge', () => ++ran);
            if (attempts < 2) throw new Error('again');
            return ran;
          },
          { retries: 2, backoff: { baseMs: 1, maxMs: 1, jitter: 0 } },
        ).to(),
      ],
    });
    await rt.start();
    expect(await flow.fetch((await flow.emit({})).traceId)).toBe(1);
    expect(badName).toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'ctx.step.name' });
  });
});
