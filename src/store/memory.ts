/**
 * The store contract in memory: for tests and for runs that need no durability. Values are
 * copied through JSON on the way in and out, as a database would, so a caller that mutates an
 * object after committing it cannot change what was stored.
 *
 * Memory stays bounded: it keeps at most `maxFinishedTraces` finished traces (10,000 by default;
 * `memory:?max_finished_traces=N`), and drops the oldest finished one, with its events, steps and
 * checkpoints, when one more finishes. Running traces are never dropped.
 */
import { RoostError, ensureError } from '../errors.js';
import { checkObject, optInt } from '../validate-options.js';
import { decodeCursor, encodeCursor, pageLimit } from './cursor.js';
import { assertFence, checkFence } from './fence.js';
import type {
  Fence,
  OutboxEntry,
  IdempotentTrace,
  Lease,
  PendingEnvelope,
  Store,
  StoreBatch,
  StoredDeadLetter,
  StoredCheckpoint,
  StoredEvent,
  StoredTrace,
  TracePage,
  TraceQuery,
  Versioned,
} from './store.js';
import { RECEIVE_MARK_END, RECEIVE_MARK_PREFIX, prefixEnd } from './store.js';

function copy<T>(value: T): T {
  return value === undefined ? value : (JSON.parse(JSON.stringify(value)) as T);
}

/** Options of a {@link MemoryStore}. */
export interface MemoryStoreOptions {
  /** Finished traces kept at most; the oldest go first (default 10,000). */
  readonly maxFinishedTraces?: number;
}

/** The default of {@link MemoryStoreOptions.maxFinishedTraces}. */
export const DEFAULT_MEMORY_FINISHED_TRACES = 10_000;

/** See the module comment. */
export class MemoryStore implements Store {
  readonly durable = false;
  readonly shared = false;
  private readonly traces = new Map<string, StoredTrace>();
  /** Trace keys by trace id, and by flow, tenant and idempotency key: lookups that do not scan every trace. */
  private readonly byTraceId = new Map<string, Keys>();
  private readonly byIdempotency = new Map<string, Keys>();
  private readonly pending = new Map<string, PendingEnvelope>();
  /** Events by trace id. */
  private readonly events = new Map<string, StoredEvent[]>();
  /** Step and checkpoint keys by trace id, to drop them with their trace. */
  private readonly stepKeys = new Map<string, string[]>();
  private readonly checkpointKeys = new Map<string, Set<string>>();
  /** Keys of the finished traces held, oldest first (a Set keeps insertion order). */
  private readonly finished = new Set<string>();
  private readonly maxFinished: number;
  private outputs: { flow: string; traceId: string; value: unknown }[] = [];
  private readonly steps = new Map<string, { traceId: string; value: unknown; ts: number }>();
  private readonly checkpoints = new Map<string, { traceId: string; value: unknown }>();
  private readonly deadLetters = new Map<string, StoredDeadLetter>();
  private readonly leases = new Map<string, Lease>();
  private readonly values = new Map<string, Versioned>();
  private seq = 0;
  private readonly outbox = new Map<number, OutboxEntry>();
  private outboxSeq = 0;
  private closed = false;

  constructor(options: MemoryStoreOptions = {}) {
    const max = optInt('memory', checkObject('memory', options, ['maxFinishedTraces']), 'maxFinishedTraces', 1, Number.MAX_SAFE_INTEGER, DEFAULT_MEMORY_FINISHED_TRACES);
    this.maxFinished = max;
  }

  /** Runs `fn` as a database call would: refused once closed, errors as rejections. */
  private run<T>(fn: () => T): Promise<T> {
    if (this.closed) return Promise.reject(closedError());
    try {
      return Promise.resolve(fn());
    } catch (error) {
      return Promise.reject(ensureError(error));
    }
  }

