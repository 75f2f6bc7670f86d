/**
 * The store contract on PostgreSQL (13 or later), for fleets that share one journal.
 *
 * A `pg` pool; every table lives in one schema (the URL's `schema` parameter, default `roost`),
 * set as the search path of each connection. The numbered `.sql` files of
 * `migrations/postgres/` are applied in order, each in a transaction, under an advisory lock, so
 * several processes starting at once migrate once. A batch is one transaction of a few
 * statements: rows of a kind go in together through `unnest` of arrays (one round trip per kind,
 * not per row).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { Envelope } from '../envelope/envelope.js';
import { RoostError, ensureError, invalidOption, isRoostError } from '../errors.js';
import { hidePassword } from '../redact.js';
import type { EventError } from '../flow/events.js';
import { decodeCursor, encodeCursor, pageLimit } from './cursor.js';
import { assertFence, checkFence } from './fence.js';
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

const MIGRATIONS = new URL('./migrations/postgres/', import.meta.url);
const MIN_SERVER_VERSION = 130000;
/** Advisory lock key of the migrations ("roostmig" as a number). */
export const MIGRATION_LOCK = 0x726f6f73746d6967n;

/** Options of {@link PostgresStore}. */
export interface PostgresStoreOptions {
  /** Connections in the pool (default 10). */
  readonly poolSize?: number;
  /** The server aborts a statement that runs longer, ms (default 30,000): a timed-out commit does not land later. */
  readonly statementTimeoutMs?: number;
}

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
  result: unknown;
  error: EventError | null;
  owner: string | null;
}

interface DeadLetterRow {
  id: string;
  flow: string;
  node: string;
  trace_id: string;
  tenant: string;
  envelope: Envelope;
  error: EventError;
  attempts: number;
  created_at: number;
}

const toTrace = (r: TraceRow): StoredTrace => ({
  flow: r.flow,
  traceId: r.trace_id,
  tenant: r.tenant,
  status: r.status,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
  deadline: r.deadline,
  idempotencyKey: r.idempotency_key,
  idempotencyFingerprint: r.idempotency_fingerprint ?? null,
  result: r.result ?? null,
  error: r.error ?? null,
  owner: r.owner,
});

const toDeadLetter = (r: DeadLetterRow): StoredDeadLetter => ({
  id: r.id,
  flow: r.flow,
  node: r.node,
  traceId: r.trace_id,
  tenant: r.tenant,
  envelope: r.envelope,
  error: r.error,
  attempts: r.attempts,
  createdAt: r.created_at,
});

/** JSON text for a jsonb parameter, with `undefined` stored as null. */
const json = (value: unknown): string => JSON.stringify(value ?? null);

/** bigint columns come back as numbers (epoch ms and sequence numbers fit in a double). */
const types = new pg.TypeOverrides();
types.setTypeParser(pg.types.builtins.INT8, (value: string) => Number(value));

/**
 * Refuses a server older than PostgreSQL 13 (`server_version_num`, e.g. `120017` for 12.17) with
 * `ROOST_ERR_STORE_UNSUPPORTED`: 13 is the oldest release the journal supports (older ones are
 * out of upstream support, and nothing here is tested on them).
 */
export function checkServerVersion(serverVersionNum: string): void {
  const version = Number(serverVersionNum);
  if (!Number.isInteger(version) || version < MIN_SERVER_VERSION) {
    const shown = Number.isInteger(version) ? `${Math.floor(version / 10_000)}.${version % 10_000}` : serverVersionNum;
    throw new RoostError('ROOST_ERR_STORE_UNSUPPORTED', `PostgreSQL ${shown} is older than 13, which the journal needs`, {
      field: 'store',
      expected: 'PostgreSQL 13 or later',
      received: shown,
    });
  }
}

/** Splits `postgres://…?schema=x` into the connection string and the schema name. */
function parseUrl(url: string): { connectionString: string; schema: string } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalidOption('store', 'a postgres:// URL', url);
  }
  const schema = parsed.searchParams.get('schema') ?? 'roost';
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw invalidOption('store.schema', 'a schema name matching [a-z_][a-z0-9_]{0,62}', schema);
  parsed.searchParams.delete('schema');
  return { connectionString: parsed.toString(), schema };
}

