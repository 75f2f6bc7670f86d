/**
 * Transport request/response: Roost's MQTT and core-NATS transports beside the raw client
 * libraries they wrap, like against like, over private brokers this benchmark starts (and stops,
 * also on error) on free ports of 127.0.0.1 — never the machine's shared ones:
 *
 *   Mosquitto   `listener <port> 127.0.0.1`, `allow_anonymous true`, `set_tcp_nodelay true`,
 *               `persistence false` (test/helpers/private-broker.ts)
 *   nats-server `-a 127.0.0.1 -p <port>` (a private one, for isolation from other agents' tests)
 *
 *   mqtt-raw        mqtt.js, MQTT 5, QoS 1 both ways: the requester publishes to a request topic
 *                   with a response topic and correlation data (a counter), a responder client
 *                   subscribed at QoS 1 answers at QoS 1 with the same correlation data;
 *                   TCP_NODELAY on both client sockets, receive maximum 64 (as Roost's default)
 *   mqtt-roost      `MqttTransport.request()` / `respond()` over the same broker, journal off
 *   nats-raw        nats.js core `nc.request` / a responder `nc.subscribe` + `msg.respond`, the
 *                   library's default options (what the targets are measured against)
 *   nats-raw-notraces  the same with `noAsyncTraces: true`, which NatsTransport sets (nats.js
 *                   otherwise makes two Errors per request for async stack traces, about a third
 *                   of a raw request's CPU): shown so that part of Roost's ratio is not taken
 *                   for Roost's own overhead (its ratio to this row is printed at the end)
 *   nats-roost      `NatsTransport.request()` / `respond()` over the same server, journal off
 *   *-roost-journal journal on: the responder handles each request once by envelope id through
 *                   a durable `Dedup` on a SqliteStore (synchronous=FULL: a read and a committed
 *                   mark per request). `respond()` ignores `options.dedup` (it takes a handler
 *                   that returns nothing, a responder returns the answer), so the bench wraps
 *                   the responder itself; see `journalResponder`. Reported separately, no target.
 *
 * Fairness: requester and responder are two connections of this one process in every variant.
 * The raw side sends the bytes of a real encoded envelope (request and reply, encoded once up
 * front), the same size as the envelopes Roost sends, so what differs is Roost's own work per
 * message: a fresh envelope per request (a UUIDv7), encode + validate and decode + validate on
 * both sides, topic checks, request ids, timeouts, handler tracking. Every answer is checked:
 * raw by correlation and reply size, Roost by the reply's parentId and payload.
 *
 * Each variant runs at C = 1 and C = 64 requests in flight (closed loop, a fixed count per
 * measurement), in interleaved rounds (the order rotated each round), on a fresh pair of
 * connections per measurement; the summary takes medians, and the ratios are medians of the
 * per-round ratios. Targets (issue 5): Roost ≥ 0.70× raw throughput at C = 64, p50 ≤ 1.5× raw
 * at C = 1.
 *
 *   npm run bench                                        (runs this after the others)
 *   node build/bench/bench/transport-throughput.js       after `tsc -p bench/tsconfig.json`
 *   BENCH_ROUNDS=1 BENCH_TRANSPORT_SCALE=25 …            a quick, noisy look
 *   BENCH_TRANSPORT_ONLY='^mqtt-roost@64$' node --cpu-prof …   one case (to profile it)
 *   BENCH_TRANSPORTS=nats …                              only these transports (comma-separated:
 *                                                        mqtt, nats); only their brokers start
 *
 * `cpu µs/req` is this process's CPU time (user + system, both clients; the broker is another
 * process) per request over the measurement: on a shared machine it moves far less with the
 * neighbours' load than msgs/s, so it is the figure to compare a change by.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { encodeEnvelope } from '../src/envelope/codec.js';
import type { Envelope } from '../src/envelope/envelope.js';
import { uuidv7 } from '../src/envelope/uuid.js';
import { SqliteStore } from '../src/store/sqlite.js';
import { Dedup } from '../src/transport/dedup.js';
import { MqttTransport } from '../src/transport/mqtt.js';
import { NatsTransport } from '../src/transport/nats.js';
import type { Responder, Transport } from '../src/transport/transport.js';
import { privateBroker, type PrivateBroker } from '../test/helpers/private-broker.js';
import { taskEnvelope } from './lib/envelope.js';
import { envInt, gcAvailable, measure, median, type Payload, type Sample, type Target, type Variant } from './lib/measure.js';
import { fixed, int, line, ratio as times, table } from './lib/format.js';

const ROUNDS = envInt('BENCH_ROUNDS', 3, 1);
/** Percent of the default counts (for a quick look: 25). */
const SCALE = envInt('BENCH_TRANSPORT_SCALE', 100, 1);
/** Only the cases whose `variant@C` matches this regular expression (for profiling one case). */
const ONLY = new RegExp(process.env['BENCH_TRANSPORT_ONLY'] ?? '');
/** Only these transports (default: all); a broker starts only when its transport runs. */
const TRANSPORTS = (process.env['BENCH_TRANSPORTS'] ?? 'mqtt,nats').split(',').map((t) => t.trim());
for (const t of TRANSPORTS) {
  if (t !== 'mqtt' && t !== 'nats') throw new Error(`BENCH_TRANSPORTS: unknown transport ${JSON.stringify(t)} (expected mqtt, nats)`);
}
const CONCURRENCIES = [1, 64] as const;
type C = (typeof CONCURRENCIES)[number];
const TIMEOUT_MS = 5_000;
/** The answer every variant's submit resolves to (measure.drive checks it). */
const EXPECTED = 1;

