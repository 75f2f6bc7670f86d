/**
 * `roost agents` and `GET /v1/agents` with a fleet: the command watches a real broker's presence
 * (MQTT, NATS) and prints the fleet as a table or JSON; with `--url` it asks a running server,
 * whose `GET /v1/agents` shows its registry's fleet beside its own agents.
 */
import { randomUUID } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect } from '@nats-io/transport-node';
import mqtt from 'mqtt';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { preparePresence, startPresence, watchPresence, type PresenceInfo } from '../../src/fleet/presence.js';
import { node } from '../../src/index.js';
import { InProcessBroker, InProcessTransport } from '../../src/transport/in-process.js';
import { MqttTransport } from '../../src/transport/mqtt.js';
import { NatsTransport } from '../../src/transport/nats.js';
import { topicSegment, type Transport } from '../../src/transport/transport.js';
import { MQTT_URL, NATS_URL, requireBroker } from '../helpers/brokers.js';
import { roostAsync } from '../helpers/cli.js';
import { until } from '../helpers/runtime.js';
import { call, startService } from '../helpers/service.js';

beforeAll(async () => {
  await requireBroker('mqtt', MQTT_URL);
  await requireBroker('nats', NATS_URL);
});

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const snapshot = () => ({
  status: 'available' as const,
  load: 2,
  capacity: 8,
  agents: [{ name: 'summarizer', capabilities: ['summarize', 'text'] }],
  nodes: ['triage/classify'],
});

/** A process publishing its presence on `t` (connected here), closed after the test. */
async function publisher(t: Transport, namespace: string, id: string): Promise<void> {
  preparePresence(t, { namespace, id });
  await t.connect();
  const handle = await startPresence(t, { namespace, id, heartbeatMs: 1_000 }, snapshot);
  cleanups.push(async () => {
    await handle.close();
    await t.close();
  });
}

// Each test starts `roost` child processes (tsx compiles on start): slow on a busy machine.
describe('roost agents', { timeout: 60_000 }, () => {
  it('against MQTT: a table (id, status, load/capacity, agents and capabilities, nodes, last seen), and JSON with --json', async () => {
    const ns = `roost-test-${randomUUID().slice(0, 8)}`;
    const id = `w-${randomUUID().slice(0, 6)}`;
    cleanups.push(async () => {
      const client = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5 });
      await client.publishAsync(`${ns}/presence/${topicSegment(id)}`, Buffer.alloc(0), { qos: 1, retain: true });
      await client.endAsync();
    });
    await publisher(new MqttTransport({ url: MQTT_URL }), ns, id);
    const table = await roostAsync(['agents', '--transport', MQTT_URL, '--namespace', ns, '--wait-ms', '500']);
    expect(table.status, table.stderr).toBe(0);
    const [head, row] = table.stdout.trim().split('\n');
    expect(head).toMatch(/^ID\s+STATUS\s+LOAD\s+AGENTS\s+NODES\s+LAST SEEN$/);
    expect(row).toMatch(new RegExp(`^${id}\\s+available\\s+2/8\\s+summarizer\\[summarize,text\\]\\s+triage/classify\\s+\\d+\\.\\ds ago$`));
    const json = await roostAsync(['agents', '--transport', MQTT_URL, '--namespace', ns, '--json', '--wait-ms', '500']);
    expect(json.status, json.stderr).toBe(0);
    const body = JSON.parse(json.stdout) as { namespace: string; fleet: PresenceInfo[] };
    expect(body.namespace).toBe(ns);
    expect(body.fleet).toEqual([expect.objectContaining({ id, status: 'available', load: 2, capacity: 8, nodes: ['triage/classify'] })]);
  });

  it('against NATS, the transport from $ROOST_FLEET_TRANSPORT; an empty namespace says so and exits 0', async () => {
    const ns = `roost-test-${randomUUID().slice(0, 8)}`;
    cleanups.push(async () => {
      const nc = await natsConnect({ servers: NATS_URL.replace('nats://', '') });
      await (await jetstreamManager(nc)).streams.delete(`KV_${ns}-presence`).catch(() => {});
      await nc.close();
    });
    await publisher(new NatsTransport({ url: NATS_URL }), ns, 'nats-worker');
    const r = await roostAsync(['agents', '--namespace', ns, '--json', '--wait-ms', '300'], { env: { ROOST_FLEET_TRANSPORT: NATS_URL } });
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { fleet: PresenceInfo[] }).fleet.map((p) => p.id)).toEqual(['nats-worker']);
    const empty = await roostAsync(['agents', '--namespace', `${ns}-none`, '--wait-ms', '200'], { env: { ROOST_FLEET_TRANSPORT: MQTT_URL } });
    expect(empty.status, empty.stderr).toBe(0);
    expect(empty.stdout).toContain(`no processes in namespace ${ns}-none`);
  });

  it('bad usage exits 2 and says why; a broker that does not answer exits 1', async () => {
    // Independent runs, side by side: each is a child process starting tsx.
    const [none, wait, scheme, ns, down] = await Promise.all([
      roostAsync(['agents']),
      roostAsync(['agents', '--transport', MQTT_URL, '--wait-ms', 'soon']),
      roostAsync(['agents', '--transport', 'carrier-pigeon://x']),
      roostAsync(['agents', '--transport', MQTT_URL, '--namespace', 'a/b', '--wait-ms', '0']),
      roostAsync(['agents', '--transport', 'mqtt://127.0.0.1:1', '--wait-ms', '0']),
    ]);
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('--transport');
    expect(wait.status).toBe(2);
    expect(wait.stderr).toContain('--wait-ms');
    expect(scheme.status).toBe(2);
    expect(scheme.stderr).toContain('ROOST_ERR_INVALID_OPTION');
    expect(ns.status).toBe(2);
    expect(ns.stderr).toContain('namespace');
    expect(down.status).toBe(1);
    expect(down.stderr).toContain('ROOST_ERR_TRANSPORT_UNAVAILABLE');
  });
});

