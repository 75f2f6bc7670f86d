/**
 * The store contract: what the runtime keeps durably, with no database type leaking through.
 *
 * Writes go in batches: the runtime gathers what one turn of its loop produced (accepted
 * envelopes, consumed ones, trace outcomes, events, step results, dead letters) and commits them
 * in one transaction (group commit), so a message waits for at most two commits in series (its
 * acceptance and its trace's result), however many nodes it crosses. Reads serve resume after a
 * crash, `fetch` of finished traces, history, the dead-letter queue and listings.
 *
 * Implementations: `MemoryStore` (tests, and runs that need no durability), `SqliteStore` (the
 * embedded default) and `PostgresStore` (several processes, several hosts). Every
 * implementation passes the contract suite in `test/store/`.
 */
import type { Envelope } from '../envelope/envelope.js';
import type { EventError } from '../flow/events.js';
import { invalidOption } from '../errors.js';

/** Where a trace is, as stored. */
export type StoredTraceStatus = 'running' | 'succeeded' | 'failed' | 'cancelled';

/** A trace as the store keeps it. */
export interface StoredTrace {
  readonly flow: string;
  readonly traceId: string;
  readonly tenant: string;
  readonly status: StoredTraceStatus;
  /** Epoch ms when it was accepted. */
  readonly createdAt: number;
  /** Epoch ms of the last change. */
  readonly updatedAt: number;
  readonly deadline: number | null;
  readonly idempotencyKey: string | null;
  /** A digest of the request that came with the key (the HTTP body), or null. */
  readonly idempotencyFingerprint: string | null;
  /** The result (succeeded), else null. */
  readonly result: unknown;
  /** The error (failed or cancelled), else null. */
  readonly error: EventError | null;
  /** The process that owns it while it runs (resumes it after a crash), or null. */
  readonly owner: string | null;
}

/**
 * Creates a trace, or changes its status, result, error or owner. On a change, a result, error
 * or owner left out (or null) keeps the stored one; tenant, times of creation, deadline and
 * idempotency key are set once, at creation.
 */
export interface TraceWrite {
  readonly flow: string;
  readonly traceId: string;
  readonly tenant: string;
  readonly status: StoredTraceStatus;
  readonly createdAt: number;
  readonly updatedAt: number;
  readonly deadline: number | null;
  readonly idempotencyKey: string | null;
  /** Set once, at creation, with the key (absent: none). */
  readonly idempotencyFingerprint?: string | null;
  readonly result?: unknown;
  readonly error?: EventError | null;
  readonly owner?: string | null;
}

/** An envelope accepted for a node and not yet consumed there. */
export interface PendingEnvelope {
  readonly flow: string;
  /** The node it waits for. */
  readonly node: string;
  readonly envelope: Envelope;
  /** Edges its lineage has crossed (the hop budget). */
  readonly hops: number;
  /** Store-assigned order of acceptance: resume re-enqueues in this order. */
  readonly seq: number;
  /** Its attempt number when it was accepted there: its retry budget counts from it. */
  readonly firstAttempt: number;
  /** Its lease, when it was handed to a worker of the fleet; else null. */
  readonly lease: DispatchLease | null;
}

/** The lease of a pending envelope a worker of the fleet was handed (src/fleet/dispatcher.ts), as last journaled. */
export interface DispatchLease {
  /** The worker that acknowledged it (its fleet id), or null when none had. */
  readonly worker: string | null;
  /** Its delivery at its attempt: 1 for the first, 2… when it was sent again. */
  readonly delivery: number;
  /** Epoch ms the lease runs out unless renewed (heartbeats renew it in memory, not in the journal). */
  readonly until: number;
}

/** A lease to journal on a pending envelope. */
export interface LeaseWrite extends DispatchLease {
  readonly envelopeId: string;
}

/** An envelope to journal as pending at `node`. */
export interface PendingWrite {
  readonly flow: string;
  readonly node: string;
  readonly envelope: Envelope;
  readonly hops: number;
  /** The attempt its retry budget counts from (default: the envelope's attempt). */
  readonly firstAttempt?: number;
}

/** An output of a running trace. */
export interface OutputWrite {
  readonly flow: string;
  readonly traceId: string;
  readonly value: unknown;
}

