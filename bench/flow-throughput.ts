/**
 * Flow throughput and latency: a 3-node linear flow (each node `{ n } → { n: n + 1 }`, so
 * input 0 must come out as 3) run three ways —
 *
 *   raw-async  `await n3(await n2(await n1(x)))`: the floor, no queues at all;
 *   raw-queue  hand-written bounded rings + one consumer loop per node: what the same
 *              architecture costs without a runtime;
 *   roost      Roost with a realistic production configuration (see lib/roost.ts).
 *
 * at C = 1 and C = 64 messages in flight. Rounds are interleaved (every variant once per round,
 * the order rotated each round) and the summary takes medians over rounds, so a noisy moment on
 * a shared machine skews one sample of every variant rather than all samples of one.
 *
 *   npm run bench                                        200,000 messages, 5 rounds
 *   BENCH_MESSAGES=20000 BENCH_ROUNDS=3 npm run bench    a quick run
 *   BENCH_ABLATE=1 …                                     also roost with each guarantee off (r-nokey: no
 *                                                        idempotency key, r-noevent: no listener,
 *                                                        r-nopolicy: no timeout or retries) and all off (r-bare)
 */
import { cpus } from 'node:os';
import { envInt, gcAvailable, inc, measure, median, type Payload, type Sample, type Target, type Variant } from './lib/measure.js';
import { openRawQueue } from './lib/raw-queue.js';
import { ABLATION_VARIANTS, ROOST_CONFIG_NOTE, ROOST_QUEUE_CAPACITY, roostVariant } from './lib/roost.js';
import { fixed, int, line, ratio, table } from './lib/format.js';

const STEPS = 3;
const CONCURRENCIES = [1, 64] as const;
const RAW_QUEUE_CAPACITY = 64;

const MESSAGES = envInt('BENCH_MESSAGES', 200_000, 1);
const ROUNDS = envInt('BENCH_ROUNDS', 5, 1);
/** Unmeasured messages each instance takes first: enough to get its hot paths optimized again (see `measure`). */
const WARMUP = Math.min(20_000, Math.max(2_000, Math.floor(MESSAGES / 10)));

const rawAsync: Variant = {
  name: 'raw-async',
  open(): Promise<Target> {
    const [n1, n2, n3] = [inc, inc, inc];
    return Promise.resolve({
      async submit(payload: Payload): Promise<unknown> {
        return n3(await n2(await n1(payload)));
      },
      close: () => Promise.resolve(''),
    });
  },
};

const rawQueue: Variant = {
  name: 'raw-queue',
  open: () => Promise.resolve(openRawQueue([inc, inc, inc], RAW_QUEUE_CAPACITY)),
};

const ABLATE = process.env['BENCH_ABLATE'] === '1';
const VARIANTS: readonly Variant[] = [rawAsync, rawQueue, roostVariant, ...(ABLATE ? ABLATION_VARIANTS : [])];
/** The variants compared with raw-queue. */
const ROOSTS: ReadonlySet<Variant> = new Set([roostVariant, ...ABLATION_VARIANTS]);

// ---- formatting ---------------------------------------------------------------------------------

function rawRow(s: Sample, position: number): string[] {
  return [String(s.round), String(position), s.variant, String(s.concurrency), int(s.msgsPerSec), fixed(s.p50Us, 1), fixed(s.p99Us, 1), int(s.elapsedMs), s.note];
}
const RAW_HEADER = ['round', '#', 'variant', 'C', 'msgs/s', 'p50 µs', 'p99 µs', 'ms', 'checks'];
/** Raw rows are printed one by one as measured, so their widths are fixed up front. */
const RAW_WIDTHS = [5, 2, 10, 2, 11, 9, 10, 7, 0];

