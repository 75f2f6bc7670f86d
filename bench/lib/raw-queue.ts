/**
 * The `raw-queue` baseline: the same pipeline Roost runs, written by hand with nothing else.
 * One bounded ring per edge (ingress→n1→n2→n3→egress), one sequential consumer loop per node,
 * backpressure by waiting producers, replies matched by message id. It is the yardstick for
 * "what a careful hand-rolled queue pipeline costs", so it takes no shortcut Roost could not
 * take: one message at a time, a new message object per hop, a promise per submit.
 */
import type { Payload, Step, Target } from './measure.js';

interface Waiter<T> {
  readonly item: T;
  readonly resolve: () => void;
}

/**
 * A bounded FIFO ring with one consumer. `put` returns undefined when the item went in at once,
 * so the common case allocates no promise (Roost's queue does the same); a full ring parks the
 * producer until the consumer frees a slot, FIFO among producers.
 */
export class Ring<T> {
  private readonly buf: (T | undefined)[];
  private head = 0;
  private count = 0;
  /** The consumer, when it found the ring empty and is waiting. */
  private taker: ((item: T) => void) | null = null;
  private putters: Waiter<T>[] = [];
  private putHead = 0;

  constructor(readonly capacity: number) {
    this.buf = new Array<T | undefined>(capacity).fill(undefined);
  }

  put(item: T): Promise<void> | undefined {
    const taker = this.taker;
    if (taker !== null) {
      // The ring is empty and its consumer waits: hand the item over directly.
      this.taker = null;
      taker(item);
      return undefined;
    }
    if (this.count < this.capacity) {
      this.buf[(this.head + this.count) % this.capacity] = item;
      this.count++;
      return undefined;
    }
    return new Promise<void>((resolve) => {
      this.putters.push({ item, resolve });
    });
  }

  /** The oldest item, or undefined when empty (then call {@link take}). */
  poll(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.buf[this.head] as T;
    this.buf[this.head] = undefined;
    this.head = (this.head + 1) % this.capacity;
    this.count--;
    if (this.putHead < this.putters.length) {
      // A slot is free: the longest-waiting producer's item goes in, then it may go on.
      const waiter = this.putters[this.putHead++]!;
      if (this.putHead === this.putters.length) {
        this.putters = [];
        this.putHead = 0;
      }
      this.buf[(this.head + this.count) % this.capacity] = waiter.item;
      this.count++;
      waiter.resolve();
    }
    return item;
  }

  /** Waits for the next item; only for the single consumer, and only after `poll` found none. */
  take(): Promise<T> {
    return new Promise<T>((resolve) => {
      this.taker = resolve;
    });
  }
}

interface Msg {
  /** -1 marks the stop sentinel that shuts the loops down in order. */
  readonly id: number;
  readonly payload: Payload;
}

const STOP: Msg = { id: -1, payload: { n: -1 } };

/** One node: take, run the step, send on (waiting for room), strictly one message at a time. */
async function consume(input: Ring<Msg>, output: Ring<Msg>, step: Step): Promise<void> {
  for (;;) {
    const msg = input.poll() ?? (await input.take());
    if (msg === STOP) {
      await output.put(STOP);
      return;
    }
    const out: Msg = { id: msg.id, payload: await step(msg.payload) };
    const wait = output.put(out);
    if (wait !== undefined) await wait;
  }
}

/** Builds the pipeline `steps[0] → … → steps[k-1]` with rings of `capacity` on every edge. */
export function openRawQueue(steps: readonly Step[], capacity: number): Target {
  // A Map keyed by id, as a real service would match replies (ids are not always dense ints).
  // It is a large share of this baseline's cost: with set/delete churn at C=64, an id-indexed
  // array instead roughly doubled throughput and cut p99 ~10× (shorter scavenges) in a trial.
  const pending = new Map<number, (payload: Payload) => void>();
  const rings = Array.from({ length: steps.length + 1 }, () => new Ring<Msg>(capacity));
  const loops = steps.map((step, i) => consume(rings[i]!, rings[i + 1]!, step));
  const ingress = rings[0]!;
  const egress = rings[steps.length]!;
  // The egress loop: match each result to its submitter by id.
  const replies = (async () => {
    for (;;) {
      const msg = egress.poll() ?? (await egress.take());
      if (msg === STOP) return;
      const resolve = pending.get(msg.id);
      if (resolve === undefined) throw new Error(`raw-queue: reply for unknown message ${msg.id}`);
      pending.delete(msg.id);
      resolve(msg.payload);
    }
  })();
  let seq = 0;
  return {
    submit(payload: Payload): Promise<unknown> {
      const id = seq++;
      const result = new Promise<Payload>((resolve) => pending.set(id, resolve));
      const wait = ingress.put({ id, payload });
      return wait === undefined ? result : wait.then(() => result);
    },
    async close(): Promise<string> {
      const wait = ingress.put(STOP);
      if (wait !== undefined) await wait;
      await Promise.all([...loops, replies]);
      if (pending.size !== 0) throw new Error(`raw-queue: ${pending.size} replies never came`);
      return '';
    },
  };
}
