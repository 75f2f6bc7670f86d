/**
 * The envelope: the one message shape on every path (SDK, HTTP, transports, journal).
 * Absent optional fields are `null`, not missing, so every envelope has the same shape.
 */

/** What an envelope carries. */
export type EnvelopeKind = 'task' | 'result' | 'error' | 'event' | 'chunk';

/** The envelope kinds, in a fixed order. */
export const ENVELOPE_KINDS: readonly EnvelopeKind[] = ['task', 'result', 'error', 'event', 'chunk'];

/** The schema version this library writes, and the only major version it reads. */
export const ENVELOPE_VERSION = 1;

/** Any value that survives `JSON.stringify` → `JSON.parse` unchanged. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** One message, as it travels and as it is journaled. See `docs/reference/wire-formats.md`. */
export interface Envelope<P = unknown> {
  /** Schema major version: always 1. */
  readonly v: 1;
  /** This envelope's id (UUIDv7). */
  readonly id: string;
  /** The task this envelope belongs to (UUIDv7). */
  readonly traceId: string;
  /** The envelope this one was made from, or `null` at ingress. */
  readonly parentId: string | null;
  /** Tenant name; `default` when none is given. */
  readonly tenant: string;
  /** The node or agent that made this envelope. */
  readonly from: string;
  /** The node, agent or topic it is for. */
  readonly to: string;
  readonly kind: EnvelopeKind;
  readonly payload: P;
  /** String headers; `traceparent` and Roost's `roost-*` headers live here. */
  readonly headers: Readonly<Record<string, string>>;
  /** Absolute deadline (epoch ms) or `null` for none. */
  readonly deadline: number | null;
  /** Creation time (epoch ms). */
  readonly createdAt: number;
  /** 1 for the first run of this envelope, then 2, 3 … for retries and replays. */
  readonly attempt: number;
  /** The caller's idempotency key for the task, or `null`. */
  readonly idempotencyKey: string | null;
}