// ---- run ----------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const cpu = cpus();
  console.log(`node ${process.version} (${process.platform}/${process.arch}), ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}`);
  console.log(
    `config: ${STEPS}-node linear flow, each node async { n } → { n: n + 1 } (input 0, every result checked = ${STEPS}); ` +
      `${int(MESSAGES)} msgs per measurement, ${ROUNDS} interleaved rounds, C ∈ {${CONCURRENCIES.join(', ')}}, warm-up ${int(WARMUP)} msgs on each measured instance before it is measured; ` +
      `latency = submit→result per message; GC between measurements: ${gcAvailable ? 'yes' : 'unavailable'}`,
  );
  console.log(`  raw-queue: ring cap ${RAW_QUEUE_CAPACITY} per edge (4 edges), 1 sequential consumer per node, backpressure by waiting producers, replies by Map<id, resolve>`);
  console.log(`  ${ROOST_CONFIG_NOTE}`);
  if (ABLATE) console.log('  ablation: r-nokey = roost without the idempotency key, r-noevent = without the listener, r-nopolicy = without timeout and retries, r-bare = without all three');
  if (ROUNDS < 3) console.log(`  warning: ${ROUNDS} round(s); medians over fewer than 3 rounds do not filter noise`);
  if (ROOST_QUEUE_CAPACITY !== RAW_QUEUE_CAPACITY) throw new Error('the queue capacities of raw-queue and roost must match');

  const latencies = new Float64Array(Math.max(MESSAGES, WARMUP));

  const jobs = VARIANTS.flatMap((variant) => CONCURRENCIES.map((c) => ({ variant, c })));
  const samples: Sample[] = [];
  console.log('\nraw samples (printed as measured; # = position within the round, rotated each round)\n');
  console.log(table(RAW_HEADER, [], 4, RAW_WIDTHS));
  for (let round = 1; round <= ROUNDS; round++) {
    for (let k = 0; k < jobs.length; k++) {
      const { variant, c } = jobs[(k + round - 1) % jobs.length]!;
      const sample = await measure(variant, c, MESSAGES, round, STEPS, latencies, WARMUP);
      samples.push(sample);
      console.log(line(rawRow(sample, k + 1), RAW_WIDTHS, 4));
    }
  }

  const pick = (variant: string, c: number): Sample[] => samples.filter((s) => s.variant === variant && s.concurrency === c);
  const med = (variant: string, c: number, f: (s: Sample) => number): number => median(pick(variant, c).map(f));
  const rows = jobs.map(({ variant, c }) => {
    const rates = pick(variant.name, c).map((s) => s.msgsPerSec);
    const spread = ((Math.max(...rates) - Math.min(...rates)) / median(rates)) * 100;
    const isRoost = ROOSTS.has(variant);
    const thr = med(variant.name, c, (s) => s.msgsPerSec);
    const p99 = med(variant.name, c, (s) => s.p99Us);
    return [
      variant.name,
      String(c),
      int(thr),
      `${fixed(spread, 0)}%`,
      fixed(med(variant.name, c, (s) => s.p50Us), 1),
      fixed(p99, 1),
      isRoost ? ratio(thr / med('raw-queue', c, (s) => s.msgsPerSec)) : '',
      isRoost ? ratio(p99 / med('raw-queue', c, (s) => s.p99Us)) : '',
    ];
  });
  console.log(`\nsummary: medians over ${ROUNDS} round(s) of ${int(MESSAGES)} messages (spread = (max − min) / median of msgs/s)\n`);
  console.log(table(['variant', 'C', 'msgs/s', 'spread', 'p50 µs', 'p99 µs', 'thr ÷ raw-queue', 'p99 ÷ raw-queue'], rows, 1));

  // Per-round ratios show whether the summary ratio is stable or an artefact of one noisy round.
  console.log('\nroost ÷ raw-queue per round (throughput, p99):');
  for (const c of CONCURRENCIES) {
    const q = pick('raw-queue', c);
    const r = pick('roost', c);
    const parts = r.map((s, i) => `r${s.round} ${ratio(s.msgsPerSec / q[i]!.msgsPerSec)} / ${ratio(s.p99Us / q[i]!.p99Us)}`);
    console.log(`  C=${c}: ${parts.join(', ')}`);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
