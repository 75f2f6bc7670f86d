import { createRuntime, node, type Envelope } from '../src/index.js';

/** A stand-in for an orders service: answers in 20 ms, and stops when the run is aborted. */
function lookUpOrder(id: string, signal: AbortSignal): Promise<{ id: string; total: number }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve({ id, total: 4200 }), 20);
    const stop = (): void => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', stop, { once: true });
  });
}

const runtime = createRuntime();
const fetchOrder = node('fetch-order', (env: Envelope<{ id: string }>, ctx) => lookUpOrder(env.payload.id, ctx.signal), {
  timeoutMs: 2_000,
  retries: 2,
  backoff: { baseMs: 100 },
});
const summarise = node('summarise', (env: Envelope<{ total: number }>) => `total ${env.payload.total}`);

const flow = runtime.flow({ name: 'orders', edges: [fetchOrder.to(summarise)] });
await runtime.start();

const { traceId } = await flow.emit({ id: 'A-17' }, { tenant: 'acme', deadline: Date.now() + 5_000, idempotencyKey: 'A-17' });
console.log(await flow.fetch(traceId)); // "total 4200", or it rejects with a RoostError
await runtime.close(); // graceful drain, then stop
