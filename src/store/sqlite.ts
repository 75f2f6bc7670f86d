/**
 * The store contract on an embedded SQLite file (`better-sqlite3`): the default journal.
 *
 * WAL mode with `synchronous=FULL` by default, so a commit that returned survives a power cut;
 * one transaction per batch (the runtime batches a tick's writes: group commit). Migrations are
 * the numbered `.sql` files of `migrations/sqlite/`, applied in order inside a transaction under
 * SQLite's write lock, and recorded in `schema_migrations`.
 *
 * better-sqlite3 is synchronous: a commit blocks the event loop for its fsync. That is the
 * price of an embedded journal without a server; batching keeps it to one fsync per tick.
 */
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import type { Envelope } from '../envelope/envelope.js';
import { RoostError, ensureError } from '../errors.js';
import type { EventError } from '../flow/events.js';
import { decodeCursor, encodeCursor, pageLimit } from './cursor.js';
import { assertFence, checkFence } from './fence.js';
import { ManyRows } from './sqlite-many.js';
import type {
  Fence,
  OutboxEntry,
  IdempotentTrace,
  Lease,
  PendingEnvelope,
  Store,
  StoreBatch,
  StoredDeadLetter,
  StoredEvent,
  StoredTrace,
  StoredTraceStatus,
  TracePage,
  TraceQuery,
  Versioned,
} from './store.js';
import { RECEIVE_MARK_END, RECEIVE_MARK_PREFIX, leaseOf, prefixEnd, type LeaseRow, type StoredCheckpoint } from './store.js';

/** Options of {@link SqliteStore}. */
export interface SqliteStoreOptions {
  /** `FULL` (default: a returned commit survives a power cut) or `NORMAL` (survives a crash of the process only). */
  readonly synchronous?: 'FULL' | 'NORMAL';
  /** How long a write waits for another connection's lock, ms (default 5000). */
  readonly busyTimeoutMs?: number;
}

const MIGRATIONS = new URL('./migrations/sqlite/', import.meta.url);

interface TraceRow {
  flow: string;
  trace_id: string;
  tenant: string;
  status: StoredTraceStatus;
  created_at: number;
  updated_at: number;
  deadline: number | null;
  idempotency_key: string | null;
  idempotency_fingerprint: string | null;
  result: string | null;
  error: string | null;
  owner: string | null;
}

interface DeadLetterRow {
  id: string;
  flow: string;
  node: string;
  trace_id: string;
  tenant: string;
  envelope: string;
  error: string;
  attempts: number;
  created_at: number;
}

function toTrace(r: TraceRow): StoredTrace {
  return {
    flow: r.flow,
    traceId: r.trace_id,
    tenant: r.tenant,
    status: r.status,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    deadline: r.deadline,
    idempotencyKey: r.idempotency_key,
    idempotencyFingerprint: r.idempotency_fingerprint ?? null,
    result: r.result === null ? null : (JSON.parse(r.result) as unknown),
    error: r.error === null ? null : (JSON.parse(r.error) as EventError),
    owner: r.owner,
  };
}

function toDeadLetter(r: DeadLetterRow): StoredDeadLetter {
  return {
    id: r.id,
    flow: r.flow,
    node: r.node,
    traceId: r.trace_id,
    tenant: r.tenant,
    envelope: JSON.parse(r.envelope) as Envelope,
    error: JSON.parse(r.error) as EventError,
    attempts: r.attempts,
    createdAt: r.created_at,
  };
}

/** JSON text of a value, with `undefined` stored as null. */
function json(value: unknown): string {
  return JSON.stringify(value ?? null);
}

/** See the module comment. */
export class SqliteStore implements Store {
  readonly durable = true;
  readonly shared = false;
  private readonly db: Database.Database;
  private readonly statements;
  private readonly commitTx: Database.Transaction<(batch: StoreBatch) => void>;
  private readonly putValueTx: Database.Transaction<(key: string, text: string, expectedVersion: number, fence: Fence) => number | null>;
  private closed = false;

