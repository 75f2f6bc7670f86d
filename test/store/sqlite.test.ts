import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { uuidv7 } from '../../src/index.js';
import { traceHistory } from '../../src/store/history.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import { ManyRows } from '../../src/store/sqlite-many.js';
import { openStore } from '../../src/store/open.js';
import { MemoryStore } from '../../src/store/memory.js';
import { storeContract } from './contract.js';

const dir = mkdtempSync(join(tmpdir(), 'roost-sqlite-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

storeContract(
  'sqlite',
  () => new SqliteStore(join(dir, `contract-${++n}.db`)),
  async (store) => {
    const path = (store as SqliteStore).path;
    await store.close();
    return new SqliteStore(path);
  },
);

describe('sqlite journal settings', () => {
  it('runs in WAL with synchronous=FULL by default, NORMAL on request', async () => {
    const full = new SqliteStore(join(dir, 'pragmas-full.db'));
    expect(full.pragmas()).toEqual({ journalMode: 'wal', synchronous: 2, busyTimeout: 5000 });
    await full.close();
    const normal = new SqliteStore(join(dir, 'pragmas-normal.db'), { synchronous: 'NORMAL', busyTimeoutMs: 100 });
    expect(normal.pragmas()).toEqual({ journalMode: 'wal', synchronous: 1, busyTimeout: 100 });
    await normal.close();
  });

  it('makes the directory of a new journal, and migrating twice changes nothing', async () => {
    const path = join(dir, 'nested', 'deeper', 'roost.db');
    const a = new SqliteStore(path);
    await a.putValue('k', 1, 0);
    await a.close();
    const b = new SqliteStore(path);
    expect(await b.getValue('k')).toEqual({ value: 1, version: 1 });
    await b.close();
  });

  it('migrates a journal made by the first schema: traces kept, stored lifecycle events dropped', async () => {
    const path = join(dir, 'v1.db');
    const db = new Database(path);
    db.exec(readFileSync(new URL('../../src/store/migrations/sqlite/001_journal.sql', import.meta.url), 'utf8'));
    db.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)');
    db.prepare('INSERT INTO schema_migrations VALUES (1, ?, 0)').run('001_journal.sql');
    const [a, b] = [uuidv7(), uuidv7()];
    const row = db.prepare("INSERT INTO traces (flow, trace_id, tenant, status, created_at, updated_at) VALUES ('f', ?, 't', ?, ?, ?)");
    row.run(a, 'succeeded', 10, 20);
    row.run(b, 'running', 30, 30);
    const event = db.prepare("INSERT INTO events (trace_id, type, ts, event) VALUES (?, ?, 1, '{}')");
    for (const type of ['trace_start', 'node_retry', 'trace_success']) event.run(a, type);
    db.close();
    const store = new SqliteStore(path);
    try {
      expect(await store.getTrace('f', a)).toMatchObject({ status: 'succeeded', createdAt: 10 });
      expect((await store.runningTraces('f')).map((t) => t.traceId)).toEqual([b]);
      expect((await store.listTraces({})).traces.map((t) => t.traceId)).toEqual([b, a]);
      expect((await store.history(a)).map((e) => e.type)).toEqual(['node_retry']);
      expect((await traceHistory(store, a)).map((e) => e.type)).toEqual(['trace_start', 'node_retry', 'trace_success']);
    } finally {
      await store.close();
    }
  });

  it('a journal that cannot be opened gives ROOST_ERR_STORE_UNAVAILABLE', () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'not a directory');
    expect(() => new SqliteStore(join(file, 'x.db'))).toThrow(expect.objectContaining({ code: 'ROOST_ERR_STORE_UNAVAILABLE' }));
  });
});

describe('ManyRows', () => {
  it('inserts any number of rows, in order, through chunks of 64, 16, 4 and 1', () => {
    const db = new Database(':memory:');
    db.exec('CREATE TABLE t (seq INTEGER PRIMARY KEY, a INTEGER NOT NULL, b TEXT NOT NULL)');
    const insert = new ManyRows(db, 'INSERT INTO t (a, b)', 2);
    let total = 0;
    for (const n of [0, 1, 3, 4, 5, 63, 64, 65, 85, 200]) {
      const values: unknown[] = [];
      for (let i = 0; i < n; i++) values.push(total + i, `r${total + i}`);
      insert.run(values);
      total += n;
    }
    const rows = db.prepare('SELECT a, b FROM t ORDER BY seq').all() as { a: number; b: string }[];
    expect(rows).toHaveLength(total);
    expect(rows.every((r, i) => r.a === i && r.b === `r${i}`)).toBe(true);
    db.close();
  });
});

describe('openStore(url)', () => {
  it('memory: and sqlite:<path>', async () => {
    const memory = openStore('memory:');
    expect(memory).toBeInstanceOf(MemoryStore);
    await memory.close();
    const sqlite = openStore(`sqlite:${join(dir, 'by-url.db')}`);
    expect(sqlite).toBeInstanceOf(SqliteStore);
    expect(sqlite.durable).toBe(true);
    await sqlite.close();
  });

  it('anything else is refused, naming the field', () => {
    for (const url of ['', 'sqlite:', 'mysql://x', 'file.db', 42]) {
      expect(() => openStore(url as string, {}, 'options.store')).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'options.store' }));
    }
  });
});
