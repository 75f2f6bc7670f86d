/**
 * Checks the caller's part of a new envelope at ingress: `emit` options. Every other field of an
 * ingress envelope is made by Roost and valid by construction, so running the whole-envelope
 * validator here would check only Roost's own work (it cost a tenth of the flow benchmark); the
 * codec still validates whole envelopes that arrive from outside.
 */
import { isName } from '../envelope/names.js';
import { isUuidV7 } from '../envelope/uuid.js';
import { RoostError, describeValue } from '../errors.js';

const MAX_EPOCH_MS = 8.64e15;
const KEYS = new Set(['traceId', 'tenant', 'deadline', 'headers', 'idempotencyKey', 'idempotencyFingerprint', 'signal']);

function bad(key: string, expected: string, value: unknown): RoostError {
  const received = describeValue(value);
  return new RoostError('ROOST_ERR_ENVELOPE_INVALID', `emit.options.${key}: expected ${expected}, got ${received}`, {
    field: `emit.options.${key}`,
    expected,
    received,
  });
}

let lastTenant = '';

/** Throws a coded error naming the first bad option; unknown options are `ROOST_ERR_INVALID_OPTION`. */
export function checkEmitOptions(options: Record<string, unknown>): void {
  for (const key in options) {
    if (!KEYS.has(key)) {
      throw new RoostError('ROOST_ERR_INVALID_OPTION', `Expected \`emit.options.${key}\` to be absent (unknown option), got ${describeValue(options[key])}`, {
        field: `emit.options.${key}`,
        expected: `absent (known: ${[...KEYS].join(', ')})`,
      });
    }
  }
  const tenant = options['tenant'];
  // Most callers send the same few tenants: skip the pattern test for the last good one.
  if (tenant !== undefined && tenant !== lastTenant) {
    if (!isName(tenant)) throw bad('tenant', 'a name matching [A-Za-z0-9._-]{1,64}', tenant);
    lastTenant = tenant;
  }
  const traceId = options['traceId'];
  if (traceId !== undefined && !isUuidV7(traceId)) throw bad('traceId', 'a lower-case UUIDv7 string', traceId);
  const deadline = options['deadline'];
  if (deadline !== undefined && (typeof deadline !== 'number' || !Number.isInteger(deadline) || deadline < 0 || deadline > MAX_EPOCH_MS)) {
    throw bad('deadline', 'an integer epoch-millisecond time', deadline);
  }
  const key = options['idempotencyKey'];
  if (key !== undefined && (typeof key !== 'string' || key.length < 1 || key.length > 256)) {
    throw bad('idempotencyKey', 'a string of 1 to 256 characters', key);
  }
  const fingerprint = options['idempotencyFingerprint'];
  if (fingerprint !== undefined && (typeof fingerprint !== 'string' || fingerprint.length < 1 || fingerprint.length > 128 || fingerprint.includes('\u0000'))) {
    throw bad('idempotencyFingerprint', 'a string of 1 to 128 characters without NUL', fingerprint);
  }
  const headers = options['headers'];
  if (headers !== undefined) checkHeaders(headers);
  const signal = options['signal'];
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new RoostError('ROOST_ERR_INVALID_OPTION', `Expected \`emit.options.signal\` to be an AbortSignal, got ${describeValue(signal)}`, {
      field: 'emit.options.signal',
      expected: 'an AbortSignal',
      received: describeValue(signal),
    });
  }
  if (signal !== undefined && (signal).aborted) {
    throw new RoostError('ROOST_ERR_TRACE_CANCELLED', 'emit: its signal was aborted before the task was accepted', {
      field: 'emit.options.signal',
      expected: 'a signal not yet aborted',
    });
  }
}

function checkHeaders(headers: unknown): void {
  const expected = 'an object of at most 64 string values (keys up to 128, values up to 8192 characters)';
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) throw bad('headers', expected, headers);
  let n = 0;
  for (const [k, v] of Object.entries(headers)) {
    if (++n > 64 || k.length > 128 || typeof v !== 'string' || v.length > 8192) throw bad(`headers.${k}`, expected, v);
  }
}