  commit(batch: StoreBatch): Promise<void> {
    if (this.closed) return Promise.reject(closedError());
    if (batch.fence !== undefined) {
      try {
        this.checkFence(batch.fence);
      } catch (error) {
        return Promise.reject(ensureError(error));
      }
    }
    for (const t of batch.traces ?? []) {
      const key = traceKey(t.flow, t.traceId);
      const before = this.traces.get(key);
      if (before !== undefined && before.status !== 'running') continue; // a finished trace stays finished
      if (before === undefined) {
        index(this.byTraceId, t.traceId, key);
        if (t.idempotencyKey !== null) index(this.byIdempotency, idempotencyIndex(t.flow, t.tenant, t.idempotencyKey), key);
      }
      if (t.status !== 'running') {
        this.finished.add(key);
      }
      this.traces.set(key, {
        flow: t.flow,
        traceId: t.traceId,
        tenant: before?.tenant ?? t.tenant,
        status: t.status,
        createdAt: before?.createdAt ?? t.createdAt,
        updatedAt: t.updatedAt,
        deadline: before === undefined ? t.deadline : before.deadline,
        idempotencyKey: before === undefined ? t.idempotencyKey : before.idempotencyKey,
        idempotencyFingerprint: before === undefined ? (t.idempotencyFingerprint ?? null) : before.idempotencyFingerprint,
        result: t.result === undefined || t.result === null ? (before?.result ?? null) : copy(t.result),
        error: t.error === undefined || t.error === null ? (before?.error ?? null) : copy(t.error),
        owner: t.owner ?? before?.owner ?? null,
      });
    }
    for (const p of batch.accepted ?? []) {
      if (this.pending.has(p.envelope.id)) continue; // accepting twice (a resume) keeps the first
      this.pending.set(p.envelope.id, {
        flow: p.flow,
        node: p.node,
        envelope: copy(p.envelope),
        hops: p.hops,
        seq: ++this.seq,
        firstAttempt: p.firstAttempt ?? p.envelope.attempt,
        lease: null,
      });
    }
    for (const l of batch.leases ?? []) {
      const p = this.pending.get(l.envelopeId);
      if (p !== undefined) this.pending.set(l.envelopeId, { ...p, lease: { worker: l.worker, delivery: l.delivery, until: l.until } });
    }
    for (const id of batch.consumed ?? []) this.pending.delete(id);
    for (const a of batch.attempts ?? []) {
      const p = this.pending.get(a.envelopeId);
      if (p !== undefined) this.pending.set(a.envelopeId, { ...p, envelope: { ...p.envelope, attempt: a.attempt } });
    }
    for (const o of batch.outputs ?? []) this.outputs.push({ flow: o.flow, traceId: o.traceId, value: copy(o.value) });
    for (const e of batch.ended ?? []) {
      for (const [id, p] of this.pending) if (p.flow === e.flow && p.envelope.traceId === e.traceId) this.pending.delete(id);
      this.outputs = this.outputs.filter((o) => o.flow !== e.flow || o.traceId !== e.traceId);
    }
    for (const e of batch.events ?? []) {
      const stored = { traceId: e.traceId, seq: ++this.seq, type: e.type, ts: e.ts, event: copy(e.event) };
      const list = this.events.get(e.traceId);
      if (list === undefined) this.events.set(e.traceId, [stored]);
      else list.push(stored);
    }
    for (const s of batch.steps ?? []) {
      if (this.steps.has(s.stepKey)) continue;
      this.steps.set(s.stepKey, { traceId: s.traceId, value: copy(s.value), ts: s.ts });
      const keys = this.stepKeys.get(s.traceId);
      if (keys === undefined) this.stepKeys.set(s.traceId, [s.stepKey]);
      else keys.push(s.stepKey);
    }
    for (const c of batch.checkpoints ?? []) {
      this.checkpoints.set(c.key, { traceId: c.traceId, value: copy(c.value) });
      let keys = this.checkpointKeys.get(c.traceId);
      if (keys === undefined) {
        keys = new Set();
        this.checkpointKeys.set(c.traceId, keys);
      }
      keys.add(c.key);
    }
    for (const key of batch.checkpointsRemoved ?? []) {
      const c = this.checkpoints.get(key);
      if (c === undefined) continue;
      this.checkpoints.delete(key);
      this.checkpointKeys.get(c.traceId)?.delete(key);
    }
    for (const d of batch.deadLetters ?? []) this.deadLetters.set(d.id, copy(d));
    for (const id of batch.deadLettersRemoved ?? []) this.deadLetters.delete(id);
    for (const o of batch.outbox ?? []) {
      const seq = ++this.outboxSeq;
      this.outbox.set(seq, { seq, source: o.source, topic: o.topic, envelope: copy(o.envelope), createdAt: o.createdAt });
    }
    for (const seq of batch.outboxSent ?? []) this.outbox.delete(seq);
    this.evictFinished();
    return Promise.resolve();
  }

