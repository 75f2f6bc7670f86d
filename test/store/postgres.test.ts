import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/open.js';
import { PostgresStore } from '../../src/store/postgres.js';
import { storeContract } from './contract.js';

/** The machine's server (SERVICES.md), or the user's own. */
const PG_URL = process.env['ROOST_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const run = randomBytes(4).toString('hex');
const schemas: string[] = [];
let n = 0;

/** A store in a schema of its own (roost_test_<run>_<n>), dropped after the suite. */
function fresh(): PostgresStore {
  const schema = `roost_test_${run}_${++n}`;
  schemas.push(schema);
  const url = new URL(PG_URL);
  url.searchParams.set('schema', schema);
  return new PostgresStore(url.toString());
}

beforeAll(async () => {
  const client = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 5000 });
  try {
    await client.connect();
  } catch (error) {
    throw new Error(
      `PostgreSQL at ${PG_URL} does not answer (${String(error)}). Start it with ` +
        '`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or set ROOST_TEST_PG_URL.',
    );
  } finally {
    await client.end().catch(() => {});
  }
});

afterAll(async () => {
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    for (const schema of schemas) await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
});

storeContract('postgres', fresh, async (store) => {
  await store.close();
  const url = new URL(PG_URL);
  url.searchParams.set('schema', (store as PostgresStore).schema);
  return new PostgresStore(url.toString());
});

describe('postgres journal', () => {
  it('several stores starting at once on one schema migrate it once', async () => {
    const schema = `roost_test_${run}_race`;
    schemas.push(schema);
    const url = new URL(PG_URL);
    url.searchParams.set('schema', schema);
    const stores = Array.from({ length: 4 }, () => new PostgresStore(url.toString()));
    expect(await Promise.all(stores.map((s) => s.getValue('x')))).toEqual([undefined, undefined, undefined, undefined]);
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    const { rows } = await client.query(`SELECT version FROM ${schema}.schema_migrations`);
    await client.end();
    expect(rows).toEqual([{ version: 1 }]);
    await Promise.all(stores.map((s) => s.close()));
  });

  it('is what openStore makes of a postgres:// URL; a bad schema name is refused', async () => {
    const url = new URL(PG_URL);
    url.searchParams.set('schema', `roost_test_${run}_open`);
    schemas.push(`roost_test_${run}_open`);
    const store = openStore(url.toString());
    expect(store).toBeInstanceOf(PostgresStore);
    await store.close();
    url.searchParams.set('schema', 'Robert"); DROP TABLE x; --');
    expect(() => openStore(url.toString())).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'store.schema' }));
  });

  it('an unreachable server gives ROOST_ERR_STORE_UNAVAILABLE on the first operation', async () => {
    const store = new PostgresStore('postgres://postgres@127.0.0.1:1/test?schema=nowhere');
    await expect(store.getTrace('f', 'x')).rejects.toMatchObject({ code: 'ROOST_ERR_STORE_UNAVAILABLE' });
    await store.close();
  });
});
