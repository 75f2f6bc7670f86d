/**
 * JetStream publish throughput and latency: a publish that resolves on the stream's PubAck, two
 * ways —
 *
 *   raw-js   nats.js itself: `await js.publish(subject, JSON bytes, { msgID: envelope.id })`,
 *            what a user of @nats-io/jetstream writes for the same guarantee;
 *   roost    `await JetStreamTransport.publish(topic, envelope)`: topic check, the core codec
 *            (schema validation, size cap), the bound on pending publishes, the same js.publish.
 *
 * at C = 1 and C = 64 publishes in flight, on a private nats-server (`-js -sd <tmp>`, file
 * storage), each measurement on a fresh stream of the same config (the transport's defaults).
 * `roost` runs with the journal off; `roost-journal` (reported apart, no target) is the same with
 * the outbox on an SQLite journal, which keeps envelopes only while the server is away: on this
 * path its cost is the check and the watch for a lost connection. Both build the same envelope per message. Rounds are
 * interleaved and the summary takes medians. Every publish is checked: each measurement ends by
 * checking that the stream holds exactly one message per publish.
 * Targets: roost ≥ 0.7× raw-js msgs/s at C = 64, roost p50 ≤ 1.5× raw-js p50 at C = 1.
 *
 *   npm run bench                                           20,000 publishes, 3 rounds
 *   BENCH_JS_MESSAGES=5000 BENCH_ROUNDS=1 npm run bench     a quick look
 *   BENCH_NATS_URL=nats://127.0.0.1:4222                    use that server instead of a private one
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { SqliteStore, type Envelope } from '../src/index.js';
import { JetStreamTransport, resolveJetStreamOptions } from '../src/transport/jetstream.js';
import { privateBroker } from '../test/helpers/private-broker.js';
import { taskEnvelope } from './lib/envelope.js';
import { envInt, gcAvailable, measure, median, type Sample, type Target, type Variant } from './lib/measure.js';
import { fixed, int, line, ratio, table } from './lib/format.js';

const CONCURRENCIES = [1, 64] as const;
const MESSAGES = envInt('BENCH_JS_MESSAGES', 20_000, 1);
const ROUNDS = envInt('BENCH_ROUNDS', 3, 1);
/** nats.js request path keeps getting faster for several thousand calls: warm both well before measuring. */
const WARMUP = Math.min(10_000, Math.max(2_000, Math.floor(MESSAGES / 4)));
const TOPIC = 'bench/orders/eu';
const DONE = { n: 1 } as const;

const PAYLOAD = { order: 'A-1042', lines: [{ sku: 'X1', qty: 2 }], note: 'leave at the door' };