  /** Drops the oldest finished traces past the cap (see the module comment). */
  private evictFinished(): void {
    for (const key of this.finished) {
      if (this.finished.size <= this.maxFinished) break;
      this.dropTrace(key, this.traces.get(key)!);
    }
  }

  /** Removes a finished trace with what belongs to it alone. */
  private dropTrace(key: string, t: StoredTrace): void {
    this.traces.delete(key);
    this.finished.delete(key);
    unindex(this.byTraceId, t.traceId, key);
    if (t.idempotencyKey !== null) unindex(this.byIdempotency, idempotencyIndex(t.flow, t.tenant, t.idempotencyKey), key);
    if (this.byTraceId.has(t.traceId)) return; // the same trace id in another flow keeps its events
    this.events.delete(t.traceId);
    for (const k of this.stepKeys.get(t.traceId) ?? []) this.steps.delete(k);
    this.stepKeys.delete(t.traceId);
    for (const k of this.checkpointKeys.get(t.traceId) ?? []) this.checkpoints.delete(k);
    this.checkpointKeys.delete(t.traceId);
  }

  getTrace(flow: string, traceId: string): Promise<StoredTrace | null> {
    return this.run(() => {
      return copy(this.traces.get(traceKey(flow, traceId)) ?? null);
    });
  }

  listTraces(query: TraceQuery = {}): Promise<TracePage> {
    return this.run(() => {
      const limit = pageLimit(query.limit);
      const after = query.cursor === undefined ? null : decodeCursor(query.cursor);
      const matching = [...this.traces.values()]
        .filter(
          (t) =>
            (query.flow === undefined || t.flow === query.flow) &&
            (query.tenant === undefined || t.tenant === query.tenant) &&
            (query.status === undefined || t.status === query.status) &&
            (query.since === undefined || t.createdAt >= query.since) &&
            (query.until === undefined || t.createdAt < query.until) &&
            (after === null || t.traceId < after.traceId || (t.traceId === after.traceId && t.flow < after.flow)),
        )
        .sort((a, b) => descending(a.traceId, b.traceId) || descending(a.flow, b.flow));
      const page = matching.slice(0, limit);
      const last = page[page.length - 1];
      const next = matching.length > limit && last !== undefined ? encodeCursor(last.traceId, last.flow) : null;
      return { traces: copy(page), next };
    });
  }

  findTrace(traceId: string): Promise<StoredTrace | null> {
    return this.run(() => {
      let best: StoredTrace | null = null;
      for (const key of keysOf(this.byTraceId.get(traceId))) {
        const t = this.traces.get(key)!;
        if (best === null || t.createdAt > best.createdAt) best = t;
      }
      return best === null ? null : copy(best);
    });
  }

  findIdempotent(flow: string, tenant: string, key: string, since: number): Promise<IdempotentTrace | null> {
    return this.run(() => {
      let best: StoredTrace | null = null;
      for (const k of keysOf(this.byIdempotency.get(idempotencyIndex(flow, tenant, key)))) {
        const t = this.traces.get(k)!;
        if (t.createdAt < since) continue;
        if (best === null || t.createdAt > best.createdAt) best = t;
      }
      return best === null ? null : { traceId: best.traceId, fingerprint: best.idempotencyFingerprint };
    });
  }

