/**
 * What every variant shares: the message shape, the step each node runs, the closed-loop driver
 * that keeps C submit→result operations in flight, and the statistics. Keeping the driver common
 * means the variants differ only in what sits between `submit` and its result.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** The message every node takes and returns. */
export interface Payload {
  readonly n: number;
}

/** One node's work: async, so every variant pays at least one promise per node. */
export type Step = (payload: Payload) => Promise<Payload>;

/**
 * The node body every variant runs: `{ n } → { n: n + 1 }`. Deliberately an `async` function
 * without `await`: that is what a real agent handler is, and the brief asks for async nodes.
 */
// eslint-disable-next-line @typescript-eslint/require-await
export const inc: Step = async (payload) => ({ n: payload.n + 1 });

/** One set-up instance of a variant, fresh for each measurement so no state carries over. */
export interface Target {
  /** Sends one message in; resolves with the flow's result for it. */
  submit(payload: Payload): Promise<unknown>;
  /** Tears down and checks the instance's own counters; returns a note for the report ('' for none). */
  close(): Promise<string>;
}

export interface Variant {
  readonly name: string;
  open(): Promise<Target>;
}

/** One measurement: one variant, one concurrency, one round. */
export interface Sample {
  readonly variant: string;
  readonly concurrency: number;
  readonly round: number;
  readonly elapsedMs: number;
  readonly msgsPerSec: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly note: string;
}

function isPayload(value: unknown): value is Payload {
  return typeof value === 'object' && value !== null && typeof (value as { n?: unknown }).n === 'number';
}

/**
 * Pushes `messages` messages through `target` from `concurrency` closed-loop drivers, writing
 * each message's submit→result latency (µs) into `latencies[0 … messages)`, and checks every
 * result is `{ n: expected }`. Returns the wall time of the whole batch in ms.
 */
export async function drive(
  target: Target,
  messages: number,
  concurrency: number,
  expected: number,
  latencies: Float64Array,
): Promise<number> {
  let next = 0;
  const driver = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= messages) return;
      const t0 = performance.now();
      const result = await target.submit({ n: 0 });
      latencies[i] = (performance.now() - t0) * 1000;
      // Every result is checked: a fast wrong pipeline must not post a number.
      if (!isPayload(result) || result.n !== expected) {
        throw new Error(`message ${i}: expected { n: ${expected} }, got ${JSON.stringify(result)}`);
      }
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, messages) }, driver));
  return performance.now() - start;
}

/**
 * Runs one measurement on a fresh instance of `variant`. `latencies` is reused (and sorted).
 *
 * With `warmup` > 0 the instance first takes that many messages, unmeasured. The full GC that
 * starts a measurement collects the previous instance, and V8 then throws away the optimized
 * code that had that instance's objects built in: without this, the first few thousand
 * messages of every measurement ran unoptimized at 4–5× their steady cost, which was most of a
 * variant's p99 at C = 1 and several percent of its throughput. Measured is the steady state a
 * long-lived process runs in.
 */
export async function measure(
  variant: Variant,
  concurrency: number,
  messages: number,
  round: number,
  expected: number,
  latencies: Float64Array,
  warmup = 0,
): Promise<Sample> {
  const target = await variant.open();
  settleHeap(); // start every measurement from a collected heap, not the last variant's garbage
  if (warmup > 0) {
    await drive(target, warmup, concurrency, expected, latencies);
    settleHeap(); // the warm-up's garbage is not the measurement's
  }
  const elapsedMs = await drive(target, messages, concurrency, expected, latencies);
  const note = await target.close();
  const sorted = latencies.subarray(0, messages).sort();
  return {
    variant: variant.name,
    concurrency,
    round,
    elapsedMs,
    msgsPerSec: messages / (elapsedMs / 1000),
    p50Us: percentile(sorted, 0.5),
    p99Us: percentile(sorted, 0.99),
    note,
  };
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.max(1, Math.ceil(p * sorted.length));
  return sorted[rank - 1]!;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * A full GC between measurements. Setting `--expose-gc` at run time and fetching `gc` from a
 * fresh context is the documented V8 escape hatch, so the benchmarks need no node flags however
 * they are started. Falls back to nothing if V8 refuses.
 */
const gc: (() => void) | null = (() => {
  try {
    // Forced full GCs every few hundred ms age code the way a long-running process never does:
    // V8 drops the bytecode and type feedback of functions unused for a few full GCs, so each
    // measurement re-learned paths its variant's last instance had learned (the idempotency
    // window's eviction, say) and deoptimized on them mid-run.
    setFlagsFromString('--no-flush-bytecode');
    setFlagsFromString('--expose-gc');
    const fn: unknown = runInNewContext('gc');
    return typeof fn === 'function' ? (fn as () => void) : null;
  } catch {
    return null;
  }
})();

export function settleHeap(): void {
  gc?.();
}

export const gcAvailable = gc !== null;

/** An integer setting of a benchmark from the environment (`BENCH_…`), or `fallback`. */
export function envInt(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer ≥ ${min}, got ${JSON.stringify(raw)}`);
  return value;
}
