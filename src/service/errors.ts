/**
 * One error shape for every failed HTTP request, `{ error: { code, message, details?,
 * requestId } }`, and the status each Roost error code answers with. Fastify's own errors (a
 * body that is not JSON or too large, a schema mismatch, an unknown route) become Roost errors
 * with stable codes first, so a client matches on `error.code` alone.
 */
import { RoostError, ensureError, isRoostError, type ErrorCode } from '../errors.js';

/** The HTTP status of each code; anything else is 500. */
const STATUS: Partial<Record<ErrorCode, number>> = {
  ROOST_ERR_BAD_REQUEST: 400,
  ROOST_ERR_ENVELOPE_PARSE: 400,
  ROOST_ERR_ENVELOPE_INVALID: 400,
  ROOST_ERR_INVALID_OPTION: 400,
  ROOST_ERR_VALIDATION: 400,
  ROOST_ERR_UNSUPPORTED_VERSION: 400,
  ROOST_ERR_NOT_FOUND: 404,
  ROOST_ERR_FLOW_NOT_FOUND: 404,
  ROOST_ERR_TRACE_NOT_FOUND: 404,
  ROOST_ERR_DEAD_LETTER_NOT_FOUND: 404,
  ROOST_ERR_AGENT_NOT_FOUND: 404,
  ROOST_ERR_RESULT_EXPIRED: 410,
  ROOST_ERR_IDEMPOTENCY_CONFLICT: 409,
  ROOST_ERR_ALREADY_EXISTS: 409,
  ROOST_ERR_PAYLOAD_TOO_LARGE: 413,
  ROOST_ERR_RATE_LIMITED: 429,
  ROOST_ERR_RESOURCE_LIMIT: 429,
  ROOST_ERR_QUEUE_FULL: 429,
  ROOST_ERR_DRAINING: 503,
  ROOST_ERR_STORE_UNAVAILABLE: 503,
  ROOST_ERR_STORE_FULL: 503,
  ROOST_ERR_QUARANTINED: 503,
  ROOST_ERR_INVALID_STATE: 503,
};

/** The status `error` answers with. */
export function statusOf(error: RoostError): number {
  return STATUS[error.code] ?? 500;
}

/** Seconds a client should wait before trying again, for the statuses that tell it to. */
export function retryAfterSeconds(error: RoostError): number | null {
  const status = statusOf(error);
  if (status !== 429 && status !== 503) return null;
  const ms = error.details?.['retryAfterMs'];
  return typeof ms === 'number' && ms > 0 ? Math.max(1, Math.ceil(ms / 1000)) : 1;
}

/** The JSON body of a failed request. */
export function errorBody(error: RoostError, requestId: string): { error: Record<string, unknown> } {
  const body: Record<string, unknown> = { code: error.code, message: error.message };
  const details: Record<string, unknown> = { ...(error.details ?? {}) };
  if (error.field !== undefined) details['field'] = error.field;
  if (error.expected !== undefined) details['expected'] = error.expected;
  if (error.received !== undefined) details['received'] = error.received;
  if (Object.keys(details).length > 0) body['details'] = details;
  body['requestId'] = requestId;
  return { error: body };
}

interface FastifyLikeError extends Error {
  code?: string;
  statusCode?: number;
  validation?: { instancePath?: string; keyword?: string; message?: string; params?: Record<string, unknown> }[];
  validationContext?: string;
}

/** Any error a route or Fastify threw, as a {@link RoostError} with the right code. */
export function asRoostError(thrown: unknown): RoostError {
  if (isRoostError(thrown)) return thrown;
  const error = ensureError(thrown) as FastifyLikeError;
  if (error.validation !== undefined && error.validation.length > 0) {
    const first = error.validation[0]!;
    const place = error.validationContext ?? 'body';
    const missing = first.keyword === 'required' ? `.${paramText(first.params?.['missingProperty'])}` : '';
    const extra = first.keyword === 'additionalProperties' ? `.${paramText(first.params?.['additionalProperty'])}` : '';
    const field = `${place}${(first.instancePath ?? '').replaceAll('/', '.')}${missing}${extra}`;
    const expected = first.keyword === 'additionalProperties' ? 'absent (not a known field)' : (first.message ?? 'a valid value');
    return new RoostError('ROOST_ERR_BAD_REQUEST', `${field}: expected ${expected}`, { field, expected, cause: error });
  }
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new RoostError('ROOST_ERR_PAYLOAD_TOO_LARGE', 'the request body is over the size limit (http.body_limit_bytes)', { field: 'body', cause: error });
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new RoostError('ROOST_ERR_BAD_REQUEST', `body: expected a JSON document (${error.message})`, { field: 'body', expected: 'JSON', cause: error });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new RoostError('ROOST_ERR_BAD_REQUEST', 'header content-type: expected application/json', { field: 'header.content-type', expected: 'application/json', cause: error });
    default:
      break;
  }
  if (error instanceof SyntaxError) {
    return new RoostError('ROOST_ERR_BAD_REQUEST', `body: expected a JSON document (${error.message})`, { field: 'body', expected: 'JSON', cause: error });
  }
  if (error.statusCode === 404) return new RoostError('ROOST_ERR_NOT_FOUND', error.message, { field: 'path', cause: error });
  if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
    return new RoostError('ROOST_ERR_BAD_REQUEST', error.message, { field: 'request', cause: error });
  }
  return new RoostError('ROOST_ERR_INTERNAL', `internal error: ${error.message}`, { cause: error });
}

/** `ROOST_ERR_NOT_FOUND` for a thing of this tenant that does not exist (or is another tenant's). */
export function notFound(field: string, received: string, what: string): RoostError {
  return new RoostError('ROOST_ERR_NOT_FOUND', `no ${what} ${received}`, { field, received });
}

/** An Ajv error parameter (a property name) as text. */
function paramText(value: unknown): string {
  return typeof value === 'string' ? value : '';
}