  /** Opens (creating when missing) the journal at `path` and applies pending migrations. */
  constructor(
    readonly path: string,
    options: SqliteStoreOptions = {},
  ) {
    try {
      if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
      this.db = new Database(path);
    } catch (error) {
      throw unavailable(`cannot open the SQLite journal at ${path}`, error);
    }
    const db = this.db;
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${options.synchronous ?? 'FULL'}`);
    db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
    migrate(db);
    this.statements = {
      consume: db.prepare('DELETE FROM pending WHERE envelope_id = ?'),
      attempt: db.prepare("UPDATE pending SET envelope = json_set(envelope, '$.attempt', ?) WHERE envelope_id = ?"),
      output: db.prepare('INSERT INTO outputs (flow, trace_id, value) VALUES (?, ?, ?)'),
      endPending: db.prepare('DELETE FROM pending WHERE flow = ? AND trace_id = ?'),
      endOutputs: db.prepare('DELETE FROM outputs WHERE flow = ? AND trace_id = ?'),
      outputs: db.prepare(
        `SELECT o.trace_id, o.value FROM outputs o JOIN traces t ON t.flow = o.flow AND t.trace_id = o.trace_id
         WHERE o.flow = ? AND t.status = 'running' ORDER BY o.seq`,
      ),
      step: db.prepare('INSERT INTO steps (step_key, trace_id, value, ts) VALUES (?, ?, ?, ?) ON CONFLICT (step_key) DO NOTHING'),
      checkpoint: db.prepare(
        'INSERT INTO checkpoints (key, trace_id, value, ts) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, ts = excluded.ts',
      ),
      getCheckpoint: db.prepare('SELECT value FROM checkpoints WHERE key = ?'),
      removeCheckpoint: db.prepare('DELETE FROM checkpoints WHERE key = ?'),
      // By the primary key's range: the keys that start with a prefix, after a key.
      listCheckpoints: db.prepare('SELECT key, trace_id, value FROM checkpoints WHERE key >= ? AND key < ? AND key > ? ORDER BY key LIMIT ?'),
      pruneCheckpoints: db.prepare('DELETE FROM checkpoints WHERE trace_id = ?'),
      deadLetter: db.prepare(
        `INSERT OR REPLACE INTO dead_letters (id, flow, node, trace_id, tenant, envelope, error, attempts, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      deadLetterDelete: db.prepare('DELETE FROM dead_letters WHERE id = ?'),
      outboxAdd: db.prepare('INSERT INTO outbox (source, topic, envelope, created_at) VALUES (?, ?, ?, ?)'),
      outboxSent: db.prepare('DELETE FROM outbox WHERE seq = ?'),
      outboxEntries: db.prepare('SELECT seq, source, topic, envelope, created_at FROM outbox WHERE source = ? AND seq > ? ORDER BY seq LIMIT ?'),
      outboxSize: db.prepare('SELECT count(*) AS n FROM outbox WHERE source = ?'),
      getTrace: db.prepare('SELECT * FROM traces WHERE flow = ? AND trace_id = ?'),
      findTrace: db.prepare('SELECT * FROM traces WHERE trace_id = ? ORDER BY created_at DESC LIMIT 1'),
      idempotent: db.prepare(
        'SELECT trace_id, idempotency_fingerprint FROM traces WHERE flow = ? AND tenant = ? AND idempotency_key = ? AND created_at >= ? ORDER BY created_at DESC LIMIT 1',
      ),
      running: db.prepare("SELECT * FROM traces WHERE flow = ? AND status = 'running' ORDER BY created_at, trace_id"),
      runningOwned: db.prepare(
        "SELECT * FROM traces WHERE flow = ? AND status = 'running' AND (owner = ? OR owner IS NULL) ORDER BY created_at, trace_id",
      ),
      pending: db.prepare('SELECT seq, flow, node, hops, envelope, first_attempt, lease_worker, lease_delivery, lease_until FROM pending WHERE flow = ? ORDER BY seq'),
      lease: db.prepare('UPDATE pending SET lease_worker = ?, lease_delivery = ?, lease_until = ? WHERE envelope_id = ?'),
      getStep: db.prepare('SELECT value FROM steps WHERE step_key = ?'),
      history: db.prepare('SELECT seq, trace_id, type, ts, event FROM events WHERE trace_id = ? ORDER BY seq'),
      getDeadLetter: db.prepare('SELECT * FROM dead_letters WHERE id = ?'),
      getLease: db.prepare('SELECT name, holder, token, until FROM leases WHERE name = ?'),
      putLease: db.prepare('INSERT OR REPLACE INTO leases (name, holder, token, until) VALUES (?, ?, ?, ?)'),
      releaseLease: db.prepare('UPDATE leases SET until = 0 WHERE name = ? AND holder = ? AND token = ?'),
      owners: db.prepare("SELECT DISTINCT owner FROM traces WHERE flow = ? AND status = 'running'"),
      claimFrom: db.prepare("UPDATE traces SET owner = ? WHERE flow = ? AND status = 'running' AND owner = ? RETURNING trace_id"),
      claimUnowned: db.prepare("UPDATE traces SET owner = ? WHERE flow = ? AND status = 'running' AND owner IS NULL RETURNING trace_id"),
      getValue: db.prepare('SELECT value, version FROM kv WHERE key = ?'),
      insertValue: db.prepare('INSERT INTO kv (key, value, version) VALUES (?, ?, 1) ON CONFLICT (key) DO NOTHING'),
      updateValue: db.prepare('UPDATE kv SET value = ?, version = version + 1 WHERE key = ? AND version = ?'),
      pruneTraces: db.prepare("DELETE FROM traces WHERE status <> 'running' AND updated_at < ? RETURNING trace_id"),
      pruneEvents: db.prepare('DELETE FROM events WHERE trace_id = ?'),
      pruneSteps: db.prepare('DELETE FROM steps WHERE trace_id = ?'),
      // Receive marks by their key range (the primary key) and age; see RECEIVE_MARK_PREFIX.
      pruneMarks: db.prepare('DELETE FROM steps WHERE step_key >= ? AND step_key < ? AND ts < ?'),
    };
    const s = this.statements;
    // Positional parameters (binding an object of named ones cost 15 % of a trace write), many
    // rows per statement. An update keeps what the write leaves out (null): result, error and
    // owner; and a finished trace stays finished.
    const upsertTraces = new ManyRows(
      db,
      'INSERT INTO traces (flow, trace_id, tenant, status, created_at, updated_at, deadline, idempotency_key, idempotency_fingerprint, result, error, owner)',
      12,
      `ON CONFLICT (flow, trace_id) DO UPDATE SET
         status = CASE WHEN traces.status = 'running' THEN excluded.status ELSE traces.status END,
         updated_at = CASE WHEN traces.status = 'running' THEN excluded.updated_at ELSE traces.updated_at END,
         result = coalesce(excluded.result, traces.result),
         error = coalesce(excluded.error, traces.error),
         owner = coalesce(excluded.owner, traces.owner)`,
    );
    const accept = new ManyRows(
      db,
      'INSERT INTO pending (envelope_id, flow, node, trace_id, hops, envelope, first_attempt)',
      7,
      'ON CONFLICT (envelope_id) DO NOTHING',
    );
    const events = new ManyRows(db, 'INSERT INTO events (trace_id, type, ts, event)', 4);
    this.commitTx = db.transaction((batch: StoreBatch) => {
      if (batch.fence !== undefined) this.checkFence(batch.fence);
      const traces = batch.traces ?? [];
      if (traces.length > 0) {
        const values: unknown[] = [];
        for (const t of traces) {
          values.push(
            t.flow,
            t.traceId,
            t.tenant,
            t.status,
            t.createdAt,
            t.updatedAt,
            t.deadline,
            t.idempotencyKey,
            t.idempotencyFingerprint ?? null,
            t.result === undefined ? null : json(t.result),
            t.error === undefined || t.error === null ? null : json(t.error),
            t.owner ?? null,
          );
        }
        upsertTraces.run(values);
      }
      const accepted = batch.accepted ?? [];
      if (accepted.length > 0) {
        const values: unknown[] = [];
        for (const p of accepted) values.push(p.envelope.id, p.flow, p.node, p.envelope.traceId, p.hops, json(p.envelope), p.firstAttempt ?? p.envelope.attempt);
        accept.run(values);
      }
      for (const l of batch.leases ?? []) s.lease.run(l.worker, l.delivery, l.until, l.envelopeId);
      for (const id of batch.consumed ?? []) s.consume.run(id);
      for (const a of batch.attempts ?? []) s.attempt.run(a.attempt, a.envelopeId);
      for (const o of batch.outputs ?? []) s.output.run(o.flow, o.traceId, json(o.value));
      for (const e of batch.ended ?? []) {
        s.endPending.run(e.flow, e.traceId);
        s.endOutputs.run(e.flow, e.traceId);
      }
      const stored = batch.events ?? [];
      if (stored.length > 0) {
        const values: unknown[] = [];
        for (const e of stored) values.push(e.traceId, e.type, e.ts, json(e.event));
        events.run(values);
      }
      for (const st of batch.steps ?? []) s.step.run(st.stepKey, st.traceId, json(st.value), st.ts);
      for (const c of batch.checkpoints ?? []) s.checkpoint.run(c.key, c.traceId, json(c.value), c.ts);
      for (const key of batch.checkpointsRemoved ?? []) s.removeCheckpoint.run(key);
      for (const d of batch.deadLetters ?? []) {
        s.deadLetter.run(d.id, d.flow, d.node, d.traceId, d.tenant, json(d.envelope), json(d.error), d.attempts, d.createdAt);
      }
      for (const id of batch.deadLettersRemoved ?? []) s.deadLetterDelete.run(id);
      for (const o of batch.outbox ?? []) s.outboxAdd.run(o.source, o.topic, json(o.envelope), o.createdAt);
      for (const seq of batch.outboxSent ?? []) s.outboxSent.run(seq);
    });
    this.putValueTx = db.transaction((key: string, text: string, expectedVersion: number, fence: Fence): number | null => {
      this.checkFence(fence);
      if (expectedVersion === 0) return s.insertValue.run(key, text).changes === 1 ? 1 : null;
      return s.updateValue.run(text, key, expectedVersion).changes === 1 ? expectedVersion + 1 : null;
    });
  }

