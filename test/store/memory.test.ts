import { describe, expect, it } from 'vitest';
import { isRoostError, openStore, uuidv7 } from '../../src/index.js';
import { Journal } from '../../src/store/journal.js';
import { MemoryStore } from '../../src/store/memory.js';
import type { StoreBatch } from '../../src/store/store.js';
import { storeContract } from './contract.js';

storeContract('memory', () => new MemoryStore());

type TraceWrite = NonNullable<StoreBatch['traces']>[number];
const trace = (traceId: string, status: TraceWrite['status'], at: number): TraceWrite => ({
  flow: 'f',
  traceId,
  tenant: 'acme',
  status,
  createdAt: at,
  updatedAt: at,
  deadline: null,
  idempotencyKey: `k-${traceId}`,
});

describe('memory store bounds', () => {
  it('keeps at most maxFinishedTraces finished traces, dropping the oldest with their events and steps', async () => {
    const store = new MemoryStore({ maxFinishedTraces: 3 });
    const running = uuidv7();
    await store.commit({ traces: [trace(running, 'running', 1)] });
    const ids = Array.from({ length: 6 }, () => uuidv7());
    for (const [i, id] of ids.entries()) {
      await store.commit({
        traces: [trace(id, 'running', 10 + i)],
        events: [{ traceId: id, type: 'node_failed', ts: 10 + i, event: { i } }],
        steps: [{ stepKey: `s-${id}`, traceId: id, value: i, ts: 10 + i }],
        checkpoints: [{ key: `c-${id}`, traceId: id, value: i, ts: 10 + i }],
      });
      await store.commit({ traces: [trace(id, 'succeeded', 20 + i)] });
    }
    for (const id of ids.slice(0, 3)) {
      expect(await store.findTrace(id)).toBeNull();
      expect(await store.history(id)).toEqual([]);
      expect(await store.getStep(`s-${id}`)).toBeUndefined();
      expect(await store.getCheckpoint(`c-${id}`)).toBeUndefined();
      expect(await store.findIdempotent('f', 'acme', `k-${id}`, 0)).toBeNull();
    }
    for (const [i, id] of ids.slice(3).entries()) {
      expect(await store.findTrace(id)).toMatchObject({ status: 'succeeded' });
      expect((await store.history(id)).map((e) => e.event)).toEqual([{ i: i + 3 }]);
      expect(await store.getStep(`s-${id}`)).toEqual({ value: i + 3 });
    }
    expect(await store.findTrace(running)).toMatchObject({ status: 'running' }); // never dropped
    const page = await store.listTraces({ limit: 100 });
    expect(page.traces).toHaveLength(4);
    await store.close();
  });

  it('is set by the URL; a bad one is refused with the field', () => {
    expect(openStore('memory:?max_finished_traces=5')).toBeInstanceOf(MemoryStore);
    for (const bad of ['memory:?max_finished_traces=0', 'memory:?max=5', 'memory:?max_finished_traces=x']) {
      let caught: unknown;
      try {
        openStore(bad);
      } catch (error) {
        caught = error;
      }
      expect(isRoostError(caught, 'ROOST_ERR_INVALID_OPTION')).toBe(true);
      expect((caught as { field?: string }).field).toBe('store');
    }
    expect(() => new MemoryStore({ maxFinishedTraces: 0 })).toThrow(/maxFinishedTraces/);
  });
});

describe('journal checkpoints', () => {
  it('a checkpoint removed reads as gone at once (before its commit), and is gone from the store after it', async () => {
    const store = new MemoryStore();
    const journal = new Journal(store, () => {});
    const t = uuidv7();
    journal.checkpoint({ key: 'n', traceId: t, value: { a: 1 }, ts: 1 });
    await journal.committed();
    expect(await store.getCheckpoint('n')).toEqual({ value: { a: 1 } });
    journal.checkpointRemoved('n');
    expect(await journal.getCheckpoint('n')).toBeUndefined();
    expect(await store.getCheckpoint('n')).toEqual({ value: { a: 1 } }); // not committed yet
    await journal.committed();
    expect(await store.getCheckpoint('n')).toBeUndefined();
    expect(await journal.getCheckpoint('n')).toBeUndefined();
    // Written again later: there again.
    journal.checkpoint({ key: 'n', traceId: t, value: 2, ts: 2 });
    expect(await journal.getCheckpoint('n')).toEqual({ value: 2 });
    await journal.committed();
    expect(await store.getCheckpoint('n')).toEqual({ value: 2 });
    // Removed, then written again, in one batch: the write stands (a store applies removals last).
    journal.checkpointRemoved('n');
    journal.checkpoint({ key: 'n', traceId: t, value: 3, ts: 3 });
    expect(await journal.getCheckpoint('n')).toEqual({ value: 3 });
    await journal.committed();
    expect(await store.getCheckpoint('n')).toEqual({ value: 3 });
    expect(await journal.getCheckpoint('n')).toEqual({ value: 3 });
    await store.close();
  });
});
