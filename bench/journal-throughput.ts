/**
 * The journal's price: the same 3-node flow on the SQLite journal, beside raw `better-sqlite3`
 * inserts of 200-byte rows in WAL with synchronous=FULL — one row per transaction (a commit per
 * message, the floor for C = 1) and 256 rows per transaction (what batching can reach).
 *
 *   raw-1/tx    one INSERT + COMMIT (fsync) per row
 *   raw-256/tx  256 INSERTs per COMMIT
 *   roost-postgres  the same on the machine's PostgreSQL (a fresh schema, dropped after)
 *   roost-sqlite  the flow with store sqlite:<tmp>, every guarantee on: emit resolves after the
 *               accepted task is committed, fetch after the result is, state-changing events
 *               journaled, timeouts and retries on every node
 *
 * Rounds are interleaved and summarised by medians, as in flow-throughput.ts.
 *
 *   npm run bench                               (runs this after the flow benchmark)
 *   BENCH_ROUNDS=1 npm run bench                 (one round: quick, noisy)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import pg from 'pg';
import { createRuntime, node, PostgresStore, SqliteStore, type Envelope, type Store } from '../src/index.js';
import { traceHistory } from '../src/store/history.js';
import { drive, median, settleHeap, type Payload } from './lib/measure.js';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const RAW1_ROWS = 2_000;
const RAW256_ROWS = 256 * 400;
const FLOW_MESSAGES: Record<number, number> = { 1: 2_000, 64: 20_000 };
const dir = mkdtempSync(join(tmpdir(), 'roost-bench-journal-'));
let files = 0;
const freshFile = (name: string): string => join(dir, `${name}-${++files}.db`);

interface Result {
  readonly name: string;
  readonly rate: number;
  readonly note: string;
}

function rawInserts(perTx: number, rows: number): Result {
  const db = new Database(freshFile(`raw-${perTx}`));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)');
  const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
  const row = 'x'.repeat(200);
  const tx = db.transaction((k: number) => {
    for (let i = 0; i < k; i++) insert.run(row);
  });
  const t0 = performance.now();
  for (let done = 0; done < rows; done += perTx) tx(perTx);
  const ms = performance.now() - t0;
  const count = (db.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n;
  db.close();
  if (count !== rows) throw new Error(`raw-${perTx}/tx: ${count} rows, expected ${rows}`);
  return { name: `raw-${perTx}/tx`, rate: rows / (ms / 1000), note: `${rows} rows` };
}

const PG_URL = process.env['ROOST_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const pgSchemas: string[] = [];

function freshPostgres(): PostgresStore {
  const schema = `roost_bench_${randomBytes(4).toString('hex')}`;
  pgSchemas.push(schema);
  const url = new URL(PG_URL);
  url.searchParams.set('schema', schema);
  return new PostgresStore(url.toString());
}

function roostSqlite(concurrency: number): Promise<Result> {
  return roostOn('sqlite', new SqliteStore(freshFile('roost')), concurrency);
}

function roostPostgres(concurrency: number): Promise<Result> {
  return roostOn('postgres', freshPostgres(), concurrency);
}

/** PRAGMAs read back from the connection of the first SQLite journal a measured flow ran on. */
let journalPragmas: ReturnType<SqliteStore['pragmas']> | null = null;

