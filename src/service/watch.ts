/**
 * Following one trace for a streaming client (Server-Sent Events or a WebSocket subscription):
 * the events of it still in the ring after the client's last one, then the live ones, then its
 * end (status and result or error), after which the watch stops by itself.
 */
import type { Runtime } from '../runtime/runtime.js';
import type { Store } from '../store/store.js';
import { asRoostError } from './errors.js';
import { endsTrace, type EventRing, type NumberedEvent } from './event-ring.js';

/** How a trace ended, as a client is told. */
export interface TraceEnd {
  readonly traceId: string;
  readonly status: string;
  readonly result?: unknown;
  readonly error?: { readonly code: string; readonly message: string } | null;
}

/** What a watch tells its client. */
export interface WatchSink {
  event(e: NumberedEvent): void;
  /** Events after the client's last one were lost to the ring's wrap-around (`Last-Event-ID` too old). */
  gap(from: number, to: number): void;
  end(end: TraceEnd): void;
}

/**
 * Starts watching `traceId` of flow `flow` from after sequence number `after` (0: everything the
 * ring still has). Returns the function that stops it early (a client that went away).
 */
export function watchTrace(ring: EventRing, runtime: Runtime, store: Store, flow: string, traceId: string, after: number, sink: WatchSink): () => void {
  let stopped = false;
  let unsubscribe: () => void = () => {};
  const stop = (): void => {
    stopped = true;
    unsubscribe();
  };
  const finish = (): void => {
    if (stopped) return;
    stop();
    // The journal may be down (its breaker open): the client still gets an end, never a hang.
    endOf(runtime, store, flow, traceId).then(
      (end) => sink.end(end),
      (error: unknown) => sink.end(unknownEnd(traceId, error)),
    );
  };
  // Subscribe and read the ring in one synchronous step: no event falls between the two.
  unsubscribe = ring.subscribe(traceId, (e) => {
    if (stopped) return;
    sink.event(e);
    if (endsTrace(e.event)) finish();
  });
  if (after > 0 && !ring.covers(after)) sink.gap(after + 1, ring.oldestSeq - 1);
  for (const e of ring.since(traceId, after)) {
    if (stopped) break;
    sink.event(e);
    if (endsTrace(e.event)) {
      finish();
      return stop;
    }
  }
  // Ended already, with its end no longer in the ring (or before the client's last event).
  const here = runtime.getFlow(flow);
  if (here === undefined) finish(); // not a flow of this process: nothing will come
  else if (here.outcome(traceId) !== undefined) finish();
  else if (!here.isRunning(traceId)) {
    // Not in memory (a trace running here publishes its end into the ring): finished long
    // enough ago to be only in the journal, or running in another process.
    store.findTrace(traceId).then(
      (t) => {
        if (t !== null && t.status !== 'running') finish();
      },
      (error: unknown) => {
        if (stopped) return;
        stop();
        sink.end(unknownEnd(traceId, error));
      },
    );
  }
  return stop;
}

async function endOf(runtime: Runtime, store: Store, flow: string, traceId: string): Promise<TraceEnd> {
  const outcome = runtime.getFlow(flow)?.outcome(traceId);
  if (outcome !== undefined) {
    return outcome.status === 'succeeded' ? { traceId, status: outcome.status, result: outcome.result } : { traceId, status: outcome.status, error: outcome.error };
  }
  // The journal commits the end a moment after the event: read it until it shows.
  for (let i = 0; i < 50; i++) {
    const t = await store.findTrace(traceId);
    if (t !== null && t.status !== 'running') {
      return t.status === 'succeeded'
        ? { traceId, status: t.status, result: t.result }
        : { traceId, status: t.status, error: t.error === null ? null : { code: t.error.code, message: t.error.message } };
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { traceId, status: 'unknown', error: null };
}

/** The end a client gets when the journal could not say how the trace ended. */
function unknownEnd(traceId: string, error: unknown): TraceEnd {
  const e = asRoostError(error);
  return { traceId, status: 'unknown', error: { code: e.code, message: e.message } };
}
