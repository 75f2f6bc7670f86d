/**
 * Presence on the real brokers: a child process (test/fixtures/presence-worker.ts) publishes its
 * presence; a registry here sees it available with its capabilities and load. Killed (SIGKILL),
 * on MQTT the broker publishes its last will and the registry shows it `unavailable` at once; on
 * NATS (no will on 2.9) its entry expires from the registry after expiryMs. A clean close
 * publishes `unavailable` itself. Malformed records on the wire are counted and ignored.
 *
 * Each test has a namespace of its own; MQTT: every retained message it leaves is cleared (empty
 * retained payloads) and checked gone; NATS: its KV bucket is deleted.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Kvm } from '@nats-io/kv';
import { connect as natsConnect } from '@nats-io/transport-node';
import mqtt from 'mqtt';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { preparePresence, startPresence, watchPresence, type PresenceInfo, type PresenceRegistry } from '../../src/fleet/presence.js';
import { JetStreamTransport } from '../../src/transport/jetstream.js';
import { MqttTransport } from '../../src/transport/mqtt.js';
import { presenceKey } from '../../src/transport/nats-presence.js';
import { NatsTransport } from '../../src/transport/nats.js';
import { topicSegment, type Transport } from '../../src/transport/transport.js';
import { MQTT_URL, NATS_URL, deleteNatsStreams, presenceStream, requireBroker } from '../helpers/brokers.js';
import { TSX } from '../helpers/cli.js';
import { until } from '../helpers/runtime.js';

const WORKER = fileURLToPath(new URL('../fixtures/presence-worker.ts', import.meta.url));

beforeAll(async () => {
  await requireBroker('mqtt', MQTT_URL);
  await requireBroker('nats', NATS_URL);
});

interface Worker {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  send(line: string): void;
  output(): string;
}

function startWorker(url: string, namespace: string, id: string, heartbeatMs: number, expiryMs: number, load: number): Promise<Worker> {
  const child = spawn(process.execPath, ['--import', TSX, WORKER, url, namespace, id, String(heartbeatMs), String(expiryMs), String(load)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const worker: Worker = { child, exited, send: (line) => void child.stdin.write(`${line}\n`), output: () => out };
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString('utf8');
      if (out.includes('ready')) resolve(worker);
    });
    child.stderr.on('data', (d: Buffer) => (out += d.toString('utf8')));
    void exited.then((code) => reject(new Error(`the presence worker exited with ${code} before it was ready: ${out}`)));
  });
}

/** What each test made, removed after it. */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) {
    try {
      await c();
    } catch (error) {
      console.error('cleanup failed', error);
    }
  }
});

/** The retained messages under `<namespace>/presence/`, as a fresh client gets them. */
async function retainedUnder(namespace: string): Promise<string[]> {
  const client = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5 });
  const topics: string[] = [];
  client.on('message', (topic, payload, packet) => {
    if (packet.retain && payload.length > 0) topics.push(topic);
  });
  await client.subscribeAsync(`${namespace}/presence/#`, { qos: 1 });
  await new Promise((r) => setTimeout(r, 300));
  await client.endAsync();
  return topics;
}

/** Clears every retained message of the namespace (empty retained payloads), then checks none is left. */
function clearRetained(namespace: string, ids: readonly string[]): () => Promise<void> {
  return async () => {
    const client = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5 });
    const topics = new Set([...ids.map((id) => `${namespace}/presence/${topicSegment(id)}`), ...(await retainedUnder(namespace))]);
    for (const topic of topics) await client.publishAsync(topic, Buffer.alloc(0), { qos: 1, retain: true });
    await client.endAsync();
    expect(await retainedUnder(namespace)).toEqual([]);
  };
}

/** Deletes the namespace's presence bucket. */
function deleteBucket(namespace: string): () => Promise<void> {
  return () => deleteNatsStreams([presenceStream(namespace)]);
}

async function connected<T extends Transport>(t: T): Promise<T> {
  await t.connect();
  cleanups.push(() => t.close());
  return t;
}

async function registry(t: Transport, namespace: string): Promise<PresenceRegistry> {
  const r = await watchPresence(t, { namespace });
  cleanups.push(() => r.close());
  return r;
}

