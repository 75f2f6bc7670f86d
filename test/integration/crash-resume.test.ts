/**
 * The crash test, on SQLite and on PostgreSQL: a child process runs a 3-node flow on the journal (test/fixtures/
 * crash-worker.ts) and is SIGKILLed at random moments while work is in flight, then started
 * again, until it finishes. Every accepted task must have exactly one result, its side effect
 * must have happened exactly once, and the effect's function may have run at most once more
 * per kill.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../../src/index.js';
import { dropSchemas, freshSchema, schemaUrl } from '../helpers/postgres.js';

const worker = fileURLToPath(new URL('../fixtures/crash-worker.ts', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'roost-crash-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const K = 2_000;
const KILLS = 4;

interface Life {
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  ready: Promise<void>;
  kill(): void;
  output(): string;
}

function startWorker(storeUrl: string, effects: string, base: number): Life {
  const child = spawn(process.execPath, ['--import', 'tsx', worker, storeUrl, effects, String(K), String(base)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let ready!: () => void;
  const readyPromise = new Promise<void>((r) => (ready = r));
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    if (out.includes('ready')) ready();
  });
  child.stderr.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { exited, ready: readyPromise, kill: () => child.kill('SIGKILL'), output: () => out };
}

/** Running traces in the journal (read with a fresh connection, as after a crash). */
async function runningCount(storeUrl: string): Promise<number> {
  const store = openStore(storeUrl);
  try {
    return (await store.listTraces({ flow: 'crash', status: 'running', limit: 1000 })).traces.length;
  } finally {
    await store.close();
  }
}

const pgSchema = freshSchema('crash');
afterAll(dropSchemas);

const JOURNALS = [
  { name: 'SQLite', url: (): string => `sqlite:${join(dir, 'journal.db')}` },
  {
    name: 'PostgreSQL',
    url: (): string => schemaUrl(pgSchema),
  },
];

describe.each(JOURNALS)('crash and resume on the $name journal', ({ name, url }) => {
  it(`${K} tasks, ${KILLS} SIGKILLs while in flight: one result and one effect per task`, async () => {
    const journal = url();
    const effects = join(dir, `effects-${name}.db`);
    const base = Date.now() - 3_600_000;
    let kills = 0;
    const progress: number[] = [];
    for (let life = 0; life < KILLS; life++) {
      const w = startWorker(journal, effects, base);
      await Promise.race([w.ready, w.exited]);
      // A random moment while tasks are being submitted and run.
      const after = 150 + Math.floor(Math.random() * 600);
      const done = await Promise.race([w.exited.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), after))]);
      if (done) break; // it finished before this kill: nothing left to interrupt
      w.kill();
      expect(await w.exited).toBeNull();
      kills++;
      progress.push(await runningCount(journal));
    }
    const final = startWorker(journal, effects, base);
    const code = await final.exited;
    expect(code, final.output()).toBe(0);
    expect(final.output()).toContain('done');
    expect(kills).toBeGreaterThan(0);
    // The kills landed while work was in flight: some tasks accepted and not finished.
    expect(progress.some((running) => running > 0), JSON.stringify(progress)).toBe(true);
    if (process.env['ROOST_TEST_VERBOSE']) console.log(`${name}: traces running at each kill:`, JSON.stringify(progress));

    const store: Store = openStore(journal);
    try {
      const seen = new Map<number, unknown>();
      let cursor: string | undefined;
      do {
        const page = await store.listTraces({ flow: 'crash', limit: 1000, ...(cursor === undefined ? {} : { cursor }) });
        for (const t of page.traces) {
          expect(t.status).toBe('succeeded');
          const result = t.result as { i: number; done: boolean; receipt: { charged: number } };
          expect(seen.has(result.i)).toBe(false);
          seen.set(result.i, result);
          expect(result).toEqual({ i: result.i, done: true, receipt: { charged: result.i } });
        }
        cursor = page.next ?? undefined;
      } while (cursor !== undefined);
      expect(seen.size).toBe(K); // every task has exactly one result
      expect(await store.pendingEnvelopes('crash')).toEqual([]); // nothing stuck
    } finally {
      await store.close();
    }
    const db = new Database(effects, { readonly: true });
    try {
      const rows = db.prepare('SELECT COUNT(*) AS n, COUNT(DISTINCT task) AS tasks FROM effects').get() as { n: number; tasks: number };
      expect(rows).toEqual({ n: K, tasks: K }); // one effect per task
      const runs = (db.prepare('SELECT n FROM runs').get() as { n: number }).n;
      expect(runs).toBeGreaterThanOrEqual(K);
      expect(runs).toBeLessThanOrEqual(K + kills); // fn reran only across a crash window
    } finally {
      db.close();
    }
  }, 180_000);
});
