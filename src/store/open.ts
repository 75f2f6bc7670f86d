/**
 * Picks a store by URL, the same everywhere (option, `--store`, `ROOST_STORE_URL`):
 * `memory:` (`memory:?max_finished_traces=N`), `sqlite:<path>` (the default, `sqlite:.roost/roost.db`), `postgres://…[?schema=name]`.
 */
import { resolve } from 'node:path';
import { invalidOption } from '../errors.js';
import { MemoryStore } from './memory.js';
import { PostgresStore, type PostgresStoreOptions } from './postgres.js';
import { SqliteStore, type SqliteStoreOptions } from './sqlite.js';
import type { Store } from './store.js';

/** The default journal: an SQLite file under `./.roost/`. */
export const DEFAULT_STORE_URL = 'sqlite:.roost/roost.db';

/** Options for the store a URL names. */
export interface OpenStoreOptions {
  readonly sqlite?: SqliteStoreOptions;
  readonly postgres?: PostgresStoreOptions;
}

/** Opens the store `url` names, or throws `ROOST_ERR_INVALID_OPTION` naming `field`. */
export function openStore(url: string, options: OpenStoreOptions = {}, field = 'store'): Store {
  if (typeof url !== 'string') throw invalidOption(field, 'a store URL (memory:, sqlite:<path>, postgres://…)', url);
  if (url === 'memory:') return new MemoryStore();
  if (url.startsWith('memory:')) {
    const m = /^memory:\?max_finished_traces=([1-9][0-9]{0,9})$/.exec(url);
    if (m === null) throw invalidOption(field, 'memory:, or memory:?max_finished_traces=<integer from 1>', url);
    return new MemoryStore({ maxFinishedTraces: Number(m[1]) });
  }
  if (url.startsWith('sqlite:')) {
    const path = url.slice('sqlite:'.length);
    if (path === '') throw invalidOption(field, 'sqlite:<path>, with a path', url);
    return new SqliteStore(path === ':memory:' ? path : resolve(path), options.sqlite);
  }
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) return new PostgresStore(url, options.postgres);
  throw invalidOption(field, 'a store URL: memory:, sqlite:<path> or postgres://…', url);
}