  /** Throws `ROOST_ERR_FENCED` unless the fence holds now; called inside the write's transaction. */
  private checkFence(fence: Fence): void {
    const f = checkFence(fence);
    assertFence(f, (this.statements.getLease.get(f.name) as Lease | undefined) ?? null, Date.now());
  }

  /** PRAGMAs as the connection reports them (for `roost doctor` and the benchmark). */
  pragmas(): { journalMode: string; synchronous: number; busyTimeout: number } {
    return {
      journalMode: this.db.pragma('journal_mode', { simple: true }) as string,
      synchronous: this.db.pragma('synchronous', { simple: true }) as number,
      busyTimeout: this.db.pragma('busy_timeout', { simple: true }) as number,
    };
  }

  commit(batch: StoreBatch): Promise<void> {
    // A fenced batch takes the write lock before it reads the lease (IMMEDIATE): no other
    // connection can take the lease between the check and the write.
    return this.run(() => (batch.fence === undefined ? this.commitTx(batch) : this.commitTx.immediate(batch)));
  }

  getTrace(flow: string, traceId: string): Promise<StoredTrace | null> {
    return this.run(() => {
      const row = this.statements.getTrace.get(flow, traceId) as TraceRow | undefined;
      return row === undefined ? null : toTrace(row);
    });
  }

