/**
 * The envelope's JSON Schema and its compiled validator (Ajv). The schema is also the wire
 * format's reference (`docs/reference/wire-formats.md`).
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { RoostError, describeValue } from '../errors.js';
import { ADDRESS_PATTERN, NAME_PATTERN } from './names.js';
import { UUIDV7_PATTERN } from './uuid.js';
import { ENVELOPE_KINDS, type Envelope } from './envelope.js';

const MAX_EPOCH_MS = 8.64e15; // the largest time a JavaScript Date can hold

/** JSON Schema (draft 2020-12 subset) of an envelope as it is on the wire. */
export const ENVELOPE_SCHEMA = {
  $id: 'https://roost.dev/schemas/envelope-v1.json',
  type: 'object',
  additionalProperties: false,
  required: ['v', 'id', 'traceId', 'tenant', 'from', 'to', 'kind', 'payload', 'createdAt', 'attempt'],
  properties: {
    v: { const: 1 },
    id: { type: 'string', pattern: UUIDV7_PATTERN },
    traceId: { type: 'string', pattern: UUIDV7_PATTERN },
    parentId: { type: ['string', 'null'], pattern: UUIDV7_PATTERN },
    tenant: { type: 'string', pattern: NAME_PATTERN },
    from: { type: 'string', pattern: NAME_PATTERN },
    to: { type: 'string', pattern: ADDRESS_PATTERN },
    kind: { enum: ENVELOPE_KINDS },
    payload: {},
    headers: {
      type: 'object',
      maxProperties: 64,
      propertyNames: { maxLength: 128 },
      additionalProperties: { type: 'string', maxLength: 8192 },
    },
    deadline: { type: ['integer', 'null'], minimum: 0, maximum: MAX_EPOCH_MS },
    createdAt: { type: 'integer', minimum: 0, maximum: MAX_EPOCH_MS },
    attempt: { type: 'integer', minimum: 1, maximum: 1_000_000 },
    idempotencyKey: { type: ['string', 'null'], minLength: 1, maxLength: 256 },
  },
} as const;

/** What each field must be, in words, for error messages. */
const EXPECTED: Record<string, string> = {
  v: 'the integer 1',
  id: 'a lower-case UUIDv7 string',
  traceId: 'a lower-case UUIDv7 string',
  parentId: 'a lower-case UUIDv7 string or null',
  tenant: 'a name matching [A-Za-z0-9._-]{1,64}',
  from: 'a name matching [A-Za-z0-9._-]{1,64}',
  to: 'a name or a /-separated topic of names (at most 256 characters)',
  kind: `one of ${ENVELOPE_KINDS.join(', ')}`,
  payload: 'a JSON value',
  headers: 'an object of at most 64 string values (keys up to 128, values up to 8192 characters)',
  deadline: 'an integer epoch-millisecond time or null',
  createdAt: 'an integer epoch-millisecond time',
  attempt: 'an integer from 1 to 1000000',
  idempotencyKey: 'a string of 1 to 256 characters or null',
};

const ajv = new Ajv({ allErrors: false, strict: true, allowUnionTypes: true });
const compiled: ValidateFunction = ajv.compile(ENVELOPE_SCHEMA);

function fieldOf(error: ErrorObject): string {
  if (error.keyword === 'required') return String((error.params as { missingProperty: string }).missingProperty);
  if (error.keyword === 'additionalProperties' && error.instancePath === '') {
    return String((error.params as { additionalProperty: string }).additionalProperty);
  }
  const path = error.instancePath.split('/').filter(Boolean);
  return path[0] ?? '';
}

function valueAt(input: Record<string, unknown>, field: string): unknown {
  return Object.prototype.hasOwnProperty.call(input, field) ? input[field] : undefined;
}

/**
 * Checks `input` against the envelope schema and returns it typed, with absent optional fields
 * set to `null` (and `headers` to `{}`). Throws `ROOST_ERR_UNSUPPORTED_VERSION` for another major
 * version, else `ROOST_ERR_ENVELOPE_INVALID` naming the first bad field.
 */
export function validateEnvelope(input: unknown): Envelope {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new RoostError('ROOST_ERR_ENVELOPE_INVALID', `envelope: expected a JSON object, got ${describeValue(input)}`, {
      field: 'envelope',
      expected: 'a JSON object',
      received: describeValue(input),
    });
  }
  const record = input as Record<string, unknown>;
  const v = record['v'];
  if (typeof v === 'number' && Number.isInteger(v) && v !== 1) {
    throw new RoostError('ROOST_ERR_UNSUPPORTED_VERSION', `envelope.v: major version ${v} is not supported (this build reads 1)`, {
      field: 'envelope.v',
      expected: 'the integer 1',
      received: describeValue(v),
    });
  }
  if (!compiled(input)) {
    const error = compiled.errors?.[0];
    const field = error ? fieldOf(error) : '';
    if (error?.keyword === 'additionalProperties' && error.instancePath === '') {
      throw new RoostError('ROOST_ERR_ENVELOPE_INVALID', `envelope.${field}: unknown field`, {
        field: `envelope.${field}`,
        expected: 'no field outside the envelope schema',
      });
    }
    const expected = EXPECTED[field] ?? 'a value matching the envelope schema';
    const received = error?.keyword === 'required' ? 'nothing' : describeValue(valueAt(record, field));
    throw new RoostError('ROOST_ERR_ENVELOPE_INVALID', `envelope.${field}: expected ${expected}, got ${received}`, {
      field: `envelope.${field}`,
      expected,
      received,
    });
  }
  if (
    record['parentId'] === undefined ||
    record['headers'] === undefined ||
    record['deadline'] === undefined ||
    record['idempotencyKey'] === undefined
  ) {
    return {
      v: 1,
      id: record['id'] as string,
      traceId: record['traceId'] as string,
      parentId: (record['parentId'] as string | null | undefined) ?? null,
      tenant: record['tenant'] as string,
      from: record['from'] as string,
      to: record['to'] as string,
      kind: record['kind'] as Envelope['kind'],
      payload: record['payload'],
      headers: (record['headers'] as Record<string, string> | undefined) ?? {},
      deadline: (record['deadline'] as number | null | undefined) ?? null,
      createdAt: record['createdAt'] as number,
      attempt: record['attempt'] as number,
      idempotencyKey: (record['idempotencyKey'] as string | null | undefined) ?? null,
    };
  }
  return input as Envelope;
}
