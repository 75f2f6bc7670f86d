/**
 * HTTP task submission throughput: autocannon against 127.0.0.1 with 64 connections, each
 * request `POST /v1/flows/echo/tasks?wait=5000` with a small JSON body, so every task runs its
 * 1-node flow to completion (and its result comes back) during the measurement. Three servers,
 * each its own process, while autocannon runs in this one:
 *
 *   bare-fastify   a bare Fastify route that parses the same JSON body and answers (lib/http-bare.ts)
 *   roost-memory   `roost serve` (the real CLI, as a deployment runs it: admission, tenant,
 *                  request ids, metrics, events for SSE, JSON logs at info) with store memory:
 *   roost-sqlite   the same with the SQLite journal (store sqlite:<tmp>, synchronous=FULL):
 *                  the 200 comes after the accepted task and its result are committed
 *   roost-memory-uncorrelated  roost-memory with log.correlate = false: no AsyncLocalStorage,
 *                  which on Node 20 taxes every promise of the process (what correlation costs)
 *
 * Rounds are interleaved (every server once per round) and the summary takes medians.
 * Target: roost-memory ≥ 50 % of bare-fastify's requests/s.
 *
 *   npm run bench                                          10 s per run, 3 rounds
 *   BENCH_HTTP_SECONDS=3 BENCH_ROUNDS=1 npm run bench      a quick look
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { envInt, median } from './lib/measure.js';

const SECONDS = envInt('BENCH_HTTP_SECONDS', 10, 1);
const ROUNDS = envInt('BENCH_ROUNDS', 3, 1);
const CONNECTIONS = 64;
const WARMUP_SECONDS = 2;
const BODY = JSON.stringify({ input: { ticket: 'T-1', text: 'I was charged twice, please refund' } });
const PATH = '/v1/flows/echo/tasks?wait=5000';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const MAIN = here('../src/cli/main.js');
const BARE = here('./lib/http-bare.js');
const APP = here('./lib/http-app.js');
const dir = mkdtempSync(join(tmpdir(), 'roost-bench-http-'));

interface Running {
  readonly child: ChildProcess;
  readonly url: string;
}

/** Starts a server process and waits for the line that carries its URL. */
function start(name: string, args: string[], env: Record<string, string>, match: (line: string) => string | null): Promise<Running> {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 30 s`)), 30_000);
    child.on('exit', (code) => reject(new Error(`${name} exited with ${code} before it listened`)));
    child.stdout.on('data', (d: Buffer) => {
      buffer += d.toString('utf8');
      for (let cut = buffer.indexOf('\n'); cut >= 0; cut = buffer.indexOf('\n')) {
        const url = match(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 1);
        if (url !== null) {
          clearTimeout(timer);
          child.stdout.resume(); // keep draining its log lines
          child.stdout.removeAllListeners('data');
          child.stdout.on('data', () => {});
          resolve({ child, url });
          return;
        }
      }
    });
  });
}

function startBare(): Promise<Running> {
  return start('bare-fastify', [BARE], {}, (line) => (line.startsWith('listening ') ? line.slice('listening '.length).trim() : null));
}

let stores = 0;
function startRoost(store: 'memory' | 'sqlite', correlate = true): Promise<Running> {
  const config = join(dir, `roost-${store}-${correlate}.toml`);
  const url = store === 'memory' ? 'memory:' : `sqlite:${join(dir, `journal-${++stores}.db`)}`;
  writeFileSync(
    config,
    [`app = "${APP}"`, '[http]', 'port = 0', '[admission]', 'max_concurrent_tasks = 100000', '[store]', `url = "${url}"`, '[log]', 'level = "info"', `correlate = ${correlate}`, ''].join('\n'),
  );
  return start(`roost-${store}`, [MAIN, 'serve', '--config', config], { ROOST_OWNER: 'bench' }, (line) => {
    try {
      const parsed = JSON.parse(line) as { msg?: string; url?: string };
      return parsed.msg?.startsWith('roost serving') === true && typeof parsed.url === 'string' ? parsed.url : null;
    } catch {
      return null;
    }
  });
}

async function stop(r: Running): Promise<void> {
  const exited = new Promise((resolve) => r.child.on('exit', resolve));
  r.child.kill('SIGTERM');
  await exited;
}

interface Sample {
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly requests: number;
}

async function load(url: string, seconds: number): Promise<Sample> {
  const result = await autocannon({
    url: `${url}${PATH}`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: BODY,
    connections: CONNECTIONS,
    duration: seconds,
  });
  const bad = result.errors + result.timeouts + result.non2xx;
  if (bad > 0) throw new Error(`${url}: ${result.errors} errors, ${result.timeouts} timeouts, ${result.non2xx} non-2xx responses`);
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, requests: result.requests.total };
}

/** Every request must have run its task to the end: the server's own count says so. */
async function finishedTasks(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = /^roost_tasks_finished_total\{flow="echo",status="succeeded"\} (\d+)$/m.exec(text);
  return m === null ? 0 : Number(m[1]);
}

type Name = 'bare-fastify' | 'roost-memory' | 'roost-sqlite' | 'roost-memory-uncorrelated';
const starters: Record<Name, () => Promise<Running>> = {
  'bare-fastify': startBare,
  'roost-memory': () => startRoost('memory'),
  'roost-sqlite': () => startRoost('sqlite'),
  'roost-memory-uncorrelated': () => startRoost('memory', false),
};

async function main(): Promise<void> {
  console.log(`\nhttp: POST ${PATH}, ${CONNECTIONS} connections, ${SECONDS} s per run after ${WARMUP_SECONDS} s of warm-up, ${ROUNDS} interleaved rounds (medians)`);
  console.log('  each server is a process of its own; autocannon runs in this one\n');
  const samples = new Map<Name, Sample[]>();
  const names = Object.keys(starters) as Name[];
  for (let round = 1; round <= ROUNDS; round++) {
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + round - 1) % names.length]!;
      const server = await starters[name]();
      try {
        await load(server.url, WARMUP_SECONDS);
        const before = name === 'bare-fastify' ? 0 : await finishedTasks(server.url);
        const s = await load(server.url, SECONDS);
        if (name !== 'bare-fastify') {
          const ran = (await finishedTasks(server.url)) - before;
          if (ran < s.requests) throw new Error(`${name}: ${s.requests} requests answered but ${ran} tasks finished`);
        }
        (samples.get(name) ?? samples.set(name, []).get(name)!).push(s);
        console.log(`round ${round}  ${name.padEnd(26)} ${Math.round(s.rps).toLocaleString('en-US').padStart(7)} req/s   p50 ${s.p50} ms   p99 ${s.p99} ms`);
      } finally {
        await stop(server);
      }
    }
  }
  const med = (name: Name, key: keyof Sample): number => median(samples.get(name)!.map((s) => s[key]));
  // The ratio of each round (its runs are minutes apart at most), then the median of those: a
  // noisy neighbour on a shared machine skews a round, not the comparison.
  const ratio = (name: Name): number => median(samples.get(name)!.map((s, i) => s.rps / samples.get('bare-fastify')![i]!.rps));
  console.log('\nsummary (medians; the ratio is the median of the per-round ratios)\n');
  for (const name of names) {
    const rps = med(name, 'rps');
    const note = name === 'bare-fastify' ? '' : `   ÷ bare ${ratio(name).toFixed(2)}×${name === 'roost-memory' ? '  (target ≥ 0.50×)' : ''}`;
    console.log(`${name.padEnd(27)} ${Math.round(rps).toLocaleString('en-US').padStart(7)} req/s   p99 ${med(name, 'p99')} ms${note}`);
  }
}

try {
  await main();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