  listTraces(query: TraceQuery = {}): Promise<TracePage> {
    return this.run(() => {
      const limit = pageLimit(query.limit);
      const filter = new Filter()
        .eq('flow', query.flow)
        .eq('tenant', query.tenant)
        .eq('status', query.status)
        .when(query.since, 'created_at >= ?')
        .when(query.until, 'created_at < ?');
      if (query.cursor !== undefined) {
        const after = decodeCursor(query.cursor);
        filter.add('(trace_id < ? OR (trace_id = ? AND flow < ?))', after.traceId, after.traceId, after.flow);
      }
      const { where, args } = filter;
      const sql = `SELECT * FROM traces ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
                   ORDER BY trace_id DESC, flow DESC LIMIT ?`;
      const rows = this.db.prepare(sql).all(...args, limit + 1) as TraceRow[];
      const page = rows.slice(0, limit).map(toTrace);
      const last = page[page.length - 1];
      return { traces: page, next: rows.length > limit && last !== undefined ? encodeCursor(last.traceId, last.flow) : null };
    });
  }

  findTrace(traceId: string): Promise<StoredTrace | null> {
    return this.run(() => {
      const row = this.statements.findTrace.get(traceId) as TraceRow | undefined;
      return row === undefined ? null : toTrace(row);
    });
  }