/**
 * A journaled event of a trace. The lifecycle events `trace_start`, `trace_success` and
 * `trace_failed` are not stored as events: the trace record holds what they say, and
 * `traceHistory` (store/history.ts) puts them back, as seq 0 and last.
 */
export interface StoredEvent {
  readonly traceId: string;
  /** Store-assigned, increasing per store among the events stored: the order they were committed. */
  readonly seq: number;
  readonly type: string;
  readonly ts: number;
  /** The whole event as published. */
  readonly event: Readonly<Record<string, unknown>>;
}

export interface EventWrite {
  readonly traceId: string;
  readonly type: string;
  readonly ts: number;
  readonly event: Readonly<Record<string, unknown>>;
}

/** The recorded result of `ctx.step(name, fn)`. */
export interface StepWrite {
  /** Stable for (trace, node, input envelope, step name). */
  readonly stepKey: string;
  readonly traceId: string;
  readonly value: unknown;
  readonly ts: number;
}

/** A handler's checkpoint: the latest state it saved for one input (overwritten each time). */
export interface CheckpointWrite {
  /** Stable for (trace, node, input). */
  readonly key: string;
  readonly traceId: string;
  readonly value: unknown;
  readonly ts: number;
}

/** A checkpoint as stored (listed by key prefix). */
export interface StoredCheckpoint {
  readonly key: string;
  readonly traceId: string;
  readonly value: unknown;
}

/** A dead letter as stored. */
export interface StoredDeadLetter {
  readonly id: string;
  readonly flow: string;
  readonly node: string;
  readonly traceId: string;
  readonly tenant: string;
  readonly envelope: Envelope;
  readonly error: EventError;
  readonly attempts: number;
  readonly createdAt: number;
}

/**
 * An envelope a transport accepted while its broker was away (or while earlier ones still
 * waited): kept until it is sent, in `seq` order per `source`.
 */
export interface OutboxEntry {
  /** Store-assigned, increasing: the order of acceptance. */
  readonly seq: number;
  /** Whose outbox it is (one transport of one process): only that source sends it. */
  readonly source: string;
  readonly topic: string;
  readonly envelope: Envelope;
  /** Epoch ms it was kept. */
  readonly createdAt: number;
}

/** An envelope to keep in an outbox. */
export interface OutboxWrite {
  readonly source: string;
  readonly topic: string;
  readonly envelope: Envelope;
  readonly createdAt: number;
}

/**
 * A write made under a lease (a singleton's leader writing): the lease's name and the token it
 * was granted with. The store checks, in the write's own transaction, that lease `name` is still
 * held with `token` and has not lapsed (by the writing process's clock, as leases are taken by
 * the caller's clock), and otherwise refuses the whole write with `ROOST_ERR_FENCED`: a deposed
 * leader's late write never lands after a newer leader's.
 */
export interface Fence {
  readonly name: string;
  readonly token: number;
}

/** One group commit: every part is optional; all of it lands or none does. */
export interface StoreBatch {
  /** When set, the batch lands only while this lease is held with this token (see {@link Fence}). */
  readonly fence?: Fence;
  readonly traces?: readonly TraceWrite[];
  readonly accepted?: readonly PendingWrite[];
  /** Ids of envelopes no longer pending (consumed by their node, dropped or dead-lettered). */
  readonly consumed?: readonly string[];
  /** Leases of pending envelopes handed to fleet workers (applied after `accepted`). */
  readonly leases?: readonly LeaseWrite[];
  /** Pending envelopes whose attempt number rose (a retry): resume keeps the count. */
  readonly attempts?: readonly { readonly envelopeId: string; readonly attempt: number }[];
  /** Outputs of running traces (an egress node's value), kept until the trace's result is written. */
  readonly outputs?: readonly OutputWrite[];
  /** Traces that ended: their pending envelopes and outputs are dropped. */
  readonly ended?: readonly { readonly flow: string; readonly traceId: string }[];
  readonly events?: readonly EventWrite[];
  readonly steps?: readonly StepWrite[];
  /** The latest checkpoint per key wins. */
  readonly checkpoints?: readonly CheckpointWrite[];
  /** Keys of checkpoints to delete (applied after `checkpoints`). */
  readonly checkpointsRemoved?: readonly string[];
  readonly deadLetters?: readonly StoredDeadLetter[];
  /** Ids of dead letters to delete (replayed or removed). */
  readonly deadLettersRemoved?: readonly string[];
  /** Envelopes to keep in an outbox, in this order. */
  readonly outbox?: readonly OutboxWrite[];
  /** Seqs of outbox entries that were sent. */
  readonly outboxSent?: readonly number[];
}