function makeEnvelope(): Envelope {
  return taskEnvelope(PAYLOAD, { tenant: 'default', from: 'bench', to: 'orders', traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' });
}

// ---- the server ---------------------------------------------------------------------------------

async function startServer(): Promise<{ url: string; stop(): Promise<void> }> {
  const external = process.env['BENCH_NATS_URL'];
  if (external !== undefined && external !== '') return { url: external, stop: () => Promise.resolve() };
  const broker = await privateBroker('nats'); // -js, file storage in a directory of its own
  return { url: broker.url, stop: () => broker.dispose() };
}

// ---- the variants -------------------------------------------------------------------------------

let url = '';
let admin: NatsConnection | null = null;
let jsm: JetStreamManager | null = null;
let streams = 0;

/** A fresh stream name and subject prefix for one measurement. */
function names(variant: string): { stream: string; subjectPrefix: string } {
  const k = ++streams;
  return { stream: `BENCH_${variant}_${k}`, subjectPrefix: `bench-js.${variant}.${k}` };
}

/** Checks the stream holds one message per publish, then removes it. */
async function finish(stream: string, published: number): Promise<string> {
  const info = await jsm!.streams.info(stream);
  await jsm!.streams.delete(stream);
  if (info.state.messages !== published) throw new Error(`stream ${stream} holds ${info.state.messages} messages after ${published} publishes`);
  return `${published} stored`;
}

const rawJs: Variant = {
  name: 'raw-js',
  async open(): Promise<Target> {
    const n = names('raw');
    // The same stream config the transport makes (its defaults), so both pay the same server work.
    const defaults = resolveJetStreamOptions({ url, ...n });
    await jsm!.streams.add({
      name: n.stream,
      subjects: [`${n.subjectPrefix}.>`],
      storage: 'file',
      retention: 'limits',
      discard: 'old',
      max_age: defaults.maxAgeMs * 1e6,
      max_bytes: defaults.maxBytes,
      duplicate_window: defaults.duplicateWindowMs * 1e6,
    });
    const nc = await connect({ servers: url.replace('nats://', '') });
    const js = (await jetstreamManager(nc)).jetstream();
    const subject = `${n.subjectPrefix}.${TOPIC.replaceAll('/', '.')}`;
    let published = 0;
    return {
      async submit(): Promise<unknown> {
        const env = makeEnvelope();
        const ack = await js.publish(subject, Buffer.from(JSON.stringify(env)), { msgID: env.id });
        if (ack.duplicate) throw new Error('a fresh envelope was taken for a duplicate');
        published++;
        return DONE;
      },
      async close(): Promise<string> {
        await nc.close();
        return finish(n.stream, published);
      },
    };
  },
};

/** Roost's publish, with the journal off, or with the outbox on an SQLite journal. */
function roostVariant(journal: boolean): Variant {
  const name = journal ? 'roost-journal' : 'roost';
  return {
    name,
    async open(): Promise<Target> {
      const n = names(journal ? 'roostj' : 'roost');
      const dir = journal ? mkdtempSync(join(tmpdir(), 'roost-bench-js-')) : null;
      const store = dir === null ? null : new SqliteStore(join(dir, 'journal.db'));
      const t = new JetStreamTransport({ url, ...n, ...(store === null ? {} : { outbox: { store, source: 'bench' } }) });
      await t.connect();
      return {
        async submit(): Promise<unknown> {
          await t.publish(TOPIC, makeEnvelope());
          return DONE;
        },
        async close(): Promise<string> {
          const { published, kept } = t.stats();
          await t.close();
          await store?.close();
          if (dir !== null) rmSync(dir, { recursive: true, force: true });
          if (kept !== 0) throw new Error(`${name}: ${kept} publishes were kept in the outbox with the server up`);
          return finish(n.stream, published);
        },
      };
    },
  };
}

const roost = roostVariant(false);

const VARIANTS: readonly Variant[] = [rawJs, roost, roostVariant(true)];

// ---- formatting ---------------------------------------------------------------------------------

const RAW_HEADER = ['round', '#', 'variant', 'C', 'msgs/s', 'p50 µs', 'p99 µs', 'ms', 'checks'];
const RAW_WIDTHS = [5, 2, 7, 2, 9, 9, 10, 7, 0];

// ---- run ----------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const cpu = cpus();
  const server = await startServer();
  url = server.url;
  admin = await connect({ servers: url.replace('nats://', '') });
  jsm = await jetstreamManager(admin);
  try {
    console.log(`\n== JetStream publish with ack: raw nats.js beside Roost's JetStreamTransport`);
    console.log(`node ${process.version} (${process.platform}/${process.arch}), ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}; nats-server ${admin.info?.version ?? '?'} at ${url}${process.env['BENCH_NATS_URL'] ? '' : ' (private, -js, file storage)'}`);
    console.log(
      `config: ${int(MESSAGES)} publishes per measurement, ${ROUNDS} interleaved rounds, C ∈ {${CONCURRENCIES.join(', ')}}, warm-up ${int(WARMUP)} per variant and C; ` +
        `a fresh stream per measurement; latency = publish→PubAck; journal off; GC between measurements: ${gcAvailable ? 'yes' : 'unavailable'}`,
    );
    if (ROUNDS < 3) console.log(`  warning: ${ROUNDS} round(s); medians over fewer than 3 rounds do not filter noise`);

    const latencies = new Float64Array(Math.max(MESSAGES, WARMUP));
    for (const variant of VARIANTS) {
      for (const c of CONCURRENCIES) await measure(variant, c, WARMUP, 0, DONE.n, latencies);
    }
    const jobs = VARIANTS.flatMap((variant) => CONCURRENCIES.map((c) => ({ variant, c })));
    const samples: Sample[] = [];
    console.log('\nraw samples (printed as measured; # = position within the round, rotated each round)\n');
    console.log(table(RAW_HEADER, [], 3, RAW_WIDTHS));
    for (let round = 1; round <= ROUNDS; round++) {
      for (let k = 0; k < jobs.length; k++) {
        const { variant, c } = jobs[(k + round - 1) % jobs.length]!;
        const s = await measure(variant, c, MESSAGES, round, DONE.n, latencies);
        samples.push(s);
        console.log(line([String(s.round), String(k + 1), s.variant, String(s.concurrency), int(s.msgsPerSec), fixed(s.p50Us, 1), fixed(s.p99Us, 1), int(s.elapsedMs), s.note], RAW_WIDTHS, 3));
      }
    }

    const pick = (variant: string, c: number): Sample[] => samples.filter((s) => s.variant === variant && s.concurrency === c);
    const med = (variant: string, c: number, f: (s: Sample) => number): number => median(pick(variant, c).map(f));
    const rows = jobs.map(({ variant, c }) => {
      const isRoost = variant !== rawJs;
      const thr = med(variant.name, c, (s) => s.msgsPerSec);
      const p50 = med(variant.name, c, (s) => s.p50Us);
      const p99 = med(variant.name, c, (s) => s.p99Us);
      return [
        variant.name,
        String(c),
        int(thr),
        fixed(p50, 1),
        fixed(p99, 1),
        isRoost ? ratio(thr / med('raw-js', c, (s) => s.msgsPerSec)) : '',
        isRoost ? ratio(p50 / med('raw-js', c, (s) => s.p50Us)) : '',
        isRoost ? ratio(p99 / med('raw-js', c, (s) => s.p99Us)) : '',
      ];
    });
    console.log(`\nsummary: medians over ${ROUNDS} round(s) of ${int(MESSAGES)} publishes\n`);
    console.log(table(['variant', 'C', 'msgs/s', 'p50 µs', 'p99 µs', 'thr ÷ raw', 'p50 ÷ raw', 'p99 ÷ raw'], rows, 1));
    // Per-round ratios show whether the summary ratio is stable or an artefact of one noisy round.
    console.log('\nroost ÷ raw-js per round (throughput, p50):');
    for (const c of CONCURRENCIES) {
      const raw = pick('raw-js', c);
      const parts = pick('roost', c).map((s, i) => `r${s.round} ${ratio(s.msgsPerSec / raw[i]!.msgsPerSec)} / ${ratio(s.p50Us / raw[i]!.p50Us)}`);
      console.log(`  C=${c}: ${parts.join(', ')}`);
    }
    const thr64 = med('roost', 64, (s) => s.msgsPerSec) / med('raw-js', 64, (s) => s.msgsPerSec);
    const p50at1 = med('roost', 1, (s) => s.p50Us) / med('raw-js', 1, (s) => s.p50Us);
    console.log(`\ntargets: throughput at C=64 ≥ 0.70× raw: ${ratio(thr64)} ${thr64 >= 0.7 ? 'met' : 'MISSED'}; p50 at C=1 ≤ 1.50× raw: ${ratio(p50at1)} ${p50at1 <= 1.5 ? 'met' : 'MISSED'}`);
  } finally {
    await admin.close();
    await server.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