  runningTraces(flow: string, owner?: string): Promise<readonly StoredTrace[]> {
    return this.run(() => {
      const list = [...this.traces.values()]
        .filter((t) => t.flow === flow && t.status === 'running' && (owner === undefined || t.owner === owner || t.owner === null))
        .sort((a, b) => a.createdAt - b.createdAt);
      return copy(list);
    });
  }

  pendingEnvelopes(flow: string): Promise<readonly PendingEnvelope[]> {
    return this.run(() => {
      const list = [...this.pending.values()].filter((p) => p.flow === flow).sort((a, b) => a.seq - b.seq);
      return copy(list);
    });
  }

  pendingOutputs(flow: string): Promise<readonly { readonly traceId: string; readonly value: unknown }[]> {
    return this.run(() =>
      copy(
        this.outputs
          .filter((o) => o.flow === flow && this.traces.get(traceKey(flow, o.traceId))?.status === 'running')
          .map((o) => ({ traceId: o.traceId, value: o.value })),
      ),
    );
  }

  outboxEntries(source: string, afterSeq: number, limit: number): Promise<readonly OutboxEntry[]> {
    return this.run(() => {
      // A Map iterates in insertion order, which is seq order.
      const list: OutboxEntry[] = [];
      for (const entry of this.outbox.values()) {
        if (list.length >= limit) break;
        if (entry.source === source && entry.seq > afterSeq) list.push(entry);
      }
      return copy(list);
    });
  }

  outboxSize(source: string): Promise<number> {
    return this.run(() => {
      let n = 0;
      for (const entry of this.outbox.values()) if (entry.source === source) n++;
      return n;
    });
  }

  getStep(stepKey: string): Promise<{ readonly value: unknown } | undefined> {
    return this.run(() => {
      const step = this.steps.get(stepKey);
      return step === undefined ? undefined : { value: copy(step.value) };
    });
  }

  getCheckpoint(key: string): Promise<{ readonly value: unknown } | undefined> {
    return this.run(() => {
      const c = this.checkpoints.get(key);
      return c === undefined ? undefined : { value: copy(c.value) };
    });
  }

  listCheckpoints(prefix: string, after: string | null, limit: number): Promise<readonly StoredCheckpoint[]> {
    return this.run(() => {
      // The same key range as the SQL stores (prefixEnd also refuses a prefix without one).
      const end = prefixEnd(prefix);
      const keys: string[] = [];
      for (const key of this.checkpoints.keys()) if (key >= prefix && key < end && (after === null || key > after)) keys.push(key);
      // UTF-16 order, which is byte order for the keys the runtime writes (ASCII).
      keys.sort();
      return keys.slice(0, limit).map((key) => {
        const c = this.checkpoints.get(key)!;
        return { key, traceId: c.traceId, value: copy(c.value) };
      });
    });
  }

  history(traceId: string): Promise<readonly StoredEvent[]> {
    return this.run(() => {
      return copy(this.events.get(traceId) ?? []);
    });
  }