/** Requests per measurement: about 1 s per case on the 2-core machines. */
const COUNTS: Record<'mqtt' | 'nats' | 'journal', Record<C, number>> = {
  mqtt: { 1: 3_000, 64: 20_000 },
  nats: { 1: 6_000, 64: 40_000 },
  journal: { 1: 300, 64: 600 },
};
const count = (kind: keyof typeof COUNTS, c: C): number => Math.max(10, Math.round((COUNTS[kind][c] * SCALE) / 100));

// ---- the envelopes ------------------------------------------------------------------------------

/** A task of a realistic small size (the HTTP bench's body), and its answer. */
const REQUEST_PAYLOAD = { ticket: 'T-1', text: 'I was charged twice, please refund', n: 0 };
type BenchPayload = typeof REQUEST_PAYLOAD;

function requestEnvelope(): Envelope<BenchPayload> {
  return taskEnvelope(REQUEST_PAYLOAD, { tenant: 'bench', from: 'requester', to: 'responder', traceparent: `00-${'1'.repeat(32)}-${'2'.repeat(16)}-01` });
}

function replyEnvelope(request: Envelope): Envelope<BenchPayload> {
  const p = request.payload as BenchPayload;
  return {
    ...request,
    id: uuidv7(),
    parentId: request.id,
    from: 'responder',
    to: 'requester',
    kind: 'result',
    payload: { ...p, n: p.n + 1 },
    headers: request.headers,
    createdAt: Date.now(),
  };
}

/** What the raw variants send: the same envelopes, encoded once. */
const RAW_REQUEST = encodeEnvelope(requestEnvelope());
const RAW_REPLY = encodeEnvelope(replyEnvelope(requestEnvelope()));

/** Roost's responder: the reply to the request. */
// eslint-disable-next-line @typescript-eslint/require-await -- an async responder, as real ones are
const echo: Responder = async (env) => replyEnvelope(env);

const ANSWER: Payload = { n: EXPECTED };

// ---- raw MQTT -----------------------------------------------------------------------------------

async function mqttClient(url: string): Promise<MqttClient> {
  const client = await mqtt.connectAsync(url, {
    protocolVersion: 5,
    clean: true,
    clientId: `raw-${randomUUID().slice(0, 12)}`,
    reconnectPeriod: 0,
    properties: { receiveMaximum: 64 },
  });
  const noDelay = (): void => void (client.stream as Partial<Socket>).setNoDelay?.(true);
  noDelay(); // connectAsync resolves on the connect event, before this could listen for it
  client.on('connect', noDelay);
  return client;
}