/**
 * What `listTraces` filters on. Results are newest first by trace id (UUIDv7: the time the id
 * was made, which is the time of acceptance for ids the runtime makes).
 */
export interface TraceQuery {
  readonly flow?: string;
  readonly tenant?: string;
  readonly status?: StoredTraceStatus;
  /** Accepted at or after this time (epoch ms). */
  readonly since?: number;
  /** Accepted before this time (epoch ms). */
  readonly until?: number;
  /** Page size (default 100). */
  readonly limit?: number;
  /** From the previous page's `next`. */
  readonly cursor?: string;
}

export interface TracePage {
  readonly traces: readonly StoredTrace[];
  /** Cursor of the next page, or null on the last one. */
  readonly next: string | null;
}

/** The trace an idempotency key names, and the fingerprint of the request that came with it. */
export interface IdempotentTrace {
  readonly traceId: string;
  readonly fingerprint: string | null;
}

/** A lease on a named singleton duty; `token` rises with every new holder (fencing). */
export interface Lease {
  readonly name: string;
  readonly holder: string;
  readonly token: number;
  /** Epoch ms it expires unless renewed. */
  readonly until: number;
}

/** A value of the versioned key-value area. */
export interface Versioned {
  readonly value: unknown;
  /** 1 for the first write, then +1 per write. */
  readonly version: number;
}

/** See the module comment. */
export interface Store {
  /** True when a commit survives a crash of the process (memory: false). */
  readonly durable: boolean;
  /**
   * True when several processes may share it (PostgreSQL): traces are then resumed under owner
   * leases. False for an embedded file or memory: one process, which resumes everything.
   */
  readonly shared: boolean;
  /**
   * Resolves once the store takes operations (PostgreSQL: connected and its schema migrated);
   * rejects with `ROOST_ERR_STORE_UNAVAILABLE` when it cannot be opened. Absent: ready at once
   * (a store that opens in its constructor). The runtime waits for it at start, outside the
   * operations' timeout: a migration is not an operation, and may take long.
   */
  ready?(): Promise<void>;
  /**
   * Commits `batch` in one transaction; resolves once it is durable (for a durable store). When
   * `signal` aborts (the caller gave up on this commit: a timeout), a commit that has not sent
   * its COMMIT yet rolls back instead, so a commit the caller was told failed never lands after
   * a later one. A trace's status, once finished, is never set back to `running` by a write.
   * With `batch.fence`, nothing lands unless the fence holds (`ROOST_ERR_FENCED`).
   */
  commit(batch: StoreBatch, signal?: AbortSignal): Promise<void>;
  getTrace(flow: string, traceId: string): Promise<StoredTrace | null>;
  /** The trace with this id in any flow (the newest, should two flows have it), or null. */
  findTrace(traceId: string): Promise<StoredTrace | null>;
  listTraces(query?: TraceQuery): Promise<TracePage>;
  /**
   * The newest trace of `flow` and `tenant` accepted at or after `since` with the caller's
   * `idempotencyKey`, or null: the idempotency window outlives the process.
   */
  findIdempotent(flow: string, tenant: string, key: string, since: number): Promise<IdempotentTrace | null>;
  /** Running traces of `flow` (owned by `owner` when given, or by nobody), oldest first. */
  runningTraces(flow: string, owner?: string): Promise<readonly StoredTrace[]>;
  /** Envelopes pending in `flow`, in acceptance order (`seq`). */
  pendingEnvelopes(flow: string): Promise<readonly PendingEnvelope[]>;
  /** Outputs of the running traces of `flow`, in the order they were written. */
  pendingOutputs(flow: string): Promise<readonly { readonly traceId: string; readonly value: unknown }[]>;
  /** The recorded result of a step, or undefined when it has none. */
  getStep(stepKey: string): Promise<{ readonly value: unknown } | undefined>;
  /** The latest checkpoint saved under `key`, or undefined. */
  getCheckpoint(key: string): Promise<{ readonly value: unknown } | undefined>;
  /**
   * The checkpoints whose key starts with `prefix` (not empty) and sorts after `after` (null: from
   * the first), in key order (byte order, whatever the database's locale), at most `limit`.
   */
  listCheckpoints(prefix: string, after: string | null, limit: number): Promise<readonly StoredCheckpoint[]>;
  /** The journaled events of a trace, in commit order. */
  history(traceId: string): Promise<readonly StoredEvent[]>;
  listDeadLetters(query?: { flow?: string; tenant?: string; limit?: number }): Promise<readonly StoredDeadLetter[]>;
  getDeadLetter(id: string): Promise<StoredDeadLetter | null>;
  /** Takes the lease when free or expired at `now`, or renews it for its holder; null when another holds it. */
  acquireLease(name: string, holder: string, ttlMs: number, now: number): Promise<Lease | null>;
  /** The lease `name` as stored (maybe expired), or null. */
  getLease(name: string): Promise<Lease | null>;
  /** Owners of the running traces of `flow` (null: a trace with no owner). */
  runningOwners(flow: string): Promise<readonly (string | null)[]>;
  /**
   * Moves the running traces of `flow` owned by `from` (null: unowned) to `to`, atomically per
   * trace: when several processes claim at once, each trace goes to exactly one. Returns the ids moved.
   */
  claimTraces(flow: string, from: string | null, to: string): Promise<readonly string[]>;
  /** Gives the lease up if `holder` holds it with `token` (it lapses at once; the next holder's token is still higher). */
  releaseLease(name: string, holder: string, token: number): Promise<void>;
  getValue(key: string): Promise<Versioned | undefined>;
  /**
   * Writes `value` when the key's version is `expectedVersion` (0: the key must not exist);
   * returns the new version, or null when the version did not match (compare-and-set). With a
   * `fence`, the write is refused with `ROOST_ERR_FENCED` unless the fence holds (checked first,
   * in the same transaction).
   */
  putValue(key: string, value: unknown, expectedVersion: number, fence?: Fence): Promise<number | null>;
  /** The outbox entries of `source` after `afterSeq` (0: from the first), oldest first, at most `limit`. */
  outboxEntries(source: string, afterSeq: number, limit: number): Promise<readonly OutboxEntry[]>;
  /** How many outbox entries `source` has. */
  outboxSize(source: string): Promise<number>;
  /** Bytes the data takes (free pages not counted), or null when the store cannot tell cheaply. */
  usedBytes(): Promise<number | null>;
  /** Deletes finished traces updated before `before` with their events, steps and checkpoints; returns how many. */
  prune(before: number): Promise<number>;
  close(): Promise<void>;
}

