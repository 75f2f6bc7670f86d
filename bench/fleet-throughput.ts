/**
 * Fleet throughput (issue 6): one agent with an I/O-bound handler — flow `fleetbench`, one node
 * `work` that waits 2 ms on a timer and returns (bench/lib/fleet-app.ts) — on 1, 2 and 4 worker
 * processes, over MQTT and over NATS.
 *
 *   owner     this process: a runtime with `fleet.remote: ['fleetbench/work']` and NO STORE (no
 *             journal, no PostgreSQL: what is measured is the fleet's path, not the journal's), a
 *             fresh random namespace per measurement; `fleet.maxInFlight` = C, so the owner never
 *             holds back what the closed loop sends.
 *   workers   N child processes (bench/lib/fleet-worker.ts, compiled under build/bench, started
 *             with node; each prints a ready line), role `worker`, hosting the node with policy
 *             concurrency c per worker. They leave when the bench closes their stdin (so also
 *             when the bench dies); any still there 5 s later, or when the bench fails or is
 *             interrupted, are SIGKILLed (an exit hook kills whatever is left).
 *   brokers   the machine's shared Mosquitto (mqtt://127.0.0.1:1883, its stock config: no
 *             `set_tcp_nodelay`) and NATS (nats://127.0.0.1:4222); BENCH_MQTT_URL and
 *             BENCH_NATS_URL point elsewhere.
 *
 * The load: a closed loop of C = 2 × c × N traces in flight (`flow.emit` then `flow.fetch`, every
 * result checked). Twice the fleet's run slots, so each worker holds one task waiting for each one
 * running and no slot idles during the round trip to the owner and back; and C grows with N, so
 * each N is offered the same load per worker. (On MQTT a worker reads at most its receive
 * maximum, 64, at once: ≥ 2 × c for both c below.) By Little's law the ideal latency is 4 ms.
 *
 * Two per-worker concurrencies, because one cannot show both things worth knowing on this machine:
 *
 *   c = 4     handler-bound: the ideal is 2,000 traces/s per worker, 8,000/s at N = 4, which this
 *             machine's CPU can carry; here efficiency says whether the fleet itself scales
 *             (dispatch, the group's spread over workers, the owner).
 *   c = 32    CPU-bound: the ideal is 16,000/s per worker, past what one owner, one broker and the
 *             workers can do on 2 cores; here the figures are the ceiling, and efficiency falls
 *             with N because the machine has no more to give, not because the fleet stops scaling.
 *
 * Each measurement: spawn, a warm-up (BENCH_FLEET_WARMUP_MS, 1,500 ms), then BENCH_FLEET_WINDOWS
 * (3) windows of BENCH_FLEET_WINDOW_MS (1,500 ms); the figures are medians over the windows
 * (spread = (max − min) / median of traces/s). Latency is emit → fetch of the traces that finished
 * in a window.
 *
 * Efficiency against linear is throughput(N) / (N × throughput(1)), same mode and c. The
 * baselines beside it, and why both:
 *
 *   ideal       N × c / 2 ms: what the handler allows if nothing else costs anything. Nothing
 *               reaches it (a 2 ms setTimeout takes a little over 2 ms, and every trace costs
 *               CPU), but it does not move with the machine: fleet ÷ ideal is how far from the
 *               handler's own limit the fleet is.
 *   in-process  the same flow and handler in one runtime (no fleet, no broker) with the same total
 *               concurrency N × c and the same C: the same work without distribution, measured
 *               on the same machine at the same time. fleet ÷ in-process is the price of the fleet.
 *
 * A handler that waits on a timer uses no CPU, so the ideal grows with N for free; a fleet does
 * not: each trace costs CPU in the owner (the trace, the dispatch, 1 publish, 2 receives: the
 * acknowledgement, which a worker sends for all the tasks it took in one turn, and the answer), in
 * the worker (a receive, the run, the publishes) and in the broker (its messages). This machine
 * has 2 cores, shared with other work, for the owner, the broker and up to 4 workers: once they
 * need 2 cores, more workers add nothing. So the report prints the CPU the bench's processes used
 * per trace and in cores, and how busy the whole machine was: a flat line can be read for what it
 * is. The CPU per trace moves far less with the neighbours' load than traces/s does.
 *
 *   npm run bench                                     (runs this last)
 *   node build/bench/bench/fleet-throughput.js        after `tsc -p bench/tsconfig.json && node scripts/copy-assets.mjs bench`
 *   BENCH_TRANSPORTS=nats …                           only these transports (comma-separated: mqtt, nats)
 *   BENCH_FLEET_WORKERS=1,2 …                         only these worker counts
 *   BENCH_FLEET_CONCURRENCY=32 …                      only these per-worker concurrencies (C follows)
 *   node --cpu-prof … with BENCH_FLEET_WORKER_ARGS='--cpu-prof --cpu-prof-dir=/tmp/p'   profiles the owner and the workers
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { createRuntime, type Runtime } from '../src/index.js';
import { requireBroker } from '../test/helpers/brokers.js';
import { FLOW, HANDLER_MS, NODE_REF, POLICY, setupFleetBench } from './lib/fleet-app.js';
import { envInt, median, percentile, settleHeap, type Payload } from './lib/measure.js';
import { fixed, int, ratio, table } from './lib/format.js';

const WARMUP_MS = envInt('BENCH_FLEET_WARMUP_MS', 1_500, 0);
const WINDOW_MS = envInt('BENCH_FLEET_WINDOW_MS', 1_500, 100);
const WINDOWS = envInt('BENCH_FLEET_WINDOWS', 3, 1);

function intList(name: string, fallback: string, max: number): number[] {
  return (process.env[name] ?? fallback).split(',').map((s) => {
    const n = Number(s.trim());
    if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`${name}: ${JSON.stringify(s)} is not an integer from 1 to ${max}`);
    return n;
  });
}
const WORKERS = intList('BENCH_FLEET_WORKERS', '1,2,4', 16);
/** Node policy concurrency per worker process (see the module comment for the two). */
const CONCURRENCIES = intList('BENCH_FLEET_CONCURRENCY', '4,32', 1_000);
/** Traces in flight per worker: twice its run slots (see the module comment). */
const perWorkerC = (concurrency: number): number => 2 * concurrency;
type Kind = 'mqtt' | 'nats';
const TRANSPORTS = (process.env['BENCH_TRANSPORTS'] ?? 'mqtt,nats').split(',').map((t) => t.trim());
for (const t of TRANSPORTS) {
  if (t !== 'mqtt' && t !== 'nats') throw new Error(`BENCH_TRANSPORTS: unknown transport ${JSON.stringify(t)} (expected mqtt, nats)`);
}
const URLS: Record<Kind, string> = {
  mqtt: process.env['BENCH_MQTT_URL'] ?? 'mqtt://127.0.0.1:1883',
  nats: process.env['BENCH_NATS_URL'] ?? 'nats://127.0.0.1:4222',
};
const WORKER_JS = fileURLToPath(new URL('./lib/fleet-worker.js', import.meta.url));
/** Node options for the worker processes (to profile them: `--cpu-prof --cpu-prof-dir=<dir>`). */
const WORKER_NODE_ARGS = (process.env['BENCH_FLEET_WORKER_ARGS'] ?? '').split(' ').filter((a) => a !== '');
const READY_TIMEOUT_MS = 30_000;
/** The ideal the handler allows: every run slot busy, each run exactly HANDLER_MS. */
const ideal = (n: number, concurrency: number): number => (n * concurrency * 1000) / HANDLER_MS;