async function roostOn(kind: string, store: Store, concurrency: number): Promise<Result> {
  if (store instanceof SqliteStore) journalPragmas ??= store.pragmas();
  const rt = createRuntime({ logger: false, store });
  const inc = (name: string) => node(name, (env: Envelope<Payload>) => ({ n: env.payload.n + 1 }), { timeoutMs: 5000, retries: 2 });
  const [n1, n2, n3] = [inc('n1'), inc('n2'), inc('n3')];
  const flow = rt.flow({ name: 'bench', edges: [n1.to(n2), n2.to(n3)] });
  await rt.start();
  const messages = FLOW_MESSAGES[concurrency]!;
  settleHeap();
  const ms = await drive(
    { submit: async (p) => flow.fetch((await flow.emit(p)).traceId), close: () => Promise.resolve('') },
    messages,
    concurrency,
    3,
    new Float64Array(messages),
  );
  const stats = flow.stats();
  await rt.close();
  const page = await store.listTraces({ flow: 'bench', status: 'succeeded', limit: 1 });
  const sample = page.traces[0]?.traceId;
  // The lifecycle events come from the trace row; any others would be rows of their own.
  const history = sample === undefined ? [] : await traceHistory(store, sample);
  const rows = sample === undefined ? [] : await store.history(sample);
  await store.close();
  if (stats.succeeded !== messages) throw new Error(`roost-${kind}: ${stats.succeeded} of ${messages} succeeded`);
  return { name: `roost-${kind} C=${concurrency}`, rate: messages / (ms / 1000), note: `${messages} msgs; history per trace: ${history.map((e) => e.type).join(', ')} (${rows.length} event rows)` };
}

async function main(): Promise<void> {
  console.log(`\njournal: SQLite ${(new Database(':memory:').prepare('SELECT sqlite_version() AS v').get() as { v: string }).v}`);
  console.log(`  raw rows are 200 bytes; roost-sqlite is the 3-node flow with store sqlite:<tmp> (${ROUNDS} interleaved rounds, medians)\n`);
  const jobs: (() => Promise<Result> | Result)[] = [
    () => rawInserts(1, RAW1_ROWS),
    () => rawInserts(256, RAW256_ROWS),
    () => roostSqlite(1),
    () => roostSqlite(64),
  ];
  const pgUp = await reachable();
  if (pgUp) jobs.push(() => roostPostgres(1), () => roostPostgres(64));
  else console.log(`  PostgreSQL at ${PG_URL} does not answer: its rows are left out`);
  await roostSqlite(64); // warm-up
  const results: Result[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    for (let k = 0; k < jobs.length; k++) {
      const r = await jobs[(k + round - 1) % jobs.length]!();
      results.push(r);
      console.log(`round ${round}  ${r.name.padEnd(18)} ${Math.round(r.rate).toLocaleString('en-US').padStart(9)} /s  ${r.note}`);
    }
  }
  const med = (name: string): number => median(results.filter((r) => r.name === name).map((r) => r.rate));
  const raw1 = med('raw-1/tx');
  const raw256 = med('raw-256/tx');
  const c1 = med('roost-sqlite C=1');
  const c64 = med('roost-sqlite C=64');
  console.log(`\nPRAGMAs read back from the journal connection of a measured run: ${JSON.stringify(journalPragmas)}`);
  console.log('\nsummary (medians)\n');
  console.log(`raw-1/tx            ${Math.round(raw1).toLocaleString('en-US').padStart(9)} rows/s`);
  console.log(`raw-256/tx          ${Math.round(raw256).toLocaleString('en-US').padStart(9)} rows/s`);
  console.log(`roost-sqlite C=1    ${Math.round(c1).toLocaleString('en-US').padStart(9)} msgs/s   ÷ raw-1/tx   ${(c1 / raw1).toFixed(2)}×  (target ≥ 0.40×)`);
  console.log(`roost-sqlite C=64   ${Math.round(c64).toLocaleString('en-US').padStart(9)} msgs/s   ÷ raw-256/tx ${(c64 / raw256).toFixed(2)}×  (target ≥ 0.17×)`);
  if (pgUp) {
    for (const c of [1, 64]) console.log(`roost-postgres C=${c}`.padEnd(20) + `${Math.round(med(`roost-postgres C=${c}`)).toLocaleString('en-US').padStart(9)} msgs/s`);
  }
}

async function reachable(): Promise<boolean> {
  const client = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

async function dropSchemas(): Promise<void> {
  if (pgSchemas.length === 0) return;
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    for (const schema of pgSchemas) await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}

try {
  await main();
} finally {
  rmSync(dir, { recursive: true, force: true });
  await dropSchemas();
}
