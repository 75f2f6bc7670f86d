/**
 * A trace's history as the journal holds it: the events stored for it, with the lifecycle
 * events its trace record stands for put back.
 *
 * `trace_start`, `trace_success` and `trace_failed` say nothing the trace row does not (when it
 * was accepted, how and when it ended, with what error), and on the fast path (a task accepted
 * and finished within one group commit) they were two of a message's three rows. So they are not
 * stored: this derives them, `trace_start` first (seq 0) and the end last.
 */
import type { Store, StoredEvent, StoredTrace } from './store.js';

/** The event types the trace record stands for: never stored as events. */
export const LIFECYCLE_EVENTS: ReadonlySet<string> = new Set(['trace_start', 'trace_success', 'trace_failed']);

/** Seq of a derived end event: after every stored one. */
const END_SEQ = Number.MAX_SAFE_INTEGER;

/** `events` of `trace` with its lifecycle events derived from the record (none without one). */
export function withLifecycle(trace: StoredTrace | null, events: readonly StoredEvent[]): StoredEvent[] {
  if (trace === null) return [...events];
  const base = { flow: trace.flow, traceId: trace.traceId, tenant: trace.tenant };
  const start: StoredEvent = {
    traceId: trace.traceId,
    seq: 0,
    type: 'trace_start',
    ts: trace.createdAt,
    event: { type: 'trace_start', ts: trace.createdAt, ...base, elapsedMs: 0, count: 0, error: null },
  };
  const out = [start, ...events];
  if (trace.status === 'succeeded' || trace.status === 'failed') {
    const type = trace.status === 'succeeded' ? 'trace_success' : 'trace_failed';
    const error = trace.status === 'failed' ? trace.error : null;
    out.push({
      traceId: trace.traceId,
      seq: END_SEQ,
      type,
      ts: trace.updatedAt,
      event: { type, ts: trace.updatedAt, ...base, elapsedMs: trace.updatedAt - trace.createdAt, count: 0, error },
    });
  }
  return out;
}

/** The history of `traceId` in `store`: stored events and derived lifecycle events, in order. */
export async function traceHistory(store: Store, traceId: string): Promise<StoredEvent[]> {
  const [trace, events] = await Promise.all([store.findTrace(traceId), store.history(traceId)]);
  return withLifecycle(trace, events);
}
