/** Dedup on receive: in memory within its window, and through a durable journal across a restart. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryStore, SqliteStore } from '../../src/index.js';
import { Dedup } from '../../src/transport/dedup.js';
import { envelope } from './contract.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('Dedup', () => {
  it('remembers the last max ids in memory', async () => {
    const dedup = new Dedup({ max: 2 });
    const seen: string[] = [];
    const h = dedup.wrap((env) => void seen.push(env.payload as string));
    const [a, b, c] = [envelope('a'), envelope('b'), envelope('c')];
    for (const env of [a, b, a, c, a]) await h(env, { topic: 't' });
    // a is forgotten once b and c were handled after it: its last delivery runs again.
    expect(seen).toEqual(['a', 'b', 'c', 'a']);
    expect(dedup.duplicates).toBe(1);
  });

  it('a concurrent second delivery waits for the first instead of running', async () => {
    const dedup = new Dedup();
    let runs = 0;
    const h = dedup.wrap(async () => {
      runs++;
      await new Promise((r) => setTimeout(r, 50));
    });
    const a = envelope('a');
    await Promise.all([h(a, { topic: 't' }), h(a, { topic: 't' })]);
    expect(runs).toBe(1);
  });

  it('a second delivery that waited for a first one that failed gets its own try', async () => {
    const dedup = new Dedup();
    let calls = 0;
    const h = dedup.wrap(async () => {
      calls++;
      await new Promise((r) => setTimeout(r, 30));
      if (calls === 1) throw new Error('transient');
    });
    const a = envelope('a');
    const [first, second] = await Promise.allSettled([h(a, { topic: 't' }), h(a, { topic: 't' })]);
    expect(first.status).toBe('rejected');
    expect(second.status).toBe('fulfilled');
    expect(calls).toBe(2);
    expect(dedup.duplicates).toBe(0);
  });

  it('a failed handler leaves no mark: the next delivery runs it again', async () => {
    const dedup = new Dedup();
    let calls = 0;
    const h = dedup.wrap(() => {
      if (++calls === 1) throw new Error('transient');
    });
    const a = envelope('a');
    await expect(h(a, { topic: 't' })).rejects.toThrow('transient');
    await h(a, { topic: 't' });
    await h(a, { topic: 't' });
    expect(calls).toBe(2);
  });

  it('with a durable journal, catches a redelivery after a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'roost-dedup-'));
    dirs.push(dir);
    const file = join(dir, 'journal.db');
    const a = envelope('a');
    let runs = 0;
    const first = new SqliteStore(file);
    await new Dedup({ store: first }).wrap(() => void runs++)(a, { topic: 't' });
    await first.close();
    const again = new SqliteStore(file); // a new process: nothing in memory
    const dedup = new Dedup({ store: again });
    await dedup.wrap(() => void runs++)(a, { topic: 't' });
    await again.close();
    expect(runs).toBe(1);
    expect(dedup.duplicates).toBe(1);
  });

  it('does not write marks to a store that is not durable, and checks its option', () => {
    const store = new MemoryStore();
    expect(new Dedup({ store })).toBeInstanceOf(Dedup);
    expect(() => new Dedup({ max: 0 })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'dedup.max' }));
  });
});
