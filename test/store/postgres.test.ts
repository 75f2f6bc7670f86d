import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/open.js';
import { PostgresStore } from '../../src/store/postgres.js';
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
    const { rows } = await client.query(`SELECT version FROM ${schema}.schema_migrations`);
    await client.end();
    expect(rows).toEqual([{ version: 1 }]);
    await Promise.all(stores.map((s) => s.close()));
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

  it('an unreachable server gives ROOST_ERR_STORE_UNAVAILABLE on the first operation', async () => {
    const store = new PostgresStore('postgres://postgres@127.0.0.1:1/test?schema=nowhere');
    await expect(store.getTrace('f', 'x')).rejects.toMatchObject({ code: 'ROOST_ERR_STORE_UNAVAILABLE' });
    await store.close();
  });
});