/**
 * Step keys under this prefix are marks of envelopes a transport received (its dedup): they
 * belong to no trace of this journal, so `prune(before)` removes those older than `before` by
 * their own time.
 */
export const RECEIVE_MARK_PREFIX = 'roost:seen:';

/** The first key after every receive mark (`:` + 1 is `;`): the end of their key range. */
export const RECEIVE_MARK_END = prefixEnd(RECEIVE_MARK_PREFIX);


/** The name of the lease an owner of traces holds while it lives (with a shared store). */
export const ownerLeaseName = (owner: string): string => `owner:${owner}`;

/**
 * The first key after every key that starts with `prefix` (its last character + 1), for a key
 * range. The last character must be below U+D800 (not a surrogate half, nor U+FFFF, whose
 * successor is no character): the runtime's prefixes are ASCII.
 */
export function prefixEnd(prefix: string): string {
  const last = prefix.charCodeAt(prefix.length - 1);
  if (!(last < 0xd800)) throw invalidOption('listCheckpoints.prefix', 'a non-empty prefix whose last character is below U+D800', prefix);
  return prefix.slice(0, -1) + String.fromCharCode(last + 1);
}

/** The lease columns of a pending row. */
export interface LeaseRow {
  readonly lease_worker: string | null;
  readonly lease_delivery: number;
  readonly lease_until: number | string | null;
}

/** A pending row's lease, or null when it was never handed to a worker. */
export function leaseOf(r: LeaseRow): DispatchLease | null {
  return r.lease_delivery === 0 || r.lease_until === null ? null : { worker: r.lease_worker, delivery: r.lease_delivery, until: Number(r.lease_until) };
}