// ---- worker processes ---------------------------------------------------------------------------

interface WorkerStatsLine {
  readonly completed: number;
  readonly failed: number;
  readonly busy: number;
  readonly duplicates: number;
  readonly published: number;
  readonly cpuUs: number;
}

interface Child {
  readonly id: string;
  readonly proc: ChildProcess;
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  stats(): Promise<WorkerStatsLine>;
}

/** Every child not yet known to have exited: killed on any way out of this process. */
const children = new Set<Child>();

function killAll(): void {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
}
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killAll();
    process.exit(130);
  });
}

function spawnWorker(url: string, ns: string, id: string, concurrency: number): Child {
  const proc = spawn(process.execPath, [...WORKER_NODE_ARGS, WORKER_JS, url, ns, id, String(concurrency)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  const waiting: ((s: WorkerStatsLine) => void)[] = [];
  let onReady: () => void = () => {};
  let onFail: (error: Error) => void = () => {};
  const ready = new Promise<void>((resolve, reject) => {
    onReady = resolve;
    onFail = reject;
  });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  let buffer = '';
  proc.stdout.on('data', (chunk: Buffer) => {
    buffer += chunk.toString();
    let i;
    while ((i = buffer.indexOf('\n')) >= 0) {
      const text = buffer.slice(0, i);
      buffer = buffer.slice(i + 1);
      let line: Record<string, unknown>;
      try {
        line = JSON.parse(text) as Record<string, unknown>;
      } catch {
        continue;
      }
      if (line['ready'] === true) onReady();
      if (line['stats'] !== undefined) waiting.shift()?.(line['stats'] as WorkerStatsLine);
    }
  });
  proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  proc.stdin.on('error', () => {}); // a child that died: its exit says so
  proc.once('exit', (code, signal) => onFail(new Error(`worker ${id} exited (${code ?? signal}) before it was ready: ${stderr.trim()}`)));
  const timer = setTimeout(() => onFail(new Error(`worker ${id} was not ready within ${READY_TIMEOUT_MS} ms: ${stderr.trim()}`)), READY_TIMEOUT_MS);
  void ready.then(
    () => clearTimeout(timer),
    () => clearTimeout(timer),
  );
  const child: Child = {
    id,
    proc,
    ready,
    exited,
    stats() {
      return new Promise<WorkerStatsLine>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`worker ${id} sent no stats within 5,000 ms`)), 5_000);
        waiting.push((s) => {
          clearTimeout(t);
          resolve(s);
        });
        proc.stdin.write('stats\n');
      });
    },
  };
  children.add(child);
  void exited.then(() => children.delete(child));
  return child;
}

