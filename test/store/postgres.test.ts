import { readFileSync, readdirSync } from 'node:fs';
import pg from 'pg';
import { uuidv7 } from '../../src/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/open.js';
import { MIGRATION_LOCK, PostgresStore, checkServerVersion } from '../../src/store/postgres.js';
import { storeContract } from './contract.js';

import { PG_URL, assertPgReachable, dropSchemas, freshSchema, schemaUrl } from '../helpers/postgres.js';

/** A store in a schema of its own, dropped after the suite. */
function fresh(): PostgresStore {
  return new PostgresStore(schemaUrl(freshSchema('store')));
}

beforeAll(assertPgReachable);
afterAll(dropSchemas);

storeContract('postgres', fresh, async (store) => {
  await store.close();
  return new PostgresStore(schemaUrl((store as PostgresStore).schema));
});

describe('postgres journal', () => {
  it('several stores starting at once on one schema migrate it once', async () => {
    const schema = freshSchema('race');
    const stores = Array.from({ length: 4 }, () => new PostgresStore(schemaUrl(schema)));
    expect(await Promise.all(stores.map((s) => s.getValue('x')))).toEqual([undefined, undefined, undefined, undefined]);
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    const { rows } = await client.query(`SELECT version FROM ${schema}.schema_migrations ORDER BY version`);
    await client.end();
    const files = readdirSync(new URL('../../src/store/migrations/postgres/', import.meta.url)).filter((f) => f.endsWith('.sql'));
    expect(files.length).toBeGreaterThanOrEqual(6);
    expect(rows).toEqual(files.map((_, i) => ({ version: i + 1 })));
    await Promise.all(stores.map((s) => s.close()));
  });

  it('migrates a journal made by the first schema: traces kept, stored lifecycle events dropped', async () => {
    const schema = freshSchema('v1');
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    const [a, b] = [uuidv7(), uuidv7()];
    try {
      await client.query(`CREATE SCHEMA ${schema}`);
      await client.query(`SET search_path TO ${schema}`);
      await client.query(readFileSync(new URL('../../src/store/migrations/postgres/001_journal.sql', import.meta.url), 'utf8'));
      await client.query('CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)');
      await client.query("INSERT INTO schema_migrations VALUES (1, '001_journal.sql', 0)");
      await client.query("INSERT INTO traces (flow, trace_id, tenant, status, created_at, updated_at) VALUES ('f', $1, 't', 'succeeded', 10, 20), ('f', $2, 't', 'running', 30, 30)", [a, b]);
      await client.query("INSERT INTO events (trace_id, type, ts, event) VALUES ($1, 'trace_start', 1, '{}'), ($1, 'node_retry', 1, '{}'), ($1, 'trace_success', 1, '{}')", [a]);
    } finally {
      await client.end();
    }
    const store = new PostgresStore(schemaUrl(schema));
    try {
      expect(await store.getTrace('f', a)).toMatchObject({ status: 'succeeded', createdAt: 10 });
      expect((await store.runningTraces('f')).map((t) => t.traceId)).toEqual([b]);
      expect((await store.listTraces({})).traces.map((t) => t.traceId)).toEqual([b, a]);
      expect((await store.history(a)).map((e) => e.type)).toEqual(['node_retry']);
    } finally {
      await store.close();
    }
  });

  it('is what openStore makes of a postgres:// URL; a bad schema name is refused', async () => {
    const url = new URL(schemaUrl(freshSchema('open')));
    const store = openStore(url.toString());
    expect(store).toBeInstanceOf(PostgresStore);
    await store.close();
    url.searchParams.set('schema', 'Robert"); DROP TABLE x; --');
    expect(() => openStore(url.toString())).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'store.schema' }));
  });

  it('a commit whose caller gave up (its signal aborted) rolls back instead of landing late', async () => {
    const store = fresh();
    try {
      const id = 'abandoned-trace';
      const write = { flow: 'f', traceId: id, tenant: 't', status: 'running' as const, createdAt: 1, updatedAt: 1, deadline: null, idempotencyKey: null };
      await expect(store.commit({ traces: [write] }, AbortSignal.abort(new Error('gave up')))).rejects.toThrow();
      // Aborted while it is under way (waiting for the pool or the server): it still never lands.
      const abort = new AbortController();
      const running = store.commit({ traces: [write], events: [{ traceId: id, type: 'x', ts: 1, event: {} }] }, abort.signal);
      abort.abort(new Error('gave up'));
      await expect(running).rejects.toThrow();
      expect(await store.getTrace('f', id)).toBeNull();
      expect(await store.history(id)).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('refuses a server older than 13 with ROOST_ERR_STORE_UNSUPPORTED, naming its version', () => {
    for (const old of ['120017', '90624', 'garbage']) {
      expect(() => checkServerVersion(old)).toThrow(expect.objectContaining({ code: 'ROOST_ERR_STORE_UNSUPPORTED', field: 'store' }));
    }
    expect(() => checkServerVersion('120017')).toThrow(/PostgreSQL 12\.17 is older than 13/);
    for (const ok of ['130000', '150019', '170002']) expect(() => checkServerVersion(ok)).not.toThrow();
  });

  it('migrations are not bound by the statement timeout (they wait for another process holding their lock), and the pooled connection has it back after', async () => {
    const holder = new pg.Client({ connectionString: PG_URL });
    await holder.connect();
    let store: PostgresStore | null = null;
    try {
      await holder.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK.toString()]); // another process migrating
      store = new PostgresStore(schemaUrl(freshSchema('slowmig')), { statementTimeoutMs: 300 });
      let ready = false;
      const opening = store.ready().then(() => {
        ready = true;
      });
      // Four statement timeouts: the wait for the lock used to be cancelled after the first.
      await new Promise((r) => setTimeout(r, 1_200));
      expect(ready).toBe(false);
      await holder.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK.toString()]);
      await opening;
      expect(await store.getValue('x')).toBeUndefined();
      // The one connection so far is the one that migrated: its operations are bounded again.
      const pool = (store as unknown as { pool: pg.Pool }).pool; // private: the connection's own setting
      expect((await pool.query<{ statement_timeout: string }>('SHOW statement_timeout')).rows).toEqual([{ statement_timeout: '300ms' }]);
    } finally {
      await holder.end();
      await store?.close();
    }
  });

  it('an unreachable server gives ROOST_ERR_STORE_UNAVAILABLE on the first operation', async () => {
    const store = new PostgresStore('postgres://postgres@127.0.0.1:1/test?schema=nowhere');
    await expect(store.getTrace('f', 'x')).rejects.toMatchObject({ code: 'ROOST_ERR_STORE_UNAVAILABLE' });
    await store.close();
  });
});
