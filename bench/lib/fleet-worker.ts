/**
 * A worker process of the fleet benchmark (bench/fleet-throughput.ts spawns it, compiled, with
 * node): hosts `fleetbench/work` for the fleet, no store.
 *
 *   node build/bench/bench/lib/fleet-worker.js <transport URL> <namespace> <id> <concurrency>
 *
 * Prints JSON lines on stdout: `{"ready":true}` once it takes tasks; `{"stats":…}` (the worker's
 * counters, the messages its transport published and this process's CPU time, µs) for each `stats` line read on stdin. It leaves when
 * stdin ends (the bench closed it, or the bench died: no worker outlives it), on SIGTERM and on
 * SIGINT.
 */
import { createInterface } from 'node:readline';
import { createRuntime } from '../../src/index.js';
import { NODE_REF, setupFleetBench } from './fleet-app.js';

const [transport, namespace, id, concurrencyText] = process.argv.slice(2) as [string, string, string, string];
const concurrency = Number(concurrencyText);
const report = (line: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(line)}\n`);
};

const rt = createRuntime({
  logger: false,
  owner: id,
  drainTimeoutMs: 1_000,
  fleet: { transport, namespace, id, role: 'worker', host: [NODE_REF] },
});
setupFleetBench(rt, concurrency, 64);

let stopping = false;
const stop = (code: number): void => {
  if (stopping) return;
  stopping = true;
  const force = setTimeout(() => process.exit(code), 3_000);
  force.unref();
  void rt.close().finally(() => process.exit(code));
};
process.on('SIGTERM', () => stop(0));
process.on('SIGINT', () => stop(0));

const input = createInterface({ input: process.stdin });
input.on('line', (text) => {
  if (text.trim() !== 'stats') return;
  const cpu = process.cpuUsage();
  report({ stats: { ...rt.fleet!.stats().worker, published: rt.fleet!.transport.stats().published, cpuUs: cpu.user + cpu.system } });
});
input.on('close', () => stop(0));

try {
  await rt.start();
} catch (error) {
  process.stderr.write(`worker ${id} did not start: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
}
report({ ready: true });