  findIdempotent(flow: string, tenant: string, key: string, since: number): Promise<IdempotentTrace | null> {
    return this.run(() => {
      const row = this.statements.idempotent.get(flow, tenant, key, since) as { trace_id: string; idempotency_fingerprint: string | null } | undefined;
      return row === undefined ? null : { traceId: row.trace_id, fingerprint: row.idempotency_fingerprint };
    });
  }

  runningTraces(flow: string, owner?: string): Promise<readonly StoredTrace[]> {
    return this.run(() => {
      const rows = (owner === undefined ? this.statements.running.all(flow) : this.statements.runningOwned.all(flow, owner)) as TraceRow[];
      return rows.map(toTrace);
    });
  }

  pendingEnvelopes(flow: string): Promise<readonly PendingEnvelope[]> {
    return this.run(() =>
      (this.statements.pending.all(flow) as (LeaseRow & { seq: number; flow: string; node: string; hops: number; envelope: string; first_attempt: number })[]).map(
        (r) => ({
          seq: r.seq,
          flow: r.flow,
          node: r.node,
          hops: r.hops,
          envelope: JSON.parse(r.envelope) as Envelope,
          firstAttempt: r.first_attempt,
          lease: leaseOf(r),
        }),
      ),
    );
  }

  pendingOutputs(flow: string): Promise<readonly { readonly traceId: string; readonly value: unknown }[]> {
    return this.run(() =>
      (this.statements.outputs.all(flow) as { trace_id: string; value: string }[]).map((r) => ({
        traceId: r.trace_id,
        value: JSON.parse(r.value) as unknown,
      })),
    );
  }

  getStep(stepKey: string): Promise<{ readonly value: unknown } | undefined> {
    return this.run(() => {
      const row = this.statements.getStep.get(stepKey) as { value: string } | undefined;
      return row === undefined ? undefined : { value: JSON.parse(row.value) as unknown };
    });
  }

  getCheckpoint(key: string): Promise<{ readonly value: unknown } | undefined> {
    return this.run(() => {
      const row = this.statements.getCheckpoint.get(key) as { value: string } | undefined;
      return row === undefined ? undefined : { value: JSON.parse(row.value) as unknown };
    });
  }