/** Closes the workers' stdin (they close their runtime and exit); SIGKILL for any still there after 5 s. */
async function stopWorkers(ws: readonly Child[]): Promise<void> {
  for (const w of ws) w.proc.stdin!.end();
  const timer = setTimeout(() => {
    for (const w of ws) if (w.proc.exitCode === null && w.proc.signalCode === null) w.proc.kill('SIGKILL');
  }, 5_000);
  await Promise.all(ws.map((w) => w.exited));
  clearTimeout(timer);
}

// ---- the load -----------------------------------------------------------------------------------

/** The machine's CPU times now (all cores, ms): busy and total. */
function machineCpu(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const c of cpus()) {
    const t = c.times;
    busy += t.user + t.nice + t.sys + t.irq;
    total += t.user + t.nice + t.sys + t.irq + t.idle;
  }
  return { busy, total };
}

// ---- the broker's CPU ---------------------------------------------------------------------------

/**
 * The process listening on `port` (the broker), found through /proc (Linux): the listening
 * socket's inode in /proc/net/tcp, then the process holding it. Null when it cannot be found.
 */
function listenerPid(port: number): number | null {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const inodes = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const row of text.split('\n').slice(1)) {
      const f = row.trim().split(/\s+/);
      if (f.length > 9 && f[1]!.endsWith(hex) && f[3] === '0A') inodes.add(f[9]!); // 0A: listening
    }
  }
  if (inodes.size === 0) return null;
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return null;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
        if (inode !== undefined && inodes.has(inode)) return Number(pid);
      } catch {
        // gone meanwhile
      }
    }
  }
  return null;
}