  listDeadLetters(query: { flow?: string; tenant?: string; limit?: number } = {}): Promise<readonly StoredDeadLetter[]> {
    return this.run(() => {
      const limit = pageLimit(query.limit);
      const list = [...this.deadLetters.values()]
        .filter((d) => (query.flow === undefined || d.flow === query.flow) && (query.tenant === undefined || d.tenant === query.tenant))
        .sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1))
        .slice(0, limit);
      return copy(list);
    });
  }

  getDeadLetter(id: string): Promise<StoredDeadLetter | null> {
    return this.run(() => {
      return copy(this.deadLetters.get(id) ?? null);
    });
  }

  acquireLease(name: string, holder: string, ttlMs: number, now: number): Promise<Lease | null> {
    return this.run(() => {
      const current = this.leases.get(name);
      if (current !== undefined && current.holder !== holder && current.until > now) return null;
      const token = current === undefined ? 1 : current.holder === holder && current.until > now ? current.token : current.token + 1;
      const lease: Lease = { name, holder, token, until: now + ttlMs };
      this.leases.set(name, lease);
      return { ...lease };
    });
  }

  getLease(name: string): Promise<Lease | null> {
    return this.run(() => {
      const lease = this.leases.get(name);
      return lease === undefined ? null : { ...lease };
    });
  }

  runningOwners(flow: string): Promise<readonly (string | null)[]> {
    return this.run(() => [...new Set([...this.traces.values()].filter((t) => t.flow === flow && t.status === 'running').map((t) => t.owner))]);
  }

  claimTraces(flow: string, from: string | null, to: string): Promise<readonly string[]> {
    return this.run(() => {
      const ids: string[] = [];
      for (const [key, t] of this.traces) {
        if (t.flow !== flow || t.status !== 'running' || t.owner !== from) continue;
        this.traces.set(key, { ...t, owner: to });
        ids.push(t.traceId);
      }
      return ids;
    });
  }

  releaseLease(name: string, holder: string, token: number): Promise<void> {
    return this.run(() => {
      const current = this.leases.get(name);
      // Expired, not deleted: the next holder's token must still be higher.
      if (current !== undefined && current.holder === holder && current.token === token) this.leases.set(name, { ...current, until: 0 });
      return ;
    });
  }

  getValue(key: string): Promise<Versioned | undefined> {
    return this.run(() => {
      const v = this.values.get(key);
      return v === undefined ? undefined : { value: copy(v.value), version: v.version };
    });
  }

  putValue(key: string, value: unknown, expectedVersion: number, fence?: Fence): Promise<number | null> {
    return this.run(() => {
      if (fence !== undefined) this.checkFence(fence);
      const current = this.values.get(key)?.version ?? 0;
      if (current !== expectedVersion) return null;
      this.values.set(key, { value: copy(value), version: current + 1 });
      return current + 1;
    });
  }

  /** Throws `ROOST_ERR_FENCED` unless the fence holds now (one thread: nothing can change between check and write). */
  private checkFence(fence: Fence): void {
    const f = checkFence(fence);
    assertFence(f, this.leases.get(f.name) ?? null, Date.now());
  }

  prune(before: number): Promise<number> {
    return this.run(() => {
      let n = 0;
      for (const [key, t] of this.traces) {
        if (t.status === 'running' || t.updatedAt >= before) continue;
        this.dropTrace(key, t);
        n++;
      }
      for (const [k, step] of this.steps) if (k >= RECEIVE_MARK_PREFIX && k < RECEIVE_MARK_END && step.ts < before) this.steps.delete(k);
      return n;
    });
  }

  usedBytes(): Promise<number | null> {
    return this.run(() => null);
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}

function traceKey(flow: string, traceId: string): string {
  return `${flow}\u0000${traceId}`;
}

function closedError(): RoostError {
  return new RoostError('ROOST_ERR_INVALID_STATE', 'store: it is closed', { field: 'store', expected: 'an open store', received: 'closed' });
}

/** Orders strings newest id first (descending, by code unit, as SQL's text order for ids). */
function descending(a: string, b: string): number {
  return a < b ? 1 : a > b ? -1 : 0;
}

/** One trace key (nearly always), or several (a trace id in two flows; a reused idempotency key). */
type Keys = string | string[];

function keysOf(keys: Keys | undefined): readonly string[] {
  return keys === undefined ? [] : typeof keys === 'string' ? [keys] : keys;
}

function index(map: Map<string, Keys>, by: string, key: string): void {
  const keys = map.get(by);
  if (keys === undefined) map.set(by, key);
  else if (typeof keys === 'string') {
    if (keys !== key) map.set(by, [keys, key]);
  } else if (!keys.includes(key)) keys.push(key);
}

function unindex(map: Map<string, Keys>, by: string, key: string): void {
  const keys = map.get(by);
  if (keys === undefined) return;
  if (typeof keys === 'string') {
    if (keys === key) map.delete(by);
    return;
  }
  const rest = keys.filter((k) => k !== key);
  if (rest.length === 0) map.delete(by);
  else map.set(by, rest.length === 1 ? rest[0]! : rest);
}

function idempotencyIndex(flow: string, tenant: string, key: string): string {
  return `${flow}\u0000${tenant}\u0000${key}`;
}
