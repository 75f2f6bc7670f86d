/**
 * The journal commands of `roost`: they open the store a URL names (`--store`, else the
 * configuration's `store.url`: `ROOST_STORE_URL`, else `roost.toml`, else the default
 * `sqlite:.roost/roost.db`) and read or mark it. A replay is
 * a request in the store: the runtime that hosts the letter's flow carries it out.
 *
 *   roost trace <trace-id>                  the trace's journaled history as a timeline
 *   roost dlq list [--flow F] [--limit N]   dead letters, newest first
 *   roost dlq show <id>                     one dead letter, as JSON
 *   roost dlq replay <id> | roost replay <id>   ask the runtime of its flow to replay it
 *   roost dlq delete <id>                   remove it
 *   roost backup <file>                     an online copy of an SQLite journal
 *   roost prune [--older-than DURATION]     delete finished traces older than that (default 7d)
 */
import { isRoostError } from '../errors.js';
import { withLifecycle } from '../store/history.js';
import { DEFAULT_STORE_URL, openStore } from '../store/open.js';
import { addRequest } from '../store/requests.js';
import { PostgresStore } from '../store/postgres.js';
import { SqliteStore } from '../store/sqlite.js';
import type { Store } from '../store/store.js';

/** A usage error: printed with the usage, exit code 2. */
export class UsageError extends Error {}

export interface Io {
  out(line: string): void;
}

/** Milliseconds of "90s", "15m", "12h", "7d" or a plain number of ms. */
export function parseDuration(text: string): number {
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(text.trim());
  if (m === null) throw new UsageError(`--older-than: expected a duration like 90s, 15m, 12h or 7d, got ${text}`);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 'ms') as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Number(m[1]) * unit;
}

function open(url: string | undefined): Store {
  const env = process.env['ROOST_STORE_URL'];
  const target = url ?? (env === undefined || env === '' ? DEFAULT_STORE_URL : env); // an empty variable is unset
  try {
    return openStore(target, {}, '--store');
  } catch (error) {
    if (isRoostError(error, 'ROOST_ERR_INVALID_OPTION')) throw new UsageError(`--store: expected memory:, sqlite:<path> or postgres://…, got ${target}`);
    throw error;
  }
}

function need(value: string | undefined, what: string): string {
  if (value === undefined || value === '') throw new UsageError(`missing ${what}`);
  return value;
}

