/** Page cursors and limits shared by the store implementations. */
import { invalidOption } from '../errors.js';

const MAX_PAGE = 1000;

/** The page size: `limit` checked, or 100. */
export function pageLimit(limit: number | undefined): number {
  if (limit === undefined) return 100;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) throw invalidOption('query.limit', `an integer from 1 to ${MAX_PAGE}`, limit);
  return limit;
}

/** An opaque cursor for "after (traceId, flow)" in newest-first order. */
export function encodeCursor(traceId: string, flow: string): string {
  return Buffer.from(JSON.stringify([traceId, flow]), 'utf8').toString('base64url');
}

/** Reads a cursor made by {@link encodeCursor}, or throws `ROOST_ERR_INVALID_OPTION`. */
export function decodeCursor(cursor: string): { traceId: string; flow: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    parsed = null;
  }
  if (!Array.isArray(parsed) || parsed.length !== 2 || typeof parsed[0] !== 'string' || typeof parsed[1] !== 'string') {
    throw invalidOption('query.cursor', 'a cursor from a previous page', cursor);
  }
  return { traceId: parsed[0], flow: parsed[1] };
}