function mqttRaw(broker: () => PrivateBroker): Variant {
  return {
    name: 'mqtt-raw',
    async open(): Promise<Target> {
      const url = broker().url;
      const topic = `bench-${randomUUID().slice(0, 8)}/req`;
      const responder = await mqttClient(url);
      const requester = await mqttClient(url);
      const replyTopic = `_raw/reply/${requester.options.clientId}`;
      responder.on('message', (_topic, _payload, packet) => {
        const responseTopic = packet.properties?.responseTopic;
        const correlationData = packet.properties?.correlationData;
        if (responseTopic === undefined || correlationData === undefined) return;
        responder.publish(responseTopic, RAW_REPLY, { qos: 1, properties: { correlationData } });
      });
      const pending = new Map<string, (payload: Buffer) => void>();
      requester.on('message', (_topic, payload, packet) => {
        const id = packet.properties?.correlationData?.toString('utf8');
        const resolve = id === undefined ? undefined : pending.get(id);
        if (resolve === undefined) return;
        pending.delete(id!);
        resolve(payload);
      });
      await responder.subscribeAsync(topic, { qos: 1 });
      await requester.subscribeAsync(replyTopic, { qos: 1 });
      let seq = 0;
      let answered = 0;
      return {
        submit(): Promise<unknown> {
          const id = String(seq++);
          return new Promise<unknown>((resolve, reject) => {
            const timer = setTimeout(() => {
              pending.delete(id);
              reject(new Error(`mqtt-raw: no answer to request ${id} within ${TIMEOUT_MS} ms`));
            }, TIMEOUT_MS);
            pending.set(id, (payload) => {
              clearTimeout(timer);
              if (payload.length !== RAW_REPLY.length) {
                reject(new Error(`mqtt-raw: a reply of ${payload.length} bytes, expected ${RAW_REPLY.length}`));
                return;
              }
              answered++;
              resolve(ANSWER);
            });
            requester.publish(topic, RAW_REQUEST, { qos: 1, properties: { responseTopic: replyTopic, correlationData: Buffer.from(id, 'utf8') } });
          });
        },
        async close(): Promise<string> {
          await Promise.all([requester.endAsync(), responder.endAsync()]);
          if (pending.size !== 0) throw new Error(`mqtt-raw: ${pending.size} requests left unanswered`);
          return `${answered} answered`;
        },
      };
    },
  };
}

// ---- raw NATS -----------------------------------------------------------------------------------