/** Runs one journal command; returns its exit code (0 done, 1 not found). */
export async function journalCommand(
  command: string,
  args: readonly string[],
  options: { store?: string; flow?: string; limit?: string; olderThan?: string },
  io: Io,
): Promise<number> {
  const limit = options.limit === undefined ? undefined : Number(options.limit);
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1 || limit > 1000)) throw new UsageError(`--limit: expected an integer from 1 to 1000, got ${options.limit}`);
  const olderThan = parseDuration(options.olderThan ?? '7d');
  if (command === 'dlq' && !['list', 'show', 'replay', 'delete'].includes(args[0] ?? '')) {
    throw new UsageError(`dlq: expected list, show, replay or delete, got ${args[0] ?? 'nothing'}`);
  }
  // Arguments are checked before the store is opened: bad usage touches no journal.
  const required: Record<string, [number, string] | undefined> = {
    trace: [0, 'the trace id'],
    replay: [0, 'the dead letter id'],
    backup: [0, 'the backup file'],
    dlq: args[0] === 'list' ? undefined : [1, 'the dead letter id'],
  };
  const need1 = required[command];
  if (need1 !== undefined) need(args[need1[0]], need1[1]);
  const store = open(options.store);
  try {
    switch (command) {
      case 'trace':
        return await trace(store, need(args[0], 'the trace id'), io);
      case 'replay':
        return await replay(store, need(args[0], 'the dead letter id'), io);
      case 'backup': {
        const file = need(args[0], 'the backup file');
        if (store instanceof PostgresStore) {
          // pg_dump is the tool for a server's data (consistent, online); Roost does not wrap it.
          io.out('this journal is on PostgreSQL: back it up with pg_dump (put the password in PGPASSWORD or ~/.pgpass):');
          io.out(`  pg_dump --schema=${store.schema} --format=custom --file=${file} '${store.displayUrl}'`);
          return 0;
        }
        if (!(store instanceof SqliteStore)) {
          io.out('this journal is in memory: there is nothing to back up');
          return 1;
        }
        await store.backup(file);
        io.out(`backed up ${store.path} to ${file}`);
        return 0;
      }
      case 'prune': {
        const n = await store.prune(Date.now() - olderThan);
        io.out(`pruned ${n} finished trace(s) older than ${options.olderThan ?? '7d'}`);
        return 0;
      }
      case 'dlq': {
        const sub = args[0]!;
        if (sub === 'list') {
          const letters = await store.listDeadLetters({ ...(options.flow === undefined ? {} : { flow: options.flow }), ...(limit === undefined ? {} : { limit }) });
          for (const d of letters) {
            io.out(`${d.id}  ${new Date(d.createdAt).toISOString()}  ${d.flow}/${d.node}  trace ${d.traceId}  attempts ${d.attempts}  ${d.error.code}: ${d.error.message}`);
          }
          if (letters.length === 0) io.out('no dead letters');
          return 0;
        }
        const id = need(args[1], 'the dead letter id');
        const letter = await store.getDeadLetter(id);
        if (letter === null) {
          io.out(`no dead letter ${id}`);
          return 1;
        }
        if (sub === 'show') io.out(JSON.stringify(letter, null, 2));
        else if (sub === 'replay') return await replay(store, id, io);
        else {
          // Gone from the journal now; a running runtime that holds it in memory drops it too.
          await store.commit({ deadLettersRemoved: [id] });
          await addRequest(store, 'delete', id);
          io.out(`deleted dead letter ${id}`);
        }
        return 0;
      }
      default:
        throw new UsageError(`unknown command: ${command}`);
    }
  } finally {
    await store.close();
  }
}

async function replay(store: Store, id: string, io: Io): Promise<number> {
  const letter = await store.getDeadLetter(id);
  if (letter === null) {
    io.out(`no dead letter ${id}`);
    return 1;
  }
  await addRequest(store, 'replay', id);
  io.out(`replay of ${id} requested: the runtime that hosts flow ${letter.flow} replays it at node ${letter.node} (within a second if it runs, else when it starts)`);
  return 0;
}

async function trace(store: Store, traceId: string, io: Io): Promise<number> {
  const [t, stored] = await Promise.all([store.findTrace(traceId), store.history(traceId)]);
  const events = withLifecycle(t, stored);
  if (events.length === 0) {
    io.out(`no journaled history for trace ${traceId}`);
    return 1;
  }
  const flow = t?.flow ?? events.map((e) => e.event['flow']).find((f): f is string => typeof f === 'string');
  const start = events[0]!.ts;
  io.out(`trace ${traceId}${flow === undefined ? '' : ` in flow ${flow}`}${t === null ? '' : `: ${t.status}, tenant ${t.tenant}`}`);
  for (const e of events) {
    const ev = e.event;
    const node = typeof ev['node'] === 'string' ? ` ${ev['node']}` : '';
    const attempt = typeof ev['attempt'] === 'number' ? ` attempt ${ev['attempt']}` : '';
    const err = ev['error'] as { code?: string; message?: string } | null | undefined;
    const error = err?.code === undefined ? '' : `  ${err.code}: ${err.message ?? ''}`;
    io.out(`+${String(e.ts - start).padStart(6)} ms  ${e.type}${node}${attempt}${error}`);
  }
  if (t !== null && t.status === 'succeeded') io.out(`result: ${JSON.stringify(t.result)}`);
  if (t !== null && t.error !== null) io.out(`error: ${t.error.code}: ${t.error.message}`);
  return 0;
}
