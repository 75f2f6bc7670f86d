/**
 * The fleet's hard cases on real brokers (Mosquitto, NATS JetStream), found by review: each test failed before its fix.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { JetStreamTransport, createRuntime, node, type Handler, type Runtime, type Transport } from '../../src/index.js';
import { MQTT_URL, NATS_URL, deleteNatsStreams, presenceStream } from '../helpers/brokers.js';
import { until } from '../helpers/runtime.js';

const open: Runtime[] = [];
const transports: Transport[] = [];
/** JetStream streams made (the test's own, and its namespace's presence bucket), deleted after each test. */
const streams: string[] = [];
afterEach(async () => {
  for (const rt of open.splice(0).reverse()) await rt.close();
  for (const t of transports.splice(0)) await t.close();
  await deleteNatsStreams([...new Set(streams.splice(0))]);
});

/** A JetStream transport on a stream of the test's own, whose group consumers go with it. */
function jetstream(space: string): Transport {
  const stream = `RV-${space}`;
  streams.push(stream, presenceStream(space));
  const t = new JetStreamTransport({ url: NATS_URL, stream, deleteGroupConsumers: true });
  transports.push(t);
  return t;
}

function setup(rt: Runtime, mid: Handler, concurrency: number): void {
  const a = node('a', (env) => env.payload);
  const m = node('mid', mid, { concurrency, timeoutMs: 60_000 });
  const c = node('c', (env) => env.payload);
  rt.flow({ name: 'f', edges: [a.to(m), m.to(c), c.to()] });
}

interface Side {
  transport: Transport | string;
  id: string;
  ns: string;
  leaseMs?: number;
  maxQueued?: number;
  routing?: 'registry' | 'group';
}

async function worker(s: Side, mid: Handler, concurrency: number): Promise<Runtime> {
  const rt = createRuntime({
    logger: false,
    drainTimeoutMs: 300,
    fleet: { transport: s.transport, namespace: s.ns, id: s.id, role: 'worker', host: ['f/mid'], leaseMs: s.leaseMs ?? 2_000, heartbeatMs: 200, ...(s.maxQueued === undefined ? {} : { maxQueued: s.maxQueued }) },
  });
  setup(rt, mid, concurrency);
  open.push(rt);
  await rt.start();
  return rt;
}

async function owner(s: Side): Promise<Runtime> {
  const rt = createRuntime({
    logger: false,
    drainTimeoutMs: 300,
    fleet: { transport: s.transport, namespace: s.ns, id: s.id, remote: ['f/mid'], leaseMs: s.leaseMs ?? 2_000, heartbeatMs: 200, routing: s.routing ?? 'registry' },
  });
  setup(rt, (e) => e.payload, 1);
  open.push(rt);
  await rt.start();
  return rt;
}

function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return Promise.race([p, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms))]);
}

const ns = (): string => `rv${randomBytes(4).toString('hex')}`;

describe('review: MQTT', () => {
  it('a worker holding more than receiveMaximum (64) tasks still reads: a cancel reaches the handler, and close() returns', async () => {
    const space = ns();
    const started: string[] = [];
    const aborted: string[] = [];
    const releases: (() => void)[] = [];
    const mid: Handler = (env, ctx) =>
      new Promise((resolve, reject) => {
        started.push(env.traceId);
        releases.push(() => resolve(env.payload));
        ctx.signal.addEventListener('abort', () => {
          aborted.push(env.traceId);
          reject(ctx.signal.reason as Error);
        });
      });
    const w = await worker({ transport: MQTT_URL, id: `w-${space}`, ns: space }, mid, 100);
    const o = await owner({ transport: MQTT_URL, id: `o-${space}`, ns: space });
    const flow = o.getFlow('f')!;
    for (let i = 0; i < 70; i++) await flow.emit({ i });
    await until(() => started.length >= 70, 10_000, '70 running');
    await new Promise((r) => setTimeout(r, 300));
    const victim = started[0]!;
    await flow.cancel(victim);
    await new Promise((r) => setTimeout(r, 2_000));
    const abortSeen = aborted.includes(victim);
    const closing = w.close(); // drainTimeoutMs 300
    const closed = await within(closing, 5_000);
    for (const r of releases.splice(0)) r(); // unblock, so the test can clean up
    await closing;
    open.splice(open.indexOf(w), 1);
    expect(started.length).toBe(70); // node concurrency is 100: the transport's receive maximum (64) does not cap runs
    expect({ abortSeen, closed }).toEqual({ abortSeen: true, closed: undefined });
  }, 30_000);
});

describe('review: JetStream', () => {

  it('a busy answer is sent again with a message id of its own: the stream takes it and the task runs', async () => {
    const space = ns();
    let calls = 0;
    const mid: Handler = async (env) => {
      calls++;
      await new Promise((r) => setTimeout(r, 1_000));
      return env.payload;
    };
    await worker({ transport: jetstream(space), id: `w-${space}`, ns: space, maxQueued: 0, leaseMs: 1_000 }, mid, 1);
    const o = await owner({ transport: jetstream(space), id: `o-${space}`, ns: space, leaseMs: 1_000 });
    await until(() => o.fleet!.list().some((p) => p.nodes.includes('f/mid')), 10_000, 'the worker in the registry');
    const flow = o.getFlow('f')!;
    const t1 = await flow.emit({ n: 1 });
    const t2 = await flow.emit({ n: 2 }); // the worker has no room: busy
    expect(await within(flow.fetch(t1.traceId), 5_000)).toEqual({ n: 1 });
    // Once the first is done there is room: the second should run within a few leases.
    expect(await within(flow.fetch(t2.traceId), 8_000)).toEqual({ n: 2 });
    expect(calls).toBe(2);
  }, 30_000);

  it('closing a worker does not wait for a running handler past its grace', async () => {
    const space = ns();
    let started = false;
    const mid: Handler = async (env) => {
      started = true;
      await new Promise((r) => setTimeout(r, 8_000)); // ignores its signal
      return env.payload;
    };
    const w = await worker({ transport: jetstream(space), id: `w-${space}`, ns: space }, mid, 1);
    const o = await owner({ transport: jetstream(space), id: `o-${space}`, ns: space });
    await o.getFlow('f')!.emit({ n: 1 });
    await until(() => started, 10_000, 'running');
    const t0 = Date.now();
    await w.close(); // drainTimeoutMs 300: the fleet's grace
    open.splice(open.indexOf(w), 1);
    expect(Date.now() - t0).toBeLessThan(3_000);
  }, 30_000);
});
