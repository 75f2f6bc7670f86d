/** A node's run policy: timeout, retries with backoff, concurrency, and schema validation. */
import { Ajv, type ValidateFunction } from 'ajv';
import { RoostError, describeValue, invalidOption } from '../errors.js';
import { DEFAULT_BACKOFF, type BackoffOptions, type ResolvedBackoffOptions } from '../resilience/backoff.js';
import { checkObject, optFunction, optInt, optNumber } from '../validate-options.js';

/** A JSON Schema object (draft 2020-12 as Ajv reads it). */
export type JsonSchema = Readonly<Record<string, unknown>>;

/** How a node runs its handler. Every field is optional; see `docs/reference/configuration.md`. */
export interface NodePolicy {
  /**
   * Abort the run after this many ms (default 30,000; `null` for none). The handler's
   * `AbortSignal` fires at the earlier of this and the envelope's deadline, the run's slot frees
   * then, and a result that comes later is discarded.
   */
  readonly timeoutMs?: number | null;
  /** Extra attempts after a retryable failure (default 0). */
  readonly retries?: number;
  /** Delay between attempts. */
  readonly backoff?: BackoffOptions;
  /** Runs of this node at once (default 1). */
  readonly concurrency?: number;
  /**
   * Whether a failure may be retried. Default: a `RoostError` by its `retryable`, any other error
   * unless it has `retryable: false`.
   */
  readonly retryable?: (error: Error, attempt: number) => boolean;
  /** JSON Schemas the payload must match on the way in and out (`ROOST_ERR_VALIDATION`, terminal). */
  readonly validate?: { readonly input?: JsonSchema; readonly output?: JsonSchema };
}

/** A {@link NodePolicy} with defaults filled in and schemas compiled. */
export interface ResolvedNodePolicy {
  readonly timeoutMs: number | null;
  readonly retries: number;
  readonly backoff: ResolvedBackoffOptions;
  readonly concurrency: number;
  readonly retryable: (error: Error, attempt: number) => boolean;
  readonly validateInput: ValidateFunction | null;
  readonly validateOutput: ValidateFunction | null;
}

/** Default node timeout: 30 s. Time-bound everything; pass `timeoutMs: null` to opt out. */
export const DEFAULT_TIMEOUT_MS = 30_000;

const MAX_TIMEOUT_MS = 2_147_483_647; // the longest delay setTimeout honours

const ajv = new Ajv({ allErrors: false, strict: false });

/** The default retry rule; see {@link NodePolicy.retryable}. */
export function defaultRetryable(error: Error): boolean {
  return (error as { retryable?: unknown }).retryable !== false;
}

function compileSchema(field: string, schema: unknown): ValidateFunction | null {
  if (schema === undefined) return null;
  if (typeof schema !== 'object' || schema === null) throw invalidOption(field, 'a JSON Schema object', schema);
  try {
    return ajv.compile(schema);
  } catch (error) {
    throw new RoostError('ROOST_ERR_INVALID_OPTION', `Expected \`${field}\` to be a valid JSON Schema: ${(error as Error).message}`, {
      field,
      expected: 'a valid JSON Schema',
      cause: error,
    });
  }
}

/** Validates a policy (and an override on top of it) and fills in the defaults. */
export function resolvePolicy(field: string, policy: unknown, base?: NodePolicy): ResolvedNodePolicy {
  const allowed = ['timeoutMs', 'retries', 'backoff', 'concurrency', 'retryable', 'validate'];
  const merged: Record<string, unknown> = { ...checkObject(`${field}`, base, allowed), ...checkObject(field, policy, allowed) };
  let timeoutMs: number | null = DEFAULT_TIMEOUT_MS;
  if (merged['timeoutMs'] === null) timeoutMs = null;
  else timeoutMs = optInt(field, merged, 'timeoutMs', 1, MAX_TIMEOUT_MS, DEFAULT_TIMEOUT_MS);
  const backoffIn = checkObject(`${field}.backoff`, merged['backoff'], ['baseMs', 'multiplier', 'maxMs', 'jitter']);
  const backoff: ResolvedBackoffOptions = Object.freeze({
    baseMs: optInt(`${field}.backoff`, backoffIn, 'baseMs', 0, MAX_TIMEOUT_MS, DEFAULT_BACKOFF.baseMs),
    multiplier: optNumber(`${field}.backoff`, backoffIn, 'multiplier', 1, 100, DEFAULT_BACKOFF.multiplier),
    maxMs: optInt(`${field}.backoff`, backoffIn, 'maxMs', 0, MAX_TIMEOUT_MS, DEFAULT_BACKOFF.maxMs),
    jitter: optNumber(`${field}.backoff`, backoffIn, 'jitter', 0, 1, DEFAULT_BACKOFF.jitter),
  });
  const validate = checkObject(`${field}.validate`, merged['validate'], ['input', 'output']);
  return Object.freeze({
    timeoutMs,
    retries: optInt(field, merged, 'retries', 0, 100, 0),
    backoff,
    concurrency: optInt(field, merged, 'concurrency', 1, 100_000, 1),
    retryable: optFunction<ResolvedNodePolicy['retryable']>(field, merged, 'retryable') ?? defaultRetryable,
    validateInput: compileSchema(`${field}.validate.input`, validate['input']),
    validateOutput: compileSchema(`${field}.validate.output`, validate['output']),
  });
}

/** Checks `value` against a compiled schema; throws terminal `ROOST_ERR_VALIDATION` naming the path. */
export function checkSchema(validate: ValidateFunction, value: unknown, where: string): void {
  if (validate(value)) return;
  const error = validate.errors?.[0];
  const at = error ? `${where}${error.instancePath.replaceAll('/', '.')}` : where;
  throw new RoostError('ROOST_ERR_VALIDATION', `${at}: ${error?.message ?? 'does not match the schema'}, got ${describeValue(value)}`, {
    field: at,
    expected: error?.message ?? 'a value matching the schema',
    received: describeValue(value),
  });
}
