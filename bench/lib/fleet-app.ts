/**
 * The app of the fleet benchmark, loaded by the owner (the bench process) and by every worker
 * process alike, as a fleet requires: flow `fleetbench`, one handler node `work` that waits
 * `HANDLER_MS` on a timer (an I/O-bound agent: a model or HTTP call stands in) and returns
 * `{ n: n + 1 }`.
 */
import { node, type Envelope, type HandlerContext, type Runtime } from '../../src/index.js';
import type { Payload } from './measure.js';

export const FLOW = 'fleetbench';
export const NODE = 'work';
export const NODE_REF = `${FLOW}/${NODE}`;
/** The handler's wait, ms. */
export const HANDLER_MS = 2;
/** The node's timeout and retries, as a production node would have (a retry would show as a failed trace count ≠ 0). */
export const POLICY = { timeoutMs: 5_000, retries: 2 } as const;

function wait(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

async function work(env: Envelope<Payload>, ctx: HandlerContext): Promise<Payload> {
  await wait(HANDLER_MS, ctx.signal);
  return { n: env.payload.n + 1 };
}

/**
 * Adds the flow to `rt`. `concurrency` is the node's policy: the runs at once of a process that
 * runs it (a worker, or the in-process baseline); on the owner of a fleet the remote node's runs
 * at once are `fleet.maxInFlight` instead. `queueCapacity` bounds the ingress edge.
 */
export function setupFleetBench(rt: Runtime, concurrency: number, queueCapacity: number): void {
  const n = node(NODE, work, { ...POLICY, concurrency });
  rt.flow({ name: FLOW, edges: [n.to()], queueCapacity });
}
