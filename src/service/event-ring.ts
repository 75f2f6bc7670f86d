/**
 * The recent events of every trace, for streaming clients: one ring of the last `capacity`
 * trace events of the runtime, each with a sequence number (the Server-Sent Events `id`), and
 * subscriptions by trace id for live delivery.
 *
 * One ring for all traces, rather than a buffer per trace, keeps memory fixed whatever the load:
 * a client that reconnects (`Last-Event-ID`) gets what it missed from the ring, and if the ring
 * has moved past that, it is told of the gap and gets the trace's journaled history instead.
 * Looking a trace's events up scans the ring; that happens only when a client connects.
 */
import type { NodeEvent, RoostEvent, TraceEvent } from '../flow/events.js';

/** An event of one trace, numbered. */
export interface NumberedEvent {
  readonly seq: number;
  readonly event: NodeEvent | TraceEvent;
}

/** The event types after which a trace publishes nothing more that matters to a client. */
const END_TYPES: ReadonlySet<string> = new Set(['trace_success', 'trace_failed', 'trace_cancel_finish']);

/** True when `event` ends its trace. */
export function endsTrace(event: RoostEvent): boolean {
  return END_TYPES.has(event.type);
}

type Subscriber = (e: NumberedEvent) => void;

/** See the module comment. */
export class EventRing {
  private readonly events: (NumberedEvent | undefined)[];
  private next = 1;
  private readonly subscribers = new Map<string, Set<Subscriber>>();

  constructor(readonly capacity: number) {
    this.events = new Array<NumberedEvent | undefined>(capacity).fill(undefined);
  }

  /** The sequence number the next event will get. */
  get nextSeq(): number {
    return this.next;
  }

  /** The oldest sequence number still in the ring. */
  get oldestSeq(): number {
    return Math.max(1, this.next - this.capacity);
  }

  /** Records a runtime event (those without a trace are ignored) and hands it to its trace's subscribers. */
  record(event: RoostEvent): void {
    if (!('traceId' in event) || !('flow' in event) || event.type.startsWith('dead_letter')) return;
    const numbered: NumberedEvent = { seq: this.next, event: event as NodeEvent | TraceEvent };
    this.events[this.next % this.capacity] = numbered;
    this.next++;
    if (this.subscribers.size === 0) return;
    const subs = this.subscribers.get(numbered.event.traceId);
    if (subs !== undefined) for (const s of [...subs]) s(numbered);
  }

  /** The ring's events of `traceId` with a sequence number above `after`, oldest first. */
  since(traceId: string, after = 0): NumberedEvent[] {
    const out: NumberedEvent[] = [];
    for (let seq = Math.max(after + 1, this.oldestSeq); seq < this.next; seq++) {
      const e = this.events[seq % this.capacity];
      if (e !== undefined && e.seq === seq && e.event.traceId === traceId) out.push(e);
    }
    return out;
  }

  /** True when the ring still holds every event after `after` (nothing was lost to wrap-around). */
  covers(after: number): boolean {
    return after + 1 >= this.oldestSeq;
  }

  /** Calls `subscriber` with every new event of `traceId`; returns the unsubscribe function. */
  subscribe(traceId: string, subscriber: Subscriber): () => void {
    let subs = this.subscribers.get(traceId);
    if (subs === undefined) {
      subs = new Set();
      this.subscribers.set(traceId, subs);
    }
    subs.add(subscriber);
    return () => {
      const set = this.subscribers.get(traceId);
      if (set === undefined) return;
      set.delete(subscriber);
      if (set.size === 0) this.subscribers.delete(traceId);
    };
  }
}
