#!/usr/bin/env node
/**
 * The `roost` command: envelope checks and the journal commands (src/cli/journal.ts); `serve`,
 * `worker`, `submit` and the rest come with the service issue.
 *
 *   roost version
 *   roost validate [file|-] [--max-bytes N]   one envelope per line (or one JSON document)
 *   roost trace|replay|dlq|backup|prune …     see journal.ts (--store URL)
 *
 * Exit codes: 0 done (all valid), 1 some invalid or not found, 2 bad usage.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { decodeEnvelope } from '../envelope/codec.js';
import { ensureError, isRoostError } from '../errors.js';
import { UsageError, journalCommand } from './journal.js';

const USAGE = `usage: roost <command>

commands:
  version                          print the version
  validate [file|-] [--max-bytes N] check envelopes (one JSON per line, or one document)
  trace <trace-id>                 a trace's journaled history as a timeline
  dlq list [--flow F] [--limit N]  dead letters, newest first
  dlq show|replay|delete <id>      one dead letter: print it, have its runtime replay it, remove it
  replay <dead-letter-id>          the same as dlq replay
  backup <file>                    an online copy of an SQLite journal (PostgreSQL: prints the pg_dump to run)
  prune [--older-than 7d]          delete finished traces older than that

journal commands take --store URL (default: $ROOST_STORE_URL, else sqlite:.roost/roost.db)
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Checks each envelope of `text`; returns the lines to print and whether all were valid. */
export function validateText(text: string, maxBytes?: number): { lines: string[]; ok: boolean } {
  const trimmed = text.trim();
  const docs = trimmed.startsWith('{') && !trimmed.includes('\n{') ? [trimmed] : trimmed.split('\n').filter((l) => l.trim() !== '');
  const lines: string[] = [];
  let ok = true;
  for (const [i, doc] of docs.entries()) {
    try {
      const env = decodeEnvelope(doc, maxBytes === undefined ? {} : { maxBytes });
      lines.push(`${i + 1}: ok ${env.kind} ${env.id} trace ${env.traceId} ${env.from} -> ${env.to}`);
    } catch (error) {
      ok = false;
      lines.push(isRoostError(error) ? `${i + 1}: ${error.code} ${error.message}` : `${i + 1}: ${ensureError(error).message}`);
    }
  }
  return { lines, ok };
}

const JOURNAL_COMMANDS = new Set(['trace', 'replay', 'dlq', 'backup', 'prune']);

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'max-bytes': { type: 'string' },
        store: { type: 'string' },
        flow: { type: 'string' },
        limit: { type: 'string' },
        'older-than': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    process.stderr.write(`${ensureError(error).message}\n${USAGE}`);
    return 2;
  }
  const [command, ...rest] = parsed.positionals;
  if (parsed.values.help || command === undefined) {
    process.stdout.write(USAGE);
    return command === undefined && !parsed.values.help ? 2 : 0;
  }
  if (command === 'version') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  if (command === 'validate') {
    const source = rest[0] ?? '-';
    const rawMax = parsed.values['max-bytes'];
    const maxBytes = rawMax === undefined ? undefined : Number(rawMax);
    if (maxBytes !== undefined && (!Number.isInteger(maxBytes) || maxBytes < 1)) {
      process.stderr.write(`--max-bytes: expected an integer from 1 and up, got ${rawMax}\n`);
      return 2;
    }
    let text: string;
    try {
      text = readFileSync(source === '-' ? 0 : source, 'utf8');
    } catch (error) {
      process.stderr.write(`cannot read ${source}: ${ensureError(error).message}\n`);
      return 2;
    }
    const { lines, ok } = validateText(text, maxBytes);
    process.stdout.write(lines.join('\n') + (lines.length > 0 ? '\n' : ''));
    return ok ? 0 : 1;
  }
  if (JOURNAL_COMMANDS.has(command)) {
    const v = parsed.values;
    try {
      return await journalCommand(
        command,
        rest,
        {
          ...(v.store === undefined ? {} : { store: v.store }),
          ...(v.flow === undefined ? {} : { flow: v.flow }),
          ...(v.limit === undefined ? {} : { limit: v.limit }),
          ...(v['older-than'] === undefined ? {} : { olderThan: v['older-than'] }),
        },
        { out: (line) => process.stdout.write(`${line}\n`) },
      );
    } catch (error) {
      if (error instanceof UsageError) {
        process.stderr.write(`${error.message}\n${USAGE}`);
        return 2;
      }
      const e = ensureError(error);
      process.stderr.write(`${isRoostError(e) ? `${e.code}: ` : ''}${e.message}\n`);
      return 1;
    }
  }
  process.stderr.write(`unknown command: ${command}\n${USAGE}`);
  return 2;
}

process.exitCode = await main(process.argv.slice(2));