  listCheckpoints(prefix: string, after: string | null, limit: number): Promise<readonly StoredCheckpoint[]> {
    return this.run(() =>
      (this.statements.listCheckpoints.all(prefix, prefixEnd(prefix), after ?? '', limit) as { key: string; trace_id: string; value: string }[]).map((r) => ({ key: r.key, traceId: r.trace_id, value: JSON.parse(r.value) as unknown })),
    );
  }

  history(traceId: string): Promise<readonly StoredEvent[]> {
    return this.run(() =>
      (this.statements.history.all(traceId) as { seq: number; trace_id: string; type: string; ts: number; event: string }[]).map((r) => ({
        seq: r.seq,
        traceId: r.trace_id,
        type: r.type,
        ts: r.ts,
        event: JSON.parse(r.event) as Record<string, unknown>,
      })),
    );
  }

  listDeadLetters(query: { flow?: string; tenant?: string; limit?: number } = {}): Promise<readonly StoredDeadLetter[]> {
    return this.run(() => {
      const limit = pageLimit(query.limit);
      const { where, args } = new Filter().eq('flow', query.flow).eq('tenant', query.tenant);
      const sql = `SELECT * FROM dead_letters ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
                   ORDER BY created_at DESC, id DESC LIMIT ?`;
      return (this.db.prepare(sql).all(...args, limit) as DeadLetterRow[]).map(toDeadLetter);
    });
  }

  getDeadLetter(id: string): Promise<StoredDeadLetter | null> {
    return this.run(() => {
      const row = this.statements.getDeadLetter.get(id) as DeadLetterRow | undefined;
      return row === undefined ? null : toDeadLetter(row);
    });
  }

  outboxEntries(source: string, afterSeq: number, limit: number): Promise<readonly OutboxEntry[]> {
    return this.run(() =>
      (this.statements.outboxEntries.all(source, afterSeq, limit) as { seq: number; source: string; topic: string; envelope: string; created_at: number }[]).map((r) => ({
        seq: r.seq,
        source: r.source,
        topic: r.topic,
        envelope: JSON.parse(r.envelope) as Envelope,
        createdAt: r.created_at,
      })),
    );
  }

  outboxSize(source: string): Promise<number> {
    return this.run(() => (this.statements.outboxSize.get(source) as { n: number }).n);
  }

  acquireLease(name: string, holder: string, ttlMs: number, now: number): Promise<Lease | null> {
    return this.run(() =>
      this.db.transaction((): Lease | null => {
        const current = this.statements.getLease.get(name) as Lease | undefined;
        if (current !== undefined && current.holder !== holder && current.until > now) return null;
        const token = current === undefined ? 1 : current.holder === holder && current.until > now ? current.token : current.token + 1;
        const lease: Lease = { name, holder, token, until: now + ttlMs };
        this.statements.putLease.run(name, holder, token, lease.until);
        return lease;
      }).immediate(),
    );
  }

  getLease(name: string): Promise<Lease | null> {
    return this.run(() => (this.statements.getLease.get(name) as Lease | undefined) ?? null);
  }

  runningOwners(flow: string): Promise<readonly (string | null)[]> {
    return this.run(() => (this.statements.owners.all(flow) as { owner: string | null }[]).map((r) => r.owner));
  }

  claimTraces(flow: string, from: string | null, to: string): Promise<readonly string[]> {
    return this.run(() =>
      ((from === null ? this.statements.claimUnowned.all(to, flow) : this.statements.claimFrom.all(to, flow, from)) as { trace_id: string }[]).map((r) => r.trace_id),
    );
  }

  releaseLease(name: string, holder: string, token: number): Promise<void> {
    return this.run(() => {
      this.statements.releaseLease.run(name, holder, token);
    });
  }

  getValue(key: string): Promise<Versioned | undefined> {
    return this.run(() => {
      const row = this.statements.getValue.get(key) as { value: string; version: number } | undefined;
      return row === undefined ? undefined : { value: JSON.parse(row.value) as unknown, version: row.version };
    });
  }

