/**
 * The machine's PostgreSQL for tests (SERVICES.md): its URL (ROOST_TEST_PG_URL overrides), a
 * fresh schema per use, and the clean-up that drops every schema handed out.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';

export const PG_URL = process.env['ROOST_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';

const run = randomBytes(4).toString('hex');
const schemas: string[] = [];
let n = 0;

/** A new schema name (roost_test_<prefix>_<run>_<n>), dropped by {@link dropSchemas}. */
export function freshSchema(prefix: string): string {
  const schema = `roost_test_${prefix}_${run}_${++n}`;
  schemas.push(schema);
  return schema;
}

/** The server's URL with `?schema=` set (and optionally another port, for a proxy). */
export function schemaUrl(schema: string, port?: number): string {
  const url = new URL(PG_URL);
  if (port !== undefined) url.port = String(port);
  url.searchParams.set('schema', schema);
  return url.toString();
}

/** A store URL in a fresh schema. */
export function freshPgUrl(prefix: string): string {
  return schemaUrl(freshSchema(prefix));
}

/** Fails, saying how to start it, when the server does not answer. */
export async function assertPgReachable(): Promise<void> {
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
}

/** Drops every schema {@link freshSchema} handed out in this test file. */
export async function dropSchemas(): Promise<void> {
  if (schemas.length === 0) return;
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    for (const schema of schemas.splice(0)) await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}
