/**
 * A reader's view of one trace as an async iterator: its chunks and events as they happen, then
 * its end. The buffer is bounded: when a slow reader falls behind, the oldest items are dropped
 * and a `stream_gap` item says how many, so the runtime's memory never depends on the reader.
 */
import type { RoostError } from '../errors.js';
import type { NodeEvent, TraceEvent } from './events.js';

/** A chunk a handler streamed with `ctx.chunk`. */
export interface ChunkItem {
  readonly type: 'chunk';
  readonly ts: number;
  readonly traceId: string;
  readonly node: string;
  readonly data: unknown;
}

/** Items were dropped because the reader was slow. */
export interface StreamGapItem {
  readonly type: 'stream_gap';
  readonly dropped: number;
}

/** The trace ended: its result, or its error. Always the last item. */
export interface TraceEndItem {
  readonly type: 'trace_end';
  readonly ts: number;
  readonly traceId: string;
  readonly status: 'succeeded' | 'failed' | 'cancelled';
  readonly result: unknown;
  readonly error: RoostError | null;
}

/** What a trace stream yields. */
export type TraceStreamItem = ChunkItem | NodeEvent | TraceEvent | StreamGapItem | TraceEndItem;

/** Default number of items a trace stream buffers for a slow reader. */
export const DEFAULT_STREAM_BUFFER = 256;

/** A bounded async iterator over one trace; see the module comment. */
export class TraceStream implements AsyncIterableIterator<TraceStreamItem> {
  private readonly buffer: TraceStreamItem[] = [];
  private head = 0;
  private dropped = 0;
  private ended = false;
  private waiter: ((result: IteratorResult<TraceStreamItem>) => void) | null = null;

  /** @internal made by `flow.stream(traceId)`. */
  constructor(
    private readonly capacity: number,
    private readonly onClose: (stream: TraceStream) => void,
  ) {}

  /** @internal */
  push(item: TraceStreamItem): void {
    if (this.ended) return;
    if (this.waiter !== null && this.dropped === 0) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter({ value: item, done: false });
      return;
    }
    if (this.buffer.length - this.head >= this.capacity) {
      this.head++;
      this.dropped++;
    }
    this.buffer.push(item);
    if (this.head > 1024) {
      this.buffer.splice(0, this.head);
      this.head = 0;
    }
    this.flush();
  }

  /** @internal the trace ended: `item` is the last thing this stream yields. */
  end(item: TraceEndItem): void {
    if (this.ended) return;
    // The end always fits: it replaces the oldest item when the buffer is full.
    if (this.buffer.length - this.head >= this.capacity) {
      this.head++;
      this.dropped++;
    }
    this.buffer.push(item);
    this.ended = true;
    this.flush();
  }

  private flush(): void {
    if (this.waiter === null) return;
    const next = this.take();
    if (next === undefined) return;
    const waiter = this.waiter;
    this.waiter = null;
    waiter(next);
  }

  private take(): IteratorResult<TraceStreamItem> | undefined {
    if (this.dropped > 0) {
      const dropped = this.dropped;
      this.dropped = 0;
      return { value: { type: 'stream_gap', dropped }, done: false };
    }
    if (this.head < this.buffer.length) {
      const value = this.buffer[this.head]!;
      this.buffer[this.head] = undefined as unknown as TraceStreamItem;
      this.head++;
      return { value, done: false };
    }
    if (this.ended) {
      this.onClose(this);
      return { value: undefined, done: true };
    }
    return undefined;
  }

  next(): Promise<IteratorResult<TraceStreamItem>> {
    const next = this.take();
    if (next !== undefined) return Promise.resolve(next);
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  /** Stops reading: the stream detaches from the trace. */
  return(): Promise<IteratorResult<TraceStreamItem>> {
    this.ended = true;
    this.buffer.length = 0;
    this.head = 0;
    this.dropped = 0;
    this.onClose(this);
    if (this.waiter !== null) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter({ value: undefined, done: true });
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