  putValue(key: string, value: unknown, expectedVersion: number, fence?: Fence): Promise<number | null> {
    return this.run(() => {
      const text = json(value);
      // Fenced: the check and the write in one transaction under the write lock (IMMEDIATE).
      if (fence !== undefined) return this.putValueTx.immediate(key, text, expectedVersion, fence);
      if (expectedVersion === 0) return this.statements.insertValue.run(key, text).changes === 1 ? 1 : null;
      return this.statements.updateValue.run(text, key, expectedVersion).changes === 1 ? expectedVersion + 1 : null;
    });
  }

  prune(before: number): Promise<number> {
    return this.run(() =>
      this.db.transaction((): number => {
        const gone = this.statements.pruneTraces.all(before) as { trace_id: string }[];
        for (const { trace_id } of gone) {
          this.statements.pruneEvents.run(trace_id);
          this.statements.pruneSteps.run(trace_id);
          this.statements.pruneCheckpoints.run(trace_id);
        }
        this.statements.pruneMarks.run(RECEIVE_MARK_PREFIX, RECEIVE_MARK_END, before);
        return gone.length;
      })(),
    );
  }

  /** Copies the journal, consistent, to `file` while it is in use (SQLite's online backup). */
  async backup(file: string): Promise<void> {
    if (this.closed) throw new RoostError('ROOST_ERR_INVALID_STATE', 'store: it is closed', { field: 'store' });
    try {
      await this.db.backup(file);
    } catch (error) {
      throw unavailable(`backup to ${file} failed`, error);
    }
  }

  usedBytes(): Promise<number | null> {
    return this.run(() => this.usedBytesNow());
  }

  /** Bytes in use (pages not on the free list), read from the connection at once. */
  usedBytesNow(): number {
    const pages = this.db.pragma('page_count', { simple: true }) as number;
    const free = this.db.pragma('freelist_count', { simple: true }) as number;
    const size = this.db.pragma('page_size', { simple: true }) as number;
    return (pages - free) * size;
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.db.close();
    }
    return Promise.resolve();
  }

  /** Runs a synchronous database call as a promise; driver errors become coded errors. */
  private run<T>(fn: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new RoostError('ROOST_ERR_INVALID_STATE', 'store: it is closed', { field: 'store' }));
    try {
      return Promise.resolve(fn());
    } catch (error) {
      return Promise.reject(error instanceof RoostError ? error : unavailable('SQLite journal operation failed', error));
    }
  }
}

/** A WHERE clause built from the filters that are set. */
class Filter {
  readonly where: string[] = [];
  readonly args: (string | number)[] = [];
  add(sql: string, ...values: (string | number)[]): this {
    this.where.push(sql);
    this.args.push(...values);
    return this;
  }
  eq(column: string, value: string | undefined): this {
    return value === undefined ? this : this.add(`${column} = ?`, value);
  }
  when(value: number | undefined, sql: string): this {
    return value === undefined ? this : this.add(sql, value);
  }
}

/** Applies the migrations not yet recorded, in order, each in its own transaction. */
function migrate(db: Database.Database): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)');
  const applied = new Set((db.prepare('SELECT version FROM schema_migrations').all() as { version: number }[]).map((r) => r.version));
  const dir = fileURLToPath(MIGRATIONS);
  const files = readdirSync(dir)
    .filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f))
    .sort();
  for (const file of files) {
    const version = Number(file.slice(0, 3));
    if (applied.has(version)) continue;
    const sql = readFileSync(`${dir}${file}`, 'utf8');
    db.transaction(() => {
      db.exec(sql);
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(version, file, Date.now());
    }).immediate();
  }
}

function unavailable(message: string, cause: unknown): RoostError {
  const error = ensureError(cause);
  return new RoostError('ROOST_ERR_STORE_UNAVAILABLE', `${message}: ${error.message}`, { cause: error, details: { store: 'sqlite' } });
}