const BROKERS = [
  {
    name: 'MQTT',
    url: MQTT_URL,
    transport: (): Transport => new MqttTransport({ url: MQTT_URL }),
    cleanup: clearRetained,
    /** Puts raw bytes where a process's record goes. */
    raw: async (namespace: string, id: string, bytes: Buffer): Promise<void> => {
      const client = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5 });
      await client.publishAsync(`${namespace}/presence/${topicSegment(id)}`, bytes, { qos: 1, retain: true, properties: { messageExpiryInterval: 60 } });
      await client.endAsync();
    },
  },
  {
    name: 'NATS',
    url: NATS_URL,
    transport: (): Transport => new NatsTransport({ url: NATS_URL }),
    cleanup: (namespace: string) => deleteBucket(namespace),
    raw: async (namespace: string, id: string, bytes: Buffer): Promise<void> => {
      const nc = await natsConnect({ servers: NATS_URL.replace('nats://', '') });
      try {
        const kv = await new Kvm(nc).open(`${namespace}-presence`);
        await kv.put(presenceKey(id), bytes);
      } finally {
        await nc.close();
      }
    },
  },
] as const;

// Each test starts a child process (tsx compiles on start): slow on a busy machine.
describe.each(BROKERS)('presence on $name', { timeout: 60_000 }, (broker) => {
  it('a child process is seen available with its capabilities and load; a clean close publishes unavailable; malformed records are ignored', async () => {
    const ns = `roost-test-${randomUUID().slice(0, 8)}`;
    const id = `worker.${randomUUID().slice(0, 6)}:1`; // a dot and a colon: escaped in the topic and the key
    cleanups.push(broker.cleanup(ns, [id, 'bad']));
    const fleet = await registry(await connected(broker.transport()), ns);
    const w = await startWorker(broker.url, ns, id, 300, 10_000, 2);
    cleanups.push(async () => {
      w.child.kill('SIGKILL');
      await w.exited;
    });
    await until(() => fleet.get(id) !== undefined, 5_000, 'the worker’s record');
    const seen = fleet.get(id)!;
    expect(seen).toMatchObject({ id, status: 'available', load: 2, capacity: 8, nodes: ['triage/classify'] });
    expect(seen.agents).toEqual([{ name: 'summarizer', capabilities: ['summarize', 'text'], description: 'summarizes text' }]);
    expect(fleet.pick('summarize')?.id).toBe(id);
    expect(fleet.pick('node:triage/classify')?.id).toBe(id);
    w.send('load 5');
    await until(() => fleet.get(id)?.load === 5, 5_000, 'load 5');

    // Malformed records on the wire: counted and ignored, the registry keeps working.
    await broker.raw(ns, 'bad', Buffer.from('{not json'));
    await broker.raw(ns, 'bad', Buffer.from(JSON.stringify({ v: 1, id: 'bad', status: 'available', load: 'lots' })));
    await until(() => fleet.stats().malformed >= 2, 5_000, 'two malformed records');
    expect(fleet.get('bad')).toBeUndefined();

    const t0 = Date.now();
    w.send('close');
    expect(await w.exited).toBe(0);
    await until(() => fleet.get(id)?.status === 'unavailable', 5_000, 'unavailable');
    expect(Date.now() - t0).toBeLessThan(5_000); // long before its 10 s expiry: the close said so itself
    expect(fleet.get(id)!.agents).toHaveLength(1);
    expect(fleet.pick('summarize')).toBeNull();
  });
});

