/** Shared test helpers: a quiet runtime, event capture, and waiting for a condition. */
import { createRuntime, type Runtime, type RuntimeOptions, type RoostEvent } from '../../src/index.js';

/** A started runtime with no logging, closed by `cleanup`. */
export function startRuntime(options: RuntimeOptions = {}): Promise<{ rt: Runtime; events: RoostEvent[] }> {
  const rt = createRuntime({ logger: false, ...options });
  const events: RoostEvent[] = [];
  rt.on((e) => events.push(e));
  return Promise.resolve({ rt, events });
}

/** Waits (real time) until `check` is true, or fails after `timeoutMs`. */
export async function until(check: () => boolean, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** A promise with its resolve function outside. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets pending microtasks and immediate callbacks run. */
export function tick(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/** The types of `events` for `traceId`, in order. */
export function typesOf(events: readonly RoostEvent[], traceId?: string): string[] {
  return events.filter((e) => traceId === undefined || ('traceId' in e && e.traceId === traceId)).map((e) => e.type);
}

/** Calls `get` (real time) until `check` holds for what it returned; returns that, or fails after `timeoutMs`. */
export async function eventually<T>(get: () => Promise<T>, check: (value: T) => boolean, timeoutMs = 5_000, what = 'condition'): Promise<T> {
  const start = Date.now();
  for (;;) {
    const value = await get();
    if (check(value)) return value;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(value)?.slice(0, 300)})`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