/** CPU time (user + system) of process `pid` so far, ms, or NaN (clock ticks of 10 ms, as on Linux). */
function processCpuMs(pid: number | null): number {
  if (pid === null) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from the 3rd on (the name may hold spaces)
    return (Number(f[11]) + Number(f[12])) * 10; // utime, stime (fields 14 and 15)
  } catch {
    return NaN;
  }
}

function brokerPid(url: string): number | null {
  const u = new URL(url);
  if (u.hostname !== '127.0.0.1' && u.hostname !== 'localhost') return null;
  return listenerPid(Number(u.port === '' ? (u.protocol === 'mqtt:' ? 1883 : 4222) : u.port));
}

interface Window {
  readonly traces: number;
  readonly ms: number;
  readonly rate: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** CPU of the owner and of the workers, µs per trace. */
  readonly ownerCpuUs: number;
  readonly workersCpuUs: number;
  /** Cores the bench's processes used (owner + workers). */
  readonly cores: number;
  /** Cores the broker used (for all its clients: it is shared), NaN when unknown. */
  readonly brokerCores: number;
  /** The whole machine's busy share, 0…1. */
  readonly machineBusy: number;
  /** Messages the workers sent (to the owner) per task they completed. */
  readonly workerMsgs: number;
  /** Tasks completed by each worker in the window. */
  readonly split: readonly number[];
}

/** C closed-loop drivers: each emits a trace, waits for its result, checks it, and goes again. */
class ClosedLoop {
  private running = true;
  private completed = 0;
  private recording = false;
  private latencies: number[] = [];
  private failure: Error | null = null;
  private readonly drivers: Promise<void>[];

  constructor(submit: () => Promise<unknown>, c: number) {
    const driver = async (): Promise<void> => {
      while (this.running) {
        const t0 = performance.now();
        let result: unknown;
        try {
          result = await submit();
        } catch (error) {
          this.fail(error instanceof Error ? error : new Error(String(error)));
          return;
        }
        if ((result as Payload | null)?.n !== 1) {
          this.fail(new Error(`a trace returned ${JSON.stringify(result)}, expected { n: 1 }`));
          return;
        }
        if (this.recording) this.latencies.push(performance.now() - t0);
        this.completed++;
      }
    };
    this.drivers = Array.from({ length: c }, driver);
  }

  private fail(error: Error): void {
    this.failure ??= error;
    this.running = false;
  }

  /** Runs the load for `ms` without measuring. */
  async warm(ms: number): Promise<void> {
    await sleep(ms);
    if (this.failure !== null) throw this.failure;
  }