/** See the module comment. */
export class PostgresStore implements Store {
  readonly durable = true;
  readonly shared = true;
  readonly schema: string;
  /** The database URL without the schema parameter and with any password hidden (for messages). */
  readonly displayUrl: string;
  private readonly pool: pg.Pool;
  /** The connection check and the migrations, run once from the constructor. */
  private readonly migrated: Promise<void>;
  private closed = false;

  constructor(url: string, options: PostgresStoreOptions = {}) {
    const { connectionString, schema } = parseUrl(url);
    this.schema = schema;
    this.displayUrl = hidePassword(connectionString);
    this.pool = new pg.Pool({
      connectionString,
      max: options.poolSize ?? 10,
      options: `-c search_path=${schema} -c statement_timeout=${Math.max(1, Math.floor(options.statementTimeoutMs ?? 30_000))}`,
      connectionTimeoutMillis: Math.max(1, Math.floor(options.statementTimeoutMs ?? 30_000)),
      types,
    });
    this.pool.on('error', () => {}); // an idle connection dropped by the server: the next query reconnects
    // A connection that dies while checked out emits 'error' on its client: without a listener
    // that is an uncaught exception. The query in flight fails anyway, and that is reported.
    this.pool.on('connect', (client) => client.on('error', () => {}));
    this.migrated = this.init();
    this.migrated.catch(() => {}); // reported by ready() and by the first operation that awaits it
  }

  /**
   * Resolves once the schema is migrated (rejects with `ROOST_ERR_STORE_UNAVAILABLE` when the
   * server cannot be reached or a migration failed). Every operation waits for it too.
   */
  ready(): Promise<void> {
    return this.migrated;
  }

