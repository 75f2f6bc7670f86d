/**
 * The one error type Roost throws, with a stable string code per failure.
 *
 * Every code is listed in `docs/reference/errors.md`; `test/unit/errors-doc.test.ts` fails when
 * this table and that page disagree.
 */

/** Every error code Roost can produce, with whether a retry can help by default. */
export const ERROR_CODES = {
  ROOST_ERR_ENVELOPE_PARSE: { retryable: false },
  ROOST_ERR_ENVELOPE_INVALID: { retryable: false },
  ROOST_ERR_UNSUPPORTED_VERSION: { retryable: false },
  ROOST_ERR_PAYLOAD_TOO_LARGE: { retryable: false },
  ROOST_ERR_INVALID_OPTION: { retryable: false },
  ROOST_ERR_INVALID_STATE: { retryable: false },
  ROOST_ERR_ALREADY_EXISTS: { retryable: false },
  ROOST_ERR_AGENT_NOT_FOUND: { retryable: false },
  ROOST_ERR_FLOW_INVALID: { retryable: false },
  ROOST_ERR_FLOW_NOT_FOUND: { retryable: false },
  ROOST_ERR_QUEUE_FULL: { retryable: true },
  ROOST_ERR_RESOURCE_LIMIT: { retryable: true },
  ROOST_ERR_QUARANTINED: { retryable: true },
  ROOST_ERR_HOP_BUDGET: { retryable: false },
  ROOST_ERR_DEADLINE_EXCEEDED: { retryable: false },
  ROOST_ERR_NODE_TIMEOUT: { retryable: true },
  ROOST_ERR_NODE_FAILED: { retryable: false },
  ROOST_ERR_VALIDATION: { retryable: false },
  ROOST_ERR_NO_ROUTE: { retryable: false },
  ROOST_ERR_JOIN_TIMEOUT: { retryable: false },
  ROOST_ERR_TRACE_CANCELLED: { retryable: false },
  ROOST_ERR_TRACE_NOT_FOUND: { retryable: false },
  ROOST_ERR_RESULT_EXPIRED: { retryable: false },
  ROOST_ERR_DEAD_LETTER_NOT_FOUND: { retryable: false },
  ROOST_ERR_STORE_UNAVAILABLE: { retryable: true },
  ROOST_ERR_STORE_UNSUPPORTED: { retryable: false },
  ROOST_ERR_STORE_FULL: { retryable: true },
  ROOST_ERR_IDEMPOTENCY_CONFLICT: { retryable: false },
  ROOST_ERR_FENCED: { retryable: false },
  ROOST_ERR_TRANSPORT_UNAVAILABLE: { retryable: true },
  ROOST_ERR_TRANSPORT_CLOSED: { retryable: false },
  ROOST_ERR_PUBLISH_REFUSED: { retryable: false },
  ROOST_ERR_REQUEST_TIMEOUT: { retryable: true },
  ROOST_ERR_NO_RESPONDERS: { retryable: true },
  ROOST_ERR_CONFIG_INVALID: { retryable: false },
  ROOST_ERR_APP_INVALID: { retryable: false },
  ROOST_ERR_BAD_REQUEST: { retryable: false },
  ROOST_ERR_NOT_FOUND: { retryable: false },
  ROOST_ERR_RATE_LIMITED: { retryable: true },
  ROOST_ERR_DRAINING: { retryable: true },
  ROOST_ERR_INTERNAL: { retryable: false },
} as const satisfies Record<string, { retryable: boolean }>;

/** A stable Roost error code, such as `ROOST_ERR_QUEUE_FULL`. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** Extra, read-only context a {@link RoostError} can carry. */
export interface RoostErrorOptions extends ErrorOptions {
  /** The field or option at fault, as a path (`envelope.tenant`, `policy.timeoutMs`). */
  readonly field?: string;
  /** What was expected there, in words. */
  readonly expected?: string;
  /** What was received, already rendered for a message (truncated). */
  readonly received?: string;
  /** Override the code's default retryability. */
  readonly retryable?: boolean;
  /** Free-form structured context (node, trace id, limit, …). */
  readonly details?: Readonly<Record<string, unknown>>;
}

const BRAND = Symbol.for('roost.error');

/** The base error of Roost: a stable `code`, the field at fault, and whether a retry can help. */
export class RoostError extends Error {
  override readonly name = 'RoostError';
  readonly code: ErrorCode;
  readonly field: string | undefined;
  readonly expected: string | undefined;
  readonly received: string | undefined;
  readonly retryable: boolean;
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message: string, options: RoostErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.field = options.field;
    this.expected = options.expected;
    this.received = options.received;
    this.retryable = options.retryable ?? ERROR_CODES[code].retryable;
    this.details = options.details;
    Object.defineProperty(this, BRAND, { value: true });
  }

  /** A plain JSON view, safe to log or send: no stack, no cause chain. */
  toJSON(): { code: ErrorCode; message: string; field?: string; retryable: boolean } {
    const out: { code: ErrorCode; message: string; field?: string; retryable: boolean } = {
      code: this.code,
      message: this.message,
      retryable: this.retryable,
    };
    if (this.field !== undefined) out.field = this.field;
    return out;
  }
}

/**
 * True when `value` is a {@link RoostError}, even one made by another copy of this library
 * (a brand symbol from the global registry, not `instanceof`).
 */
export function isRoostError(value: unknown, code?: ErrorCode): value is RoostError {
  if (typeof value !== 'object' || value === null) return false;
  if ((value as Record<symbol, unknown>)[BRAND] !== true) return false;
  return code === undefined || (value as RoostError).code === code;
}

/** Turns anything thrown into an `Error` (a thrown string or object becomes its message). */
export function ensureError(value: unknown): Error {
  if (value instanceof Error) return value;
  if (typeof value === 'string') return new Error(value);
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Object.prototype.toString.call(value);
  }
  return new Error(`non-error thrown: ${text}`);
}

/** Renders a value for an error message: short, never throwing. */
export function describeValue(value: unknown): string {
  let text: string;
  if (typeof value === 'string') text = JSON.stringify(value);
  else if (typeof value === 'bigint') text = `${value}n`;
  else if (typeof value === 'function') text = 'a function';
  else if (value === undefined) text = 'undefined';
  else {
    try {
      text = JSON.stringify(value) ?? Object.prototype.toString.call(value);
    } catch {
      text = Object.prototype.toString.call(value);
    }
  }
  if (text.length > 80) text = `${text.slice(0, 77)}...`;
  const kind = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
  return `${text} (${kind})`;
}

/** Builds the error for a bad option: names the option, the expectation and what came. */
export function invalidOption(field: string, expected: string, value: unknown): RoostError {
  const received = describeValue(value);
  return new RoostError('ROOST_ERR_INVALID_OPTION', `Expected \`${field}\` to be ${expected}, got ${received}`, {
    field,
    expected,
    received,
  });
}