  async window(ms: number, workers: readonly Child[], broker: number | null): Promise<Window> {
    const before = await Promise.all(workers.map((w) => w.stats()));
    const b0 = processCpuMs(broker);
    this.latencies = [];
    const c0 = this.completed;
    const cpu0 = process.cpuUsage();
    const m0 = machineCpu();
    const t0 = performance.now();
    this.recording = true;
    await sleep(ms);
    this.recording = false;
    const elapsed = performance.now() - t0;
    const traces = this.completed - c0;
    const cpu = process.cpuUsage(cpu0);
    const m1 = machineCpu();
    const b1 = processCpuMs(broker);
    const after = await Promise.all(workers.map((w) => w.stats()));
    if (this.failure !== null) throw this.failure;
    // The workers' stats are read just outside the window: their CPU is scaled to it by the time
    // between the two reads (close to the window: a stats round trip is well under a millisecond).
    const ownerUs = cpu.user + cpu.system;
    const workersUs = after.reduce((s, a, i) => s + a.cpuUs - before[i]!.cpuUs, 0);
    const sorted = Float64Array.from(this.latencies).sort();
    return {
      traces,
      ms: elapsed,
      rate: traces / (elapsed / 1000),
      p50Ms: percentile(sorted, 0.5),
      p99Ms: percentile(sorted, 0.99),
      ownerCpuUs: ownerUs / traces,
      workersCpuUs: workers.length === 0 ? 0 : workersUs / traces,
      cores: (ownerUs + workersUs) / 1000 / elapsed,
      brokerCores: (b1 - b0) / elapsed,
      machineBusy: (m1.busy - m0.busy) / (m1.total - m0.total),
      workerMsgs: after.reduce((s, a, i) => s + a.published - before[i]!.published, 0) / after.reduce((s, a, i) => s + a.completed - before[i]!.completed, 0),
      split: after.map((a, i) => a.completed - before[i]!.completed),
    };
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.drivers);
    if (this.failure !== null) throw this.failure;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Every trace of the run must have succeeded, none left behind. */
function checkFlow(rt: Runtime, what: string): string {
  const fs = rt.getFlow(FLOW)!.stats();
  const rs = rt.stats();
  const problems: string[] = [];
  if (fs.failed !== 0 || fs.cancelled !== 0) problems.push(`${fs.failed} failed, ${fs.cancelled} cancelled traces`);
  if (fs.activeTraces !== 0 || rs.inFlightTraces !== 0) problems.push(`${rs.inFlightTraces} traces still in flight`);
  if (rs.deadLetters !== 0) problems.push(`${rs.deadLetters} dead letters`);
  if (problems.length > 0) throw new Error(`${what}: ${problems.join('; ')}`);
  return `${int(fs.succeeded)} ok`;
}

// ---- the measurements ---------------------------------------------------------------------------

interface Result {
  readonly mode: 'in-process' | Kind;
  /** Per worker (in-process: per N, the runtime runs N × this). */
  readonly concurrency: number;
  readonly workers: number;
  readonly c: number;
  readonly windows: readonly Window[];
  readonly note: string;
}

async function measureLoad(rt: Runtime, c: number, workers: readonly Child[], broker: number | null): Promise<Window[]> {
  const flow = rt.getFlow(FLOW)!;
  const loop = new ClosedLoop(async () => {
    const { traceId } = await flow.emit({ n: 0 } satisfies Payload);
    return flow.fetch(traceId);
  }, c);
  const windows: Window[] = [];
  try {
    await loop.warm(WARMUP_MS);
    for (let i = 0; i < WINDOWS; i++) windows.push(await loop.window(WINDOW_MS, workers, broker));
  } finally {
    await loop.stop();
  }
  return windows;
}

async function inProcess(n: number, concurrency: number): Promise<Result> {
  const c = n * perWorkerC(concurrency);
  const rt = createRuntime({ logger: false });
  setupFleetBench(rt, n * concurrency, 64);
  await rt.start();
  settleHeap();
  try {
    const windows = await measureLoad(rt, c, [], null);
    return { mode: 'in-process', concurrency, workers: n, c, windows, note: checkFlow(rt, `in-process ×${n}`) };
  } finally {
    await rt.close();
  }
}

async function fleet(kind: Kind, n: number, concurrency: number): Promise<Result> {
  const c = n * perWorkerC(concurrency);
  const url = URLS[kind];
  const ns = `fb${randomBytes(4).toString('hex')}`;
  const ws = Array.from({ length: n }, (_, i) => spawnWorker(url, ns, `${ns}-w${i + 1}`, concurrency));
  let rt: Runtime | null = null;
  try {
    await Promise.all(ws.map((w) => w.ready));
    rt = createRuntime({
      logger: false,
      owner: `${ns}-owner`,
      drainTimeoutMs: 2_000,
      fleet: { transport: url, namespace: ns, id: `${ns}-owner`, remote: [NODE_REF], maxInFlight: c },
    });
    setupFleetBench(rt, concurrency, 64); // the owner runs the remote node fleet.maxInFlight at once
    await rt.start();
    settleHeap();
    const windows = await measureLoad(rt, c, ws, brokerPid(url));
    const note = checkFlow(rt, `${kind} ×${n}`);
    const d = rt.fleet!.stats().dispatcher!;
    const extra = [d.redelivered > 0 ? `${d.redelivered} redelivered` : '', d.late > 0 ? `${d.late} late` : '', d.dropped > 0 ? `${d.dropped} dropped` : ''].filter((s) => s !== '');
    return { mode: kind, concurrency, workers: n, c, windows, note: [note, ...extra].join(', ') };
  } finally {
    await rt?.close();
    await stopWorkers(ws);
  }
}

// ---- the report ---------------------------------------------------------------------------------

const med = (r: Result, f: (w: Window) => number): number => median(r.windows.map(f));
const spreadOf = (r: Result): number => {
  const rates = r.windows.map((w) => w.rate);
  return ((Math.max(...rates) - Math.min(...rates)) / median(rates)) * 100;
};
const splitOf = (r: Result): string => {
  if (r.workers === 1 || r.mode === 'in-process') return '';
  const totals = r.windows.reduce<number[]>((acc, w) => acc.map((x, i) => x + (w.split[i] ?? 0)), new Array<number>(r.workers).fill(0));
  const sum = totals.reduce((a, b) => a + b, 0);
  return totals.map((t) => `${fixed((t / sum) * 100, 0)}%`).join('/');
};

function sampleLine(r: Result): string {
  const broker = (w: Window): string => (Number.isNaN(w.brokerCores) ? '' : ` + broker ${fixed(w.brokerCores, 2)}`);
  const ws = r.windows.map((w) => `${int(w.rate)}/s p50 ${fixed(w.p50Ms, 1)} p99 ${fixed(w.p99Ms, 1)} ms, ${fixed(w.cores, 2)}${broker(w)} cores, machine ${fixed(w.machineBusy * 100, 0)}%`);
  return `  ${r.mode.padEnd(10)} c=${String(r.concurrency).padEnd(2)} N=${r.workers} C=${String(r.c).padEnd(3)}  ${ws.join(' | ')}  (${r.note})`;
}

function summary(results: readonly Result[]): string {
  const same = (r: Result, mode: Result['mode'], n: number): Result | undefined => results.find((x) => x.mode === mode && x.workers === n && x.concurrency === r.concurrency);
  const rows = results.map((r) => {
    const thr = med(r, (w) => w.rate);
    const r1 = same(r, r.mode, 1);
    const eff = r1 === undefined ? NaN : thr / (r.workers * med(r1, (w) => w.rate));
    const inproc = same(r, 'in-process', r.workers);
    const inprocThr = inproc === undefined ? NaN : med(inproc, (w) => w.rate);
    const isFleet = r.mode !== 'in-process';
    const best = ideal(r.workers, r.concurrency);
    return [
      r.mode,
      String(r.concurrency),
      String(r.workers),
      String(r.c),
      int(thr),
      `${fixed(spreadOf(r), 0)}%`,
      fixed(med(r, (w) => w.p50Ms), 1),
      fixed(med(r, (w) => w.p99Ms), 1),
      fixed(eff, 2),
      int(best),
      ratio(thr / best),
      isFleet ? int(inprocThr) : '',
      isFleet ? ratio(thr / inprocThr) : '',
      fixed(med(r, (w) => w.ownerCpuUs), 0),
      isFleet ? fixed(med(r, (w) => w.workersCpuUs), 0) : '',
      isFleet ? fixed(med(r, (w) => w.workerMsgs), 2) : '',
      fixed(med(r, (w) => w.cores), 2),
      isFleet ? fixed(med(r, (w) => w.brokerCores), 2) : '',
      `${fixed(med(r, (w) => w.machineBusy) * 100, 0)}%`,
      splitOf(r),
    ];
  });
  return table(
    ['mode', 'c', 'N', 'C', 'traces/s', 'spread', 'p50 ms', 'p99 ms', 'eff. vs linear', 'ideal/s', '÷ ideal', 'in-process/s', '÷ in-process', 'owner µs/trace', 'workers µs/trace', 'worker msgs/task', 'cores used', 'broker cores', 'machine busy', 'split'],
    rows,
    1,
  );
}

async function main(): Promise<void> {
  const cpu = cpus();
  const maxN = Math.max(...WORKERS);
  console.log(`\nfleet throughput: node ${process.version}, ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, load average ${loadavg().map((l) => fixed(l, 2)).join(' ')}`);
  console.log(
    `  one agent, flow ${FLOW}: node ${NODE_REF} waits ${HANDLER_MS} ms (setTimeout) and returns; policy timeoutMs ${POLICY.timeoutMs}, retries ${POLICY.retries}; ` +
      `per-worker concurrency c ∈ {${CONCURRENCIES.join(', ')}}; owner = this process, no store (no journal, no PostgreSQL), a fresh random namespace per measurement`,
  );
  console.log(
    `  closed loop of C = 2 × c × N traces in flight (twice the fleet's run slots), fleet.maxInFlight = C; warm-up ${int(WARMUP_MS)} ms, then ${WINDOWS} windows of ${int(WINDOW_MS)} ms (medians); ` +
      'latency = emit → fetch',
  );
  console.log(`  brokers: ${TRANSPORTS.map((t) => `${t} ${URLS[t as Kind]}`).join(', ')} (the machine's shared ones: other work on them and on the CPU shows as noise)`);
  console.log('  baselines: ideal = N × c / 2 ms; in-process = the same flow in one runtime, concurrency N × c, the same C');
  if (maxN + 2 > cpu.length) {
    console.log(
      `  note: ${cpu.length} cores for the owner, the broker and up to ${maxN} workers (and the machine's other work). Where they need more than that, more workers add no ` +
        'throughput: efficiency < 1 is then the machine, not the fleet (see cores used, machine busy). A small c keeps the ideal within what it carries; a large one does not.',
    );
  }
  for (const t of TRANSPORTS) await requireBroker(t as Kind, URLS[t as Kind]);

  const results: Result[] = [];
  console.log('\nwindows (printed as measured)\n');
  for (const concurrency of CONCURRENCIES) {
    for (const n of WORKERS) {
      const r = await inProcess(n, concurrency);
      results.push(r);
      console.log(sampleLine(r));
      for (const t of TRANSPORTS) {
        const f = await fleet(t as Kind, n, concurrency);
        results.push(f);
        console.log(sampleLine(f));
      }
    }
  }
  const order = (r: Result): number => CONCURRENCIES.indexOf(r.concurrency) * 10_000 + (r.mode === 'in-process' ? 0 : TRANSPORTS.indexOf(r.mode) + 1) * 100 + r.workers;
  results.sort((a, b) => order(a) - order(b));
  console.log(
    `\nsummary: medians over ${WINDOWS} windows. c = concurrency per worker, N = workers, C = traces in flight; eff. vs linear = traces/s(N) ÷ (N × traces/s(1)), same mode and c; ` +
      'spread = (max − min) / median of traces/s; owner / workers µs/trace = CPU (user + system) of the owner / of all workers per trace; worker msgs/task = what the workers ' +
      'sent the owner per task (answers, acknowledgements, beats); cores used = owner + workers; broker cores = the broker process (all its clients: it is shared; — when not found); machine busy = all cores, everything on the machine; split = tasks per worker',
  );
  for (const concurrency of CONCURRENCIES) {
    console.log(`\nc = ${concurrency}: ideal ${WORKERS.map((n) => int(ideal(n, concurrency))).join(', ')} traces/s at N = ${WORKERS.join(', ')}\n`);
    console.log(summary(results.filter((r) => r.concurrency === concurrency)));
  }
}

try {
  await main();
} catch (error) {
  console.error(error);
  process.exitCode = 1;
} finally {
  killAll();
}
// A failed measurement may leave connections open (and reconnecting): end here.
if (process.exitCode === 1) process.exit(1);