function natsServers(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port}`;
}

function natsRaw(broker: () => PrivateBroker, noAsyncTraces: boolean): Variant {
  return {
    name: noAsyncTraces ? 'nats-raw-notraces' : 'nats-raw',
    async open(): Promise<Target> {
      const servers = natsServers(broker().url);
      const subject = `bench-${randomUUID().slice(0, 8)}.req`;
      const responder: NatsConnection = await natsConnect({ servers, name: 'raw-responder', noAsyncTraces });
      const requester: NatsConnection = await natsConnect({ servers, name: 'raw-requester', noAsyncTraces });
      responder.subscribe(subject, {
        callback: (error, msg) => {
          if (error === null) msg.respond(RAW_REPLY);
        },
      });
      await responder.flush();
      let answered = 0;
      return {
        async submit(): Promise<unknown> {
          const msg = await requester.request(subject, RAW_REQUEST, { timeout: TIMEOUT_MS });
          if (msg.data.length !== RAW_REPLY.length) throw new Error(`nats-raw: a reply of ${msg.data.length} bytes, expected ${RAW_REPLY.length}`);
          answered++;
          return ANSWER;
        },
        async close(): Promise<string> {
          await Promise.all([requester.drain(), responder.drain()]);
          return `${answered} answered`;
        },
      };
    },
  };
}

// ---- Roost --------------------------------------------------------------------------------------

/**
 * The journal-on responder: each request handled once by envelope id through a durable Dedup
 * (an id already marked in the journal is not handled again). `respond()` does not take
 * `options.dedup`, so the bench wraps the responder itself: the deduplicated handler computes
 * the reply, which the responder then returns. A duplicate would get no answer from here (a
 * transport-level design would keep the reply with the mark); in this bench every id is new.
 */
function journalResponder(dedup: Dedup, responder: Responder): Responder {
  const replies = new Map<string, Envelope>();
  const once = dedup.wrap(async (env, delivery) => {
    replies.set(env.id, await responder(env, delivery));
  });
  return async (env, delivery) => {
    await once(env, delivery);
    const reply = replies.get(env.id);
    replies.delete(env.id);
    if (reply === undefined) throw new Error(`request ${env.id} was a duplicate: no answer`);
    return reply;
  };
}

interface RoostPair {
  readonly requester: Transport;
  readonly responder: Transport;
}

function roost(name: string, make: () => Transport, journal: boolean): Variant {
  return {
    name,
    async open(): Promise<Target> {
      const pair: RoostPair = { requester: make(), responder: make() };
      await Promise.all([pair.requester.connect(), pair.responder.connect()]);
      const topic = `bench-${randomUUID().slice(0, 8)}/req`;
      let dir: string | null = null;
      let store: SqliteStore | null = null;
      let dedup: Dedup | null = null;
      let responder = echo;
      if (journal) {
        dir = mkdtempSync(join(tmpdir(), 'roost-bench-transport-'));
        store = new SqliteStore(join(dir, 'journal.db'));
        dedup = new Dedup({ store });
        responder = journalResponder(dedup, echo);
      }
      await pair.responder.respond(topic, responder);
      let answered = 0;
      return {
        async submit(): Promise<unknown> {
          const request = requestEnvelope();
          const reply = await pair.requester.request(topic, request, { timeoutMs: TIMEOUT_MS });
          if (reply.parentId !== request.id) throw new Error(`${name}: the answer to ${request.id} is for ${reply.parentId}`);
          answered++;
          return reply.payload;
        },
        async close(): Promise<string> {
          await Promise.all([pair.requester.close(), pair.responder.close()]);
          const a = pair.requester.stats();
          const b = pair.responder.stats();
          const problems: string[] = [];
          if (a.dropped + b.dropped !== 0) problems.push(`${a.dropped + b.dropped} messages dropped`);
          if (a.published !== answered || b.received !== answered || b.published !== answered || a.received !== answered) {
            problems.push(`counts: requester sent ${a.published} got ${a.received}, responder got ${b.received} sent ${b.published}, ${answered} answered`);
          }
          if (dedup !== null && dedup.duplicates !== 0) problems.push(`${dedup.duplicates} duplicates`);
          await store?.close();
          if (dir !== null) rmSync(dir, { recursive: true, force: true });
          if (problems.length > 0) throw new Error(`${name}: ${problems.join('; ')}`);
          return `${answered} answered${journal ? ', each marked in the journal' : ''}`;
        },
      };
    },
  };
}

/** The CPU time of the last measurement of a wrapped variant, µs (open → close, both excluded). */
let lastCpuUs = NaN;
function withCpu(variant: Variant): Variant {
  return {
    name: variant.name,
    async open(): Promise<Target> {
      const target = await variant.open();
      const start = process.cpuUsage();
      return {
        submit: (payload) => target.submit(payload),
        close(): Promise<string> {
          const used = process.cpuUsage(start);
          lastCpuUs = used.user + used.system;
          return target.close();
        },
      };
    },
  };
}

// ---- formatting ---------------------------------------------------------------------------------

const RAW_WIDTHS = [5, 2, 18, 2, 8, 9, 9, 10, 11, 6, 0];

// ---- run ----------------------------------------------------------------------------------------

interface Job {
  readonly variant: Variant;
  readonly transport: 'mqtt' | 'nats';
  readonly raw: string;
  readonly journal: boolean;
  readonly c: C;
  readonly messages: number;
}

async function main(brokers: { mqtt: PrivateBroker | null; nats: PrivateBroker | null }): Promise<void> {
  if (TRANSPORTS.includes('mqtt')) brokers.mqtt = await privateBroker('mosquitto');
  if (TRANSPORTS.includes('nats')) brokers.nats = await privateBroker('nats');
  const mqttBroker = (): PrivateBroker => brokers.mqtt!;
  const natsBroker = (): PrivateBroker => brokers.nats!;
  const mqttRoost = (): Transport => new MqttTransport({ url: mqttBroker().url });
  const natsRoost = (): Transport => new NatsTransport({ url: natsBroker().url });

  const variants: { variant: Variant; transport: 'mqtt' | 'nats'; raw: string; journal: boolean }[] = [
    { variant: mqttRaw(mqttBroker), transport: 'mqtt', raw: 'mqtt-raw', journal: false },
    { variant: roost('mqtt-roost', mqttRoost, false), transport: 'mqtt', raw: 'mqtt-raw', journal: false },
    { variant: roost('mqtt-roost-journal', mqttRoost, true), transport: 'mqtt', raw: 'mqtt-raw', journal: true },
    { variant: natsRaw(natsBroker, false), transport: 'nats', raw: 'nats-raw', journal: false },
    { variant: natsRaw(natsBroker, true), transport: 'nats', raw: 'nats-raw', journal: false },
    { variant: roost('nats-roost', natsRoost, false), transport: 'nats', raw: 'nats-raw', journal: false },
    { variant: roost('nats-roost-journal', natsRoost, true), transport: 'nats', raw: 'nats-raw', journal: true },
  ];
  for (const v of variants) v.variant = withCpu(v.variant);
  const jobs: Job[] = variants.flatMap((v) => CONCURRENCIES.map((c) => ({ ...v, c, messages: count(v.journal ? 'journal' : v.transport, c) })))
    .filter((j) => TRANSPORTS.includes(j.transport) && ONLY.test(`${j.variant.name}@${j.c}`));

  const cpu = cpus();
  console.log(`\ntransport request/response: node ${process.version}, ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}`);
  const shown = [
    brokers.mqtt === null ? null : `private Mosquitto ${brokers.mqtt.url} (set_tcp_nodelay true, persistence false)`,
    brokers.nats === null ? null : `private nats-server ${brokers.nats.url}`,
  ];
  console.log(`  ${shown.filter((b) => b !== null).join(', ')}`);
  console.log(
    `  ${RAW_REQUEST.length}-byte request and ${RAW_REPLY.length}-byte reply envelopes (raw: the same bytes, encoded once); ` +
      `C ∈ {${CONCURRENCIES.join(', ')}}, ${ROUNDS} interleaved rounds, a fresh connection pair per measurement; GC between measurements: ${gcAvailable ? 'yes' : 'unavailable'}`,
  );
  console.log(`  requests per measurement: ${jobs.map((j) => `${j.variant.name}@${j.c} ${int(j.messages)}`).join(', ')}`);
  if (ROUNDS < 3) console.log(`  warning: ${ROUNDS} round(s); medians over fewer than 3 rounds do not filter noise`);

  const latencies = new Float64Array(Math.max(...jobs.map((j) => j.messages)));
  // Warm-up: every variant's hot paths optimized before the first measured round.
  for (const j of jobs) await measure(j.variant, j.c, Math.max(10, Math.floor(j.messages / 5)), 0, EXPECTED, latencies);

  const samples: Sample[] = [];
  const cpuOf = new Map<Sample, number>();
  console.log('\nraw samples (printed as measured; # = position within the round, rotated each round)\n');
  console.log(line(['round', '#', 'variant', 'C', 'requests', 'msgs/s', 'p50 µs', 'p99 µs', 'cpu µs/req', 'ms', 'checks'], RAW_WIDTHS, 3));
  for (let round = 1; round <= ROUNDS; round++) {
    for (let k = 0; k < jobs.length; k++) {
      const j = jobs[(k + (round - 1) * 5) % jobs.length]!; // rotate by 5: each job moves position, C = 1 and 64 apart
      const s = await measure(j.variant, j.c, j.messages, round, EXPECTED, latencies);
      samples.push(s);
      cpuOf.set(s, lastCpuUs / j.messages);
      console.log(
        line(
          [String(round), String(k + 1), s.variant, String(s.concurrency), int(j.messages), int(s.msgsPerSec), fixed(s.p50Us, 0), fixed(s.p99Us, 0), fixed(cpuOf.get(s)!, 1), int(s.elapsedMs), s.note],
          RAW_WIDTHS,
          3,
        ),
      );
    }
  }

  const pick = (variant: string, c: number): Sample[] => samples.filter((s) => s.variant === variant && s.concurrency === c).sort((a, b) => a.round - b.round);
  const med = (variant: string, c: number, f: (s: Sample) => number): number => median(pick(variant, c).map(f));
  /** The median of the per-round ratios: a noisy round skews its own ratio, not the comparison. */
  const perRound = (variant: string, raw: string, c: number, f: (s: Sample) => number): number[] => {
    const r = pick(raw, c);
    return pick(variant, c).map((s, i) => (r[i] === undefined ? NaN : f(s) / f(r[i])));
  };
  const summary = (journal: boolean): string[][] =>
    jobs
      .filter((j) => j.journal === journal || (journal === false && j.variant.name === j.raw))
      .map((j) => {
        const name = j.variant.name;
        const rates = pick(name, j.c).map((s) => s.msgsPerSec);
        const spread = ((Math.max(...rates) - Math.min(...rates)) / median(rates)) * 100;
        const isRaw = name === j.raw;
        const thr = median(perRound(name, j.raw, j.c, (s) => s.msgsPerSec));
        const p50 = median(perRound(name, j.raw, j.c, (s) => s.p50Us));
        let target = '';
        if (name.endsWith('-roost')) target = j.c === 64 ? `thr ≥ 0.70×: ${thr >= 0.7 ? 'met' : 'MISSED'}` : `p50 ≤ 1.5×: ${p50 <= 1.5 ? 'met' : 'MISSED'}`;
        return [
          name,
          String(j.c),
          int(med(name, j.c, (s) => s.msgsPerSec)),
          `${fixed(spread, 0)}%`,
          fixed(med(name, j.c, (s) => s.p50Us), 0),
          fixed(med(name, j.c, (s) => s.p99Us), 0),
          fixed(med(name, j.c, (s) => cpuOf.get(s)!), 1),
          isRaw ? '' : times(thr),
          isRaw ? '' : times(p50),
          isRaw ? '' : times(median(perRound(name, j.raw, j.c, (s) => s.p99Us))),
          target,
        ];
      });
  const header = ['variant', 'C', 'msgs/s', 'spread', 'p50 µs', 'p99 µs', 'cpu µs/req', 'thr ÷ raw', 'p50 ÷ raw', 'p99 ÷ raw', 'target'];
  console.log(`\nsummary, journal off: medians over ${ROUNDS} round(s); ratios are medians of per-round ratios; spread = (max − min) / median of msgs/s\n`);
  console.log(table(header, summary(false), 1));
  console.log('\nsummary, JOURNAL ON (durable Dedup on SqliteStore, synchronous=FULL, per request; no target: a committed write per request)\n');
  console.log(table(header, summary(true), 1));

  for (const c of CONCURRENCIES) {
    const thr = median(perRound('nats-roost', 'nats-raw-notraces', c, (s) => s.msgsPerSec));
    const p50 = median(perRound('nats-roost', 'nats-raw-notraces', c, (s) => s.p50Us));
    if (Number.isFinite(thr)) console.log(`nats-roost ÷ nats-raw-notraces (the same client options), C=${c}: throughput ${times(thr)}, p50 ${times(p50)}`);
  }
  console.log('\nroost ÷ raw per round (throughput / p50):');
  for (const j of jobs.filter((x) => x.variant.name !== x.raw)) {
    const thr = perRound(j.variant.name, j.raw, j.c, (s) => s.msgsPerSec);
    const p50 = perRound(j.variant.name, j.raw, j.c, (s) => s.p50Us);
    console.log(`  ${j.variant.name.padEnd(18)} C=${String(j.c).padEnd(2)}  ${thr.map((t, i) => `r${i + 1} ${times(t)} / ${times(p50[i]!)}`).join(', ')}`);
  }
}

const brokers: { mqtt: PrivateBroker | null; nats: PrivateBroker | null } = { mqtt: null, nats: null };
const stopBrokers = async (): Promise<void> => {
  const all = [brokers.mqtt, brokers.nats].filter((b) => b !== null);
  brokers.mqtt = brokers.nats = null;
  await Promise.allSettled(all.map((b) => b.dispose()));
};
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void stopBrokers().finally(() => process.exit(130));
  });
}
try {
  await main(brokers);
} catch (error) {
  console.error(error);
  process.exitCode = 1;
} finally {
  await stopBrokers();
}
// After a failure, connections of the measurement that failed are still open (and would try to
// reconnect to the stopped brokers for ever): end here.
if (process.exitCode === 1) process.exit(1);