describe('presence: a SIGKILLed process', { timeout: 60_000 }, () => {
  it('MQTT: the broker publishes its last will and the registry shows it unavailable within the bound (not by expiry)', async () => {
    const ns = `roost-test-${randomUUID().slice(0, 8)}`;
    const id = `killed-${randomUUID().slice(0, 6)}`;
    cleanups.push(clearRetained(ns, [id]));
    const fleet = await registry(await connected(new MqttTransport({ url: MQTT_URL })), ns);
    const changes: string[] = [];
    fleet.onChange((info, change) => changes.push(`${change}:${info.status}`));
    // A 10 s expiry and a 1 s keepalive: only the will can say "unavailable" within 3 s.
    const w = await startWorker(MQTT_URL, ns, id, 500, 10_000, 1);
    await until(() => fleet.get(id)?.status === 'available', 5_000, 'available');
    const t0 = Date.now();
    w.child.kill('SIGKILL');
    expect(await w.exited).toBeNull();
    await until(() => fleet.get(id)?.status === 'unavailable', 3_000, 'the last will');
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeLessThan(3_000);
    const gone = fleet.get(id)!;
    expect(gone.agents.map((a) => a.name)).toEqual(['summarizer']); // what it hosted, from its last heartbeat
    expect(fleet.pick('summarize')).toBeNull();
    expect(changes.at(-1)).toBe('update:unavailable');
    // The will is retained (with an expiry): a registry that starts now sees it too.
    const late = await registry(await connected(new MqttTransport({ url: MQTT_URL })), ns);
    await until(() => late.get(id) !== undefined, 3_000, 'the retained will');
    expect(late.get(id)!.status).toBe('unavailable');
  });

  it('NATS: its entry expires from the registry after expiryMs (no will on nats-server 2.9)', async () => {
    const ns = `roost-test-${randomUUID().slice(0, 8)}`;
    const id = `killed-${randomUUID().slice(0, 6)}`;
    cleanups.push(deleteBucket(ns));
    const heartbeatMs = 300;
    const expiryMs = 1_500;
    const fleet = await registry(await connected(new NatsTransport({ url: NATS_URL })), ns);
    const downs: PresenceInfo[] = [];
    fleet.onChange((info, change) => void (change === 'down' && downs.push(info)));
    const w = await startWorker(NATS_URL, ns, id, heartbeatMs, expiryMs, 1);
    await until(() => fleet.get(id)?.status === 'available', 5_000, 'available');
    const t0 = Date.now();
    w.child.kill('SIGKILL');
    expect(await w.exited).toBeNull();
    await until(() => downs.length === 1, 2 * expiryMs, 'the entry to expire');
    const elapsed = Date.now() - t0;
    // Its last heartbeat was at most one heartbeat before the kill.
    expect(elapsed).toBeGreaterThanOrEqual(expiryMs - heartbeatMs - 50);
    expect(elapsed).toBeLessThan(2 * expiryMs);
    expect(downs[0]!.status).toBe('available'); // it never said otherwise: its heartbeats stopped
    expect(fleet.get(id)).toBeUndefined();
    expect(fleet.list()).toEqual([]);
    expect(fleet.stats().expired).toBe(1);
  });
});

describe('presence on JetStream', () => {
  it('works through a JetStreamTransport too (its connection carries the KV bucket)', async () => {
    const ns = `roost-test-${randomUUID().slice(0, 8)}`;
    const stream = `PRESENCE_${randomUUID().slice(0, 8)}`;
    cleanups.push(() => deleteNatsStreams([presenceStream(ns), stream]));
    const t = await connected(new JetStreamTransport({ url: NATS_URL, stream }));
    preparePresence(t, { namespace: ns, id: 'js-1' }); // no will on NATS: only checks
    const fleet = await registry(t, ns);
    const handle = await startPresence(t, { namespace: ns, id: 'js-1', heartbeatMs: 200 }, () => ({ status: 'draining', load: 0, capacity: 2, agents: [], nodes: [] }));
    await until(() => fleet.get('js-1')?.status === 'draining', 5_000, 'draining');
    expect(fleet.pick('anything')).toBeNull();
    await handle.close();
    await until(() => fleet.get('js-1')?.status === 'unavailable', 5_000, 'unavailable');
  });
});

describe('presence on MQTT: the will', () => {
  it('must be set before connect(), and startPresence refuses a transport without it', async () => {
    const ns = `roost-test-${randomUUID().slice(0, 8)}`;
    cleanups.push(clearRetained(ns, ['x']));
    const t = await connected(new MqttTransport({ url: MQTT_URL }));
    expect(() => preparePresence(t, { namespace: ns, id: 'x' })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_STATE' }));
    await expect(startPresence(t, { namespace: ns, id: 'x' }, () => ({ status: 'available', load: 0, capacity: 0, agents: [], nodes: [] }))).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE' });
  });
});