describe('GET /v1/agents with a fleet registry', { timeout: 60_000 }, () => {
  it('shows the fleet beside the local agents (and roost_fleet_processes counts it); roost agents --url prints it', async () => {
    const broker = new InProcessBroker();
    const ns = `ns-${randomUUID().slice(0, 8)}`;
    const t = new InProcessTransport({ broker });
    await t.connect();
    const handle = await startPresence(t, { namespace: ns, id: 'peer-1' }, snapshot);
    const fleet = await watchPresence(t, { namespace: ns });
    await until(() => fleet.get('peer-1') !== undefined, 2_000, 'the peer');
    const s = await startService((rt) => rt.flow({ name: 'echo', edges: [node('echo', (env) => env.payload).to()] }), { fleet });
    const bare = await startService((rt) => rt.flow({ name: 'echo', edges: [node('echo', (env) => env.payload).to()] }));
    cleanups.push(async () => {
      await Promise.all([s.close(), bare.close()]);
      await handle.close();
      await fleet.close();
      await t.close();
    });
    const r = await call(`${s.url}/v1/agents`, 'GET');
    expect(r.status).toBe(200);
    expect(r.json['agents']).toEqual(expect.any(Array));
    expect(r.json['fleet']).toEqual([expect.objectContaining({ id: 'peer-1', status: 'available', load: 2, capacity: 8, agents: [{ name: 'summarizer', capabilities: ['summarize', 'text'] }] })]);
    expect((await call(`${bare.url}/v1/agents`, 'GET')).json).not.toHaveProperty('fleet');
    const metrics = await call(`${s.url}/metrics`, 'GET');
    expect(metrics.text).toMatch(/^roost_fleet_processes\{status="available"\} 1$/m);
    expect(metrics.text).toMatch(/^roost_fleet_processes\{status="unavailable"\} 0$/m);

    const cli = await roostAsync(['agents', '--url', s.url, '--json']);
    expect(cli.status, cli.stderr).toBe(0);
    expect((JSON.parse(cli.stdout) as { fleet: PresenceInfo[] }).fleet.map((p) => p.id)).toEqual(['peer-1']);
    const none = await roostAsync(['agents', '--url', bare.url]);
    expect(none.status).toBe(1);
    expect(none.stderr).toContain('no fleet registry');
  });
});