  private async init(): Promise<void> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (error) {
      throw unavailable('cannot connect to PostgreSQL', error);
    }
    let timeoutRestored = false;
    try {
      checkServerVersion((await client.query<{ v: string }>('SELECT current_setting($1) AS v', ['server_version_num'])).rows[0]!.v);
      // The operations' statement_timeout does not bound the migrations: waiting for another
      // process's migrations (the lock) or rewriting a large table takes as long as it takes.
      // RESET (below) gives the connection back to the pool with the timeout it was opened with;
      // one that failed before it is closed instead.
      await client.query('SET statement_timeout = 0');
      // Under the lock: CREATE SCHEMA IF NOT EXISTS races with itself across processes.
      await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK.toString()]);
      try {
        await client.query(`CREATE SCHEMA IF NOT EXISTS ${this.schema}`);
        await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)');
        const applied = new Set((await client.query<{ version: number }>('SELECT version FROM schema_migrations')).rows.map((r) => r.version));
        const dir = fileURLToPath(MIGRATIONS);
        for (const file of readdirSync(dir).filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f)).sort()) {
          const version = Number(file.slice(0, 3));
          if (applied.has(version)) continue;
          await client.query('BEGIN');
          try {
            await client.query(readFileSync(`${dir}${file}`, 'utf8'));
            await client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [version, file, Date.now()]);
            await client.query('COMMIT');
          } catch (error) {
            await client.query('ROLLBACK');
            throw error;
          }
        }
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK.toString()]);
      }
      await client.query('RESET statement_timeout');
      timeoutRestored = true;
    } catch (error) {
      throw isRoostError(error) ? error : unavailable('PostgreSQL journal migration failed', error);
    } finally {
      client.release(!timeoutRestored); // true: closed, not pooled
    }
  }

  commit(batch: StoreBatch, signal?: AbortSignal): Promise<void> {
    return this.run(async () => {
      const client = await this.pool.connect();
      try {
        signal?.throwIfAborted(); // the caller gave up while this waited for a connection
        await client.query('BEGIN');
        if (batch.fence !== undefined) await this.checkFence(client, batch.fence);
        await this.apply(client, batch);
        signal?.throwIfAborted(); // ... or while it ran: roll back rather than land late
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {});
        throw error;
      } finally {
        client.release();
      }
    });
  }

  private async apply(c: pg.PoolClient, b: StoreBatch): Promise<void> {
    const traces = b.traces ?? [];
    if (traces.length > 0) {
      await c.query(
        `INSERT INTO traces (flow, trace_id, tenant, status, created_at, updated_at, deadline, idempotency_key, idempotency_fingerprint, result, error, owner)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::text[], $9::text[], $10::jsonb[], $11::jsonb[], $12::text[])
         ON CONFLICT (flow, trace_id) DO UPDATE SET
           -- a finished trace stays finished, whatever order writes land in
           status = CASE WHEN traces.status = 'running' THEN excluded.status ELSE traces.status END,
           updated_at = CASE WHEN traces.status = 'running' THEN excluded.updated_at ELSE traces.updated_at END,
           result = coalesce(excluded.result, traces.result),
           error = coalesce(excluded.error, traces.error),
           owner = coalesce(excluded.owner, traces.owner)`,
        [
          traces.map((t) => t.flow),
          traces.map((t) => t.traceId),
          traces.map((t) => t.tenant),
          traces.map((t) => t.status),
          traces.map((t) => t.createdAt),
          traces.map((t) => t.updatedAt),
          traces.map((t) => t.deadline),
          traces.map((t) => t.idempotencyKey),
          traces.map((t) => t.idempotencyFingerprint ?? null),
          traces.map((t) => (t.result === undefined || t.result === null ? null : json(t.result))),
          traces.map((t) => (t.error === undefined || t.error === null ? null : json(t.error))),
          traces.map((t) => t.owner ?? null),
        ],
      );
    }
    const accepted = b.accepted ?? [];
    if (accepted.length > 0) {
      await c.query(
        `INSERT INTO pending (envelope_id, flow, node, trace_id, hops, envelope, first_attempt)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::jsonb[], $7::int[])
         ON CONFLICT (envelope_id) DO NOTHING`,
        [
          accepted.map((p) => p.envelope.id),
          accepted.map((p) => p.flow),
          accepted.map((p) => p.node),
          accepted.map((p) => p.envelope.traceId),
          accepted.map((p) => p.hops),
          accepted.map((p) => json(p.envelope)),
          accepted.map((p) => p.firstAttempt ?? p.envelope.attempt),
        ],
      );
    }
    const leases = b.leases ?? [];
    if (leases.length > 0) {
      await c.query(
        `UPDATE pending p SET lease_worker = l.worker, lease_delivery = l.delivery, lease_until = l.until
         FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[]) AS l(id, worker, delivery, until) WHERE p.envelope_id = l.id`,
        [leases.map((l) => l.envelopeId), leases.map((l) => l.worker), leases.map((l) => l.delivery), leases.map((l) => l.until)],
      );
    }
    if ((b.consumed ?? []).length > 0) await c.query('DELETE FROM pending WHERE envelope_id = ANY($1::text[])', [b.consumed]);
    const attempts = b.attempts ?? [];
    if (attempts.length > 0) {
      await c.query(
        `UPDATE pending p SET envelope = jsonb_set(p.envelope, '{attempt}', to_jsonb(a.attempt))
         FROM unnest($1::text[], $2::int[]) AS a(id, attempt) WHERE p.envelope_id = a.id`,
        [attempts.map((a) => a.envelopeId), attempts.map((a) => a.attempt)],
      );
    }
    const outputs = b.outputs ?? [];
    if (outputs.length > 0) {
      await c.query('INSERT INTO outputs (flow, trace_id, value) SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])', [
        outputs.map((o) => o.flow),
        outputs.map((o) => o.traceId),
        outputs.map((o) => json(o.value)),
      ]);
    }
    const ended = b.ended ?? [];
    if (ended.length > 0) {
      const args = [ended.map((e) => e.flow), ended.map((e) => e.traceId)];
      await c.query('DELETE FROM pending WHERE (flow, trace_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))', args);
      await c.query('DELETE FROM outputs WHERE (flow, trace_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))', args);
    }
    const events = b.events ?? [];
    if (events.length > 0) {
      await c.query('INSERT INTO events (trace_id, type, ts, event) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::jsonb[])', [
        events.map((e) => e.traceId),
        events.map((e) => e.type),
        events.map((e) => e.ts),
        events.map((e) => json(e.event)),
      ]);
    }
    const steps = b.steps ?? [];
    if (steps.length > 0) {
      await c.query(
        `INSERT INTO steps (step_key, trace_id, value, ts) SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::bigint[])
         ON CONFLICT (step_key) DO NOTHING`,
        [steps.map((s) => s.stepKey), steps.map((s) => s.traceId), steps.map((s) => json(s.value)), steps.map((s) => s.ts)],
      );
    }
    const checkpoints = latestPerKey(b.checkpoints ?? []);
    if (checkpoints.length > 0) {
      await c.query(
        `INSERT INTO checkpoints (key, trace_id, value, ts) SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::bigint[])
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, ts = excluded.ts`,
        [checkpoints.map((x) => x.key), checkpoints.map((x) => x.traceId), checkpoints.map((x) => json(x.value)), checkpoints.map((x) => x.ts)],
      );
    }
    if ((b.checkpointsRemoved ?? []).length > 0) await c.query('DELETE FROM checkpoints WHERE key = ANY($1::text[])', [b.checkpointsRemoved]);
    const letters = b.deadLetters ?? [];
    if (letters.length > 0) {
      await c.query(
        `INSERT INTO dead_letters (id, flow, node, trace_id, tenant, envelope, error, attempts, created_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[], $8::int[], $9::bigint[])
         ON CONFLICT (id) DO UPDATE SET error = excluded.error, attempts = excluded.attempts`,
        [
          letters.map((d) => d.id),
          letters.map((d) => d.flow),
          letters.map((d) => d.node),
          letters.map((d) => d.traceId),
          letters.map((d) => d.tenant),
          letters.map((d) => json(d.envelope)),
          letters.map((d) => json(d.error)),
          letters.map((d) => d.attempts),
          letters.map((d) => d.createdAt),
        ],
      );
    }
    if ((b.deadLettersRemoved ?? []).length > 0) await c.query('DELETE FROM dead_letters WHERE id = ANY($1::text[])', [b.deadLettersRemoved]);
    const outbox = b.outbox ?? [];
    if (outbox.length > 0) {
      // Seqs follow the order of the batch (the identity is drawn row by row, in ORDINALITY order).
      await c.query(
        `INSERT INTO outbox (source, topic, envelope, created_at)
         SELECT source, topic, envelope, created_at FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::bigint[])
           WITH ORDINALITY AS o (source, topic, envelope, created_at, n) ORDER BY n`,
        [outbox.map((o) => o.source), outbox.map((o) => o.topic), outbox.map((o) => json(o.envelope)), outbox.map((o) => o.createdAt)],
      );
    }
    if ((b.outboxSent ?? []).length > 0) await c.query('DELETE FROM outbox WHERE seq = ANY($1::bigint[])', [b.outboxSent]);
  }

  getTrace(flow: string, traceId: string): Promise<StoredTrace | null> {
    return this.run(async () => {
      const { rows } = await this.pool.query<TraceRow>('SELECT * FROM traces WHERE flow = $1 AND trace_id = $2', [flow, traceId]);
      return rows[0] === undefined ? null : toTrace(rows[0]);
    });
  }

  findTrace(traceId: string): Promise<StoredTrace | null> {
    return this.run(async () => {
      const { rows } = await this.pool.query<TraceRow>('SELECT * FROM traces WHERE trace_id = $1 ORDER BY created_at DESC LIMIT 1', [traceId]);
      return rows[0] === undefined ? null : toTrace(rows[0]);
    });
  }

  listTraces(query: TraceQuery = {}): Promise<TracePage> {
    return this.run(async () => {
      const limit = pageLimit(query.limit);
      const where: string[] = [];
      const args: (string | number)[] = [];
      const add = (sql: string, ...values: (string | number)[]): void => {
        let text = sql;
        for (const v of values) {
          args.push(v);
          text = text.replace('?', `$${args.length}`);
        }
        where.push(text);
      };
      if (query.flow !== undefined) add('flow = ?', query.flow);
      if (query.tenant !== undefined) add('tenant = ?', query.tenant);
      if (query.status !== undefined) add('status = ?', query.status);
      if (query.since !== undefined) add('created_at >= ?', query.since);
      if (query.until !== undefined) add('created_at < ?', query.until);
      if (query.cursor !== undefined) {
        const after = decodeCursor(query.cursor);
        add('(trace_id, flow) < (?, ?)', after.traceId, after.flow);
      }
      args.push(limit + 1);
      const sql = `SELECT * FROM traces ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
                   ORDER BY trace_id DESC, flow DESC LIMIT $${args.length}`;
      const { rows } = await this.pool.query<TraceRow>(sql, args);
      const page = rows.slice(0, limit).map(toTrace);
      const last = page[page.length - 1];
      return { traces: page, next: rows.length > limit && last !== undefined ? encodeCursor(last.traceId, last.flow) : null };
    });
  }

  findIdempotent(flow: string, tenant: string, key: string, since: number): Promise<IdempotentTrace | null> {
    return this.run(async () => {
      const { rows } = await this.pool.query<{ trace_id: string; idempotency_fingerprint: string | null }>(
        'SELECT trace_id, idempotency_fingerprint FROM traces WHERE flow = $1 AND tenant = $2 AND idempotency_key = $3 AND created_at >= $4 ORDER BY created_at DESC LIMIT 1',
        [flow, tenant, key, since],
      );
      const row = rows[0];
      return row === undefined ? null : { traceId: row.trace_id, fingerprint: row.idempotency_fingerprint };
    });
  }

  runningTraces(flow: string, owner?: string): Promise<readonly StoredTrace[]> {
    return this.run(async () => {
      const { rows } =
        owner === undefined
          ? await this.pool.query<TraceRow>("SELECT * FROM traces WHERE flow = $1 AND status = 'running' ORDER BY created_at, trace_id", [flow])
          : await this.pool.query<TraceRow>(
              "SELECT * FROM traces WHERE flow = $1 AND status = 'running' AND (owner = $2 OR owner IS NULL) ORDER BY created_at, trace_id",
              [flow, owner],
            );
      return rows.map(toTrace);
    });
  }

  pendingEnvelopes(flow: string): Promise<readonly PendingEnvelope[]> {
    return this.run(async () => {
      const { rows } = await this.pool.query<LeaseRow & { seq: number; flow: string; node: string; hops: number; envelope: Envelope; first_attempt: number }>(
        'SELECT seq, flow, node, hops, envelope, first_attempt, lease_worker, lease_delivery, lease_until FROM pending WHERE flow = $1 ORDER BY seq',
        [flow],
      );
      return rows.map((r) => ({ seq: r.seq, flow: r.flow, node: r.node, hops: r.hops, envelope: r.envelope, firstAttempt: r.first_attempt, lease: leaseOf(r) }));
    });
  }

  pendingOutputs(flow: string): Promise<readonly { readonly traceId: string; readonly value: unknown }[]> {
    return this.run(async () => {
      const { rows } = await this.pool.query<{ trace_id: string; value: unknown }>(
        `SELECT o.trace_id, o.value FROM outputs o JOIN traces t ON t.flow = o.flow AND t.trace_id = o.trace_id
         WHERE o.flow = $1 AND t.status = 'running' ORDER BY o.seq`,
        [flow],
      );
      return rows.map((r) => ({ traceId: r.trace_id, value: r.value }));
    });
  }

  outboxEntries(source: string, afterSeq: number, limit: number): Promise<readonly OutboxEntry[]> {
    return this.run(async () => {
      const { rows } = await this.pool.query<{ seq: number; source: string; topic: string; envelope: Envelope; created_at: number }>(
        'SELECT seq, source, topic, envelope, created_at FROM outbox WHERE source = $1 AND seq > $2 ORDER BY seq LIMIT $3',
        [source, afterSeq, limit],
      );
      return rows.map((r) => ({ seq: r.seq, source: r.source, topic: r.topic, envelope: r.envelope, createdAt: r.created_at }));
    });
  }

  outboxSize(source: string): Promise<number> {
    return this.run(async () => {
      const { rows } = await this.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM outbox WHERE source = $1', [source]);
      return rows[0]!.n;
    });
  }

  getStep(stepKey: string): Promise<{ readonly value: unknown } | undefined> {
    return this.run(async () => {
      const { rows } = await this.pool.query<{ value: unknown }>('SELECT value FROM steps WHERE step_key = $1', [stepKey]);
      return rows[0] === undefined ? undefined : { value: rows[0].value };
    });
  }

  getCheckpoint(key: string): Promise<{ readonly value: unknown } | undefined> {
    return this.run(async () => {
      const { rows } = await this.pool.query<{ value: unknown }>('SELECT value FROM checkpoints WHERE key = $1', [key]);
      return rows[0] === undefined ? undefined : { value: rows[0].value };
    });
  }

  listCheckpoints(prefix: string, after: string | null, limit: number): Promise<readonly StoredCheckpoint[]> {
    return this.run(async () => {
      // The key is in byte order (migration 007): the prefix's range is the keys that start with it.
      const { rows } = await this.pool.query<{ key: string; trace_id: string; value: unknown }>(
        'SELECT key, trace_id, value FROM checkpoints WHERE key >= $1 AND key < $2 AND key > $3 ORDER BY key LIMIT $4',
        [prefix, prefixEnd(prefix), after ?? '', limit],
      );
      return rows.map((r) => ({ key: r.key, traceId: r.trace_id, value: r.value }));
    });
  }

  history(traceId: string): Promise<readonly StoredEvent[]> {
    return this.run(async () => {
      const { rows } = await this.pool.query<{ seq: number; trace_id: string; type: string; ts: number; event: Record<string, unknown> }>(
        'SELECT seq, trace_id, type, ts, event FROM events WHERE trace_id = $1 ORDER BY seq',
        [traceId],
      );
      return rows.map((r) => ({ seq: r.seq, traceId: r.trace_id, type: r.type, ts: r.ts, event: r.event }));
    });
  }

  listDeadLetters(query: { flow?: string; tenant?: string; limit?: number } = {}): Promise<readonly StoredDeadLetter[]> {
    return this.run(async () => {
      const limit = pageLimit(query.limit);
      const { rows } = await this.pool.query<DeadLetterRow>(
        `SELECT * FROM dead_letters WHERE ($1::text IS NULL OR flow = $1) AND ($2::text IS NULL OR tenant = $2)
         ORDER BY created_at DESC, id DESC LIMIT $3`,
        [query.flow ?? null, query.tenant ?? null, limit],
      );
      return rows.map(toDeadLetter);
    });
  }

  getDeadLetter(id: string): Promise<StoredDeadLetter | null> {
    return this.run(async () => {
      const { rows } = await this.pool.query<DeadLetterRow>('SELECT * FROM dead_letters WHERE id = $1', [id]);
      return rows[0] === undefined ? null : toDeadLetter(rows[0]);
    });
  }

  acquireLease(name: string, holder: string, ttlMs: number, now: number): Promise<Lease | null> {
    return this.run(async () => {
      // One statement, so two processes racing for a free lease cannot both win: the update
      // happens only when the lease is free, expired, or already this holder's.
      const { rows } = await this.pool.query<Lease>(
        `INSERT INTO leases AS l (name, holder, token, until) VALUES ($1, $2, 1, $3::bigint + $4::bigint)
         ON CONFLICT (name) DO UPDATE SET
           holder = excluded.holder,
           token = CASE WHEN l.holder = excluded.holder AND l.until > $3::bigint THEN l.token ELSE l.token + 1 END,
           until = excluded.until
         WHERE l.holder = excluded.holder OR l.until <= $3::bigint
         RETURNING name, holder, token, until`,
        [name, holder, now, ttlMs],
      );
      return rows[0] ?? null;
    });
  }

  getLease(name: string): Promise<Lease | null> {
    return this.run(async () => {
      const { rows } = await this.pool.query<Lease>('SELECT name, holder, token, until FROM leases WHERE name = $1', [name]);
      return rows[0] ?? null;
    });
  }

  runningOwners(flow: string): Promise<readonly (string | null)[]> {
    return this.run(async () => {
      const { rows } = await this.pool.query<{ owner: string | null }>("SELECT DISTINCT owner FROM traces WHERE flow = $1 AND status = 'running'", [flow]);
      return rows.map((r) => r.owner);
    });
  }

  claimTraces(flow: string, from: string | null, to: string): Promise<readonly string[]> {
    return this.run(async () => {
      // Row locks make each trace go to one claimer; the loser's UPDATE re-checks owner and skips it.
      const { rows } = await this.pool.query<{ trace_id: string }>(
        "UPDATE traces SET owner = $1 WHERE flow = $2 AND status = 'running' AND owner IS NOT DISTINCT FROM $3 RETURNING trace_id",
        [to, flow, from],
      );
      return rows.map((r) => r.trace_id);
    });
  }

  releaseLease(name: string, holder: string, token: number): Promise<void> {
    return this.run(async () => {
      await this.pool.query('UPDATE leases SET until = 0 WHERE name = $1 AND holder = $2 AND token = $3', [name, holder, token]);
    });
  }

  getValue(key: string): Promise<Versioned | undefined> {
    return this.run(async () => {
      const { rows } = await this.pool.query<{ value: unknown; version: number }>('SELECT value, version FROM kv WHERE key = $1', [key]);
      return rows[0] === undefined ? undefined : { value: rows[0].value, version: rows[0].version };
    });
  }

  putValue(key: string, value: unknown, expectedVersion: number, fence?: Fence): Promise<number | null> {
    return this.run(async () => {
      const text = json(value);
      const write = async (c: pg.Pool | pg.PoolClient): Promise<number | null> => {
        const { rowCount } =
          expectedVersion === 0
            ? await c.query('INSERT INTO kv (key, value, version) VALUES ($1, $2::jsonb, 1) ON CONFLICT (key) DO NOTHING', [key, text])
            : await c.query('UPDATE kv SET value = $2::jsonb, version = version + 1 WHERE key = $1 AND version = $3', [key, text, expectedVersion]);
        return rowCount === 1 ? expectedVersion + 1 : null;
      };
      if (fence === undefined) return write(this.pool);
      const client = await this.pool.connect();
      try {
        await client.query('BEGIN');
        await this.checkFence(client, fence);
        const version = await write(client);
        await client.query('COMMIT');
        return version;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {});
        throw error;
      } finally {
        client.release();
      }
    });
  }

  /**
   * Throws `ROOST_ERR_FENCED` unless the fence holds now. Runs first in the write's transaction
   * and locks the lease row (FOR UPDATE) until it commits: `acquireLease` (an upsert of that row)
   * waits for the lock, so no new holder can slip in between this check and the write.
   */
  private async checkFence(c: pg.PoolClient, fence: Fence): Promise<void> {
    const f = checkFence(fence);
    const { rows } = await c.query<Lease>('SELECT holder, token, until FROM leases WHERE name = $1 FOR UPDATE', [f.name]);
    assertFence(f, rows[0] ?? null, Date.now());
  }

  prune(before: number): Promise<number> {
    return this.run(async () => {
      const client = await this.pool.connect();
      try {
        await client.query('BEGIN');
        const { rows } = await client.query<{ trace_id: string }>("DELETE FROM traces WHERE status <> 'running' AND updated_at < $1 RETURNING trace_id", [
          before,
        ]);
        const ids = rows.map((r) => r.trace_id);
        if (ids.length > 0) {
          await client.query('DELETE FROM events WHERE trace_id = ANY($1::text[])', [ids]);
          await client.query('DELETE FROM steps WHERE trace_id = ANY($1::text[])', [ids]);
          await client.query('DELETE FROM checkpoints WHERE trace_id = ANY($1::text[])', [ids]);
        }
        // Receive marks by their key range and age; see RECEIVE_MARK_PREFIX.
        await client.query('DELETE FROM steps WHERE step_key >= $1 AND step_key < $2 AND ts < $3', [RECEIVE_MARK_PREFIX, RECEIVE_MARK_END, before]);
        await client.query('COMMIT');
        return ids.length;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {});
        throw error;
      } finally {
        client.release();
      }
    });
  }

  usedBytes(): Promise<number | null> {
    return this.run(() => Promise.resolve(null)); // a server's disk is its operator's to watch
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.migrated.catch(() => {});
    await this.pool.end();
  }

  /** Waits for the migrations, then runs `fn`; driver errors become coded errors. */
  private async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new RoostError('ROOST_ERR_INVALID_STATE', 'store: it is closed', { field: 'store', expected: 'an open store', received: 'closed' });
    await this.migrated;
    try {
      return await fn();
    } catch (error) {
      throw isRoostError(error) ? error : unavailable('PostgreSQL journal operation failed', error);
    }
  }
}

/** One row per key, the last written: an upsert cannot touch the same row twice in one statement. */
function latestPerKey<T extends { readonly key: string }>(writes: readonly T[]): T[] {
  const last = new Map<string, T>();
  for (const w of writes) last.set(w.key, w);
  return [...last.values()];
}

function unavailable(message: string, cause: unknown): RoostError {
  const error = ensureError(cause);
  return new RoostError('ROOST_ERR_STORE_UNAVAILABLE', `${message}: ${error.message}`, { cause: error, details: { store: 'postgres' } });
}
