/**
 * Presence and the fleet registry on the in-process transport: what a process publishes, what a
 * registry lists and drops, how pick() chooses, and malformed records ignored.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { preparePresence, startPresence, watchPresence, type PresenceHandle, type PresenceInfo, type PresenceRegistry } from '../../src/fleet/presence.js';
import { InProcessBroker, InProcessTransport } from '../../src/transport/in-process.js';
import type { Transport } from '../../src/transport/transport.js';
import { until } from '../helpers/runtime.js';

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const c of open.splice(0).reverse()) await c.close();
});

async function transport(broker: InProcessBroker): Promise<InProcessTransport> {
  const t = new InProcessTransport({ broker });
  await t.connect();
  open.push(t);
  return t;
}

type Snap = Parameters<typeof startPresence>[2] extends () => infer S ? S : never;

function snap(load: number, capabilities: string[], extra: Partial<Snap> = {}): Snap {
  return { status: 'available', load, capacity: 4, agents: [{ name: 'worker', capabilities }], nodes: [], ...extra };
}

async function publish(t: Transport, namespace: string, id: string, s: () => Snap, timing = { heartbeatMs: 50, expiryMs: 300 }): Promise<PresenceHandle> {
  const h = await startPresence(t, { namespace, id, ...timing }, s);
  open.push({ close: () => h.close() });
  return h;
}

async function registry(t: Transport, namespace: string): Promise<PresenceRegistry> {
  const r = await watchPresence(t, { namespace });
  open.push(r);
  return r;
}

describe('presence on the in-process transport', () => {
  it('a registry sees a process available with its agents, capabilities and load, then unavailable after a clean close, then drops it at expiry', async () => {
    const broker = new InProcessBroker();
    const ns = `ns-${randomUUID().slice(0, 8)}`;
    const [a, b] = [await transport(broker), await transport(broker)];
    let load = 1;
    const handle = await publish(a, ns, 'host-1:42:abc', () => snap(load, ['summarize', 'translate'], { nodes: ['triage/classify'] }));
    const fleet = await registry(b, ns);
    const changes: string[] = [];
    fleet.onChange((info, change) => changes.push(`${change}:${info.id}:${info.status}`));
    await until(() => fleet.get('host-1:42:abc') !== undefined, 2_000, 'the record');
    const seen = fleet.get('host-1:42:abc')!;
    expect(seen).toMatchObject({ id: 'host-1:42:abc', status: 'available', load: 1, capacity: 4, nodes: ['triage/classify'] });
    expect(seen.agents).toEqual([{ name: 'worker', capabilities: ['summarize', 'translate'] }]);
    expect(seen.expiresAt - seen.ts).toBe(300);
    expect(seen.version).toMatch(/^\d+\.\d+\.\d+/);
    load = 3;
    await until(() => fleet.get('host-1:42:abc')?.load === 3, 2_000, 'the next heartbeat');
    await handle.close();
    expect(handle.state).toBe('closed');
    await until(() => fleet.get('host-1:42:abc')?.status === 'unavailable', 2_000, 'unavailable');
    expect(fleet.get('host-1:42:abc')!.agents).toHaveLength(1); // still shows what it hosted
    expect(fleet.pick('summarize')).toBeNull();
    const t0 = Date.now();
    await until(() => fleet.list().length === 0, 2_000, 'the entry to expire');
    expect(Date.now() - t0).toBeLessThan(600);
    await until(() => changes.at(-1) === 'down:host-1:42:abc:unavailable', 1_000, 'down');
    expect(changes[0]).toMatch(/^(up|update):host-1:42:abc:available$/);
    expect(fleet.stats().expired).toBe(1);
  });

  it('a process that stops heartbeating expires from the registry (down) within its expiry', async () => {
    const broker = new InProcessBroker();
    const ns = `ns-${randomUUID().slice(0, 8)}`;
    const [a, b] = [await transport(broker), await transport(broker)];
    const fleet = await registry(b, ns);
    const downs: PresenceInfo[] = [];
    fleet.onChange((info, change) => void (change === 'down' && downs.push(info)));
    // A record put once, as a process that then died without a will would leave it.
    const now = Date.now();
    const record = { v: 1, id: 'gone', status: 'available', version: '0.1.0', load: 0, capacity: 1, agents: [{ name: 'x', capabilities: ['c'] }], nodes: [], ts: now, expiresAt: now + 200, expiryMs: 200 };
    await a.presence(ns).put('gone', Buffer.from(JSON.stringify(record)), 200);
    await until(() => fleet.get('gone') !== undefined, 1_000, 'the record');
    expect(fleet.pick('c')?.id).toBe('gone');
    await until(() => downs.length === 1, 1_000, 'the expiry');
    expect(Date.now() - now).toBeGreaterThanOrEqual(195);
    expect(fleet.list()).toEqual([]);
    expect(fleet.pick('c')).toBeNull();
  });

  it('a registry started later gets the records kept now', async () => {
    const broker = new InProcessBroker();
    const ns = `ns-${randomUUID().slice(0, 8)}`;
    const a = await transport(broker);
    await publish(a, ns, 'p1', () => snap(0, ['c']));
    const fleet = await registry(await transport(broker), ns);
    expect(fleet.get('p1')?.status).toBe('available'); // delivered during watchPresence itself
  });

  it('pick() takes the least-loaded healthy process with the capability, skipping unavailable, draining and expired ones; ties take turns', async () => {
    const broker = new InProcessBroker();
    const ns = `ns-${randomUUID().slice(0, 8)}`;
    const t = await transport(broker);
    const put = async (id: string, load: number, capacity: number, status: string, caps: string[], expiryMs = 60_000, nodes: string[] = []): Promise<void> => {
      const now = Date.now();
      const r = { v: 1, id, status, version: '0.1.0', load, capacity, agents: [{ name: `agent-${id}`, capabilities: caps }], nodes, ts: now, expiresAt: now + expiryMs, expiryMs };
      await t.presence(ns).put(id, Buffer.from(JSON.stringify(r)), expiryMs);
    };
    const fleet = await registry(t, ns);
    await put('busy', 3, 4, 'available', ['sum']);
    await put('idle-down', 0, 4, 'unavailable', ['sum']);
    await put('idle-draining', 0, 4, 'draining', ['sum']);
    await put('light', 1, 4, 'available', ['sum'], 60_000, ['triage/classify']);
    await put('other', 0, 4, 'available', ['translate']);
    await put('short', 0, 4, 'available', ['sum'], 100);
    await until(() => fleet.list().length === 6, 1_000, 'six records');
    expect(fleet.pick('sum')?.id).toBe('short');
    await until(() => fleet.get('short') === undefined, 1_000, 'short to expire');
    expect(fleet.pick('sum')?.id).toBe('light');
    expect(fleet.pick('node:triage/classify')?.id).toBe('light');
    expect(fleet.pick('agent:agent-busy')?.id).toBe('busy');
    expect(fleet.pick('nobody-has-it')).toBeNull();
    // The caller's own dispatches not yet reported count too.
    expect(fleet.pick('sum', (id) => (id === 'light' ? 3 : 0))?.id).toBe('busy');
    // Capacity: load 2 of 8 is lighter than 1 of 2; a full process comes after one with room.
    await put('big', 2, 8, 'available', ['sum']);
    await put('small', 1, 2, 'available', ['sum']);
    await until(() => fleet.get('small') !== undefined, 1_000, 'small');
    expect(fleet.pick('sum', (id) => (id === 'light' ? 9 : 0))?.id).toBe('big');
    // Ties take turns.
    await put('twin-a', 0, 4, 'available', ['twin']);
    await put('twin-b', 0, 4, 'available', ['twin']);
    await until(() => fleet.get('twin-b') !== undefined, 1_000, 'twins');
    const picks = new Set([fleet.pick('twin')?.id, fleet.pick('twin')?.id]);
    expect(picks).toEqual(new Set(['twin-a', 'twin-b']));
    // A removed record (an empty retained message, a KV delete) leaves at once.
    await t.presence(ns).remove('big');
    await until(() => fleet.get('big') === undefined, 1_000, 'big removed');
    expect(() => fleet.pick('')).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'capability' }));
  });

  it('ignores malformed records (bad JSON, wrong types, an id not its key’s), counts them, and keeps working', async () => {
    const broker = new InProcessBroker();
    const ns = `ns-${randomUUID().slice(0, 8)}`;
    const t = await transport(broker);
    const fleet = await registry(t, ns);
    const channel = t.presence(ns);
    const now = Date.now();
    const good = { v: 1, id: 'ok', status: 'available', version: '0.1.0', load: 0, capacity: 1, agents: [], nodes: [], ts: now, expiresAt: now + 60_000, expiryMs: 60_000 };
    const bad: [string, unknown][] = [
      ['ok', 'not json {'],
      ['ok', { ...good, load: 'many' }],
      ['ok', { ...good, status: 'sleeping' }],
      ['ok', { ...good, agents: [{ name: 'a b', capabilities: [] }] }],
      ['ok', { ...good, v: 2 }],
      ['ok', { ...good, nodes: ['no-slash'] }],
      ['ok', [1, 2, 3]],
      ['spoofed', good],
    ];
    await channel.put('ok', Buffer.from(JSON.stringify(good)), 60_000);
    for (const [id, body] of bad) await channel.put(id, Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)), 60_000);
    await until(() => fleet.stats().malformed === bad.length, 1_000, 'the malformed records counted');
    expect(fleet.list().map((e) => e.id)).toEqual(['ok']);
    expect(fleet.get('ok')!.load).toBe(0); // the valid record stays as it was
    await channel.put('ok', Buffer.from(JSON.stringify({ ...good, load: 1 })), 60_000);
    await until(() => fleet.get('ok')?.load === 1, 1_000, 'a valid record after them');
  });

  it('checks its options: coded errors naming the field', async () => {
    const broker = new InProcessBroker();
    const t = await transport(broker);
    const s = (): Snap => snap(0, []);
    await expect(startPresence(t, { namespace: 'a/b', id: 'x' }, s)).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'namespace' });
    await expect(startPresence(t, { namespace: 'ns', id: 'has space' }, s)).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'id' });
    await expect(startPresence(t, { namespace: 'ns', id: 'x', heartbeatMs: 1_000, expiryMs: 1_000 }, s)).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'expiryMs' });
    await expect(startPresence(t, { namespace: 'ns', id: 'x', heartbeat: 5 } as never, s)).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'options.heartbeat' });
    await expect(startPresence(t, { namespace: 'ns', id: 'x' }, () => ({ ...snap(0, []), load: -1 }))).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'presence.load' });
    await expect(watchPresence(t, { namespace: '' })).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'namespace' });
    const fresh = new InProcessTransport({ broker });
    await expect(startPresence(fresh, { namespace: 'ns', id: 'x' }, s)).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_STATE' });
    preparePresence(fresh, { namespace: 'ns', id: 'x' }); // no will in-process: only checks
    const bare = { kind: 'custom', state: 'connected' } as unknown as Transport;
    await expect(startPresence(bare, { namespace: 'ns', id: 'x' }, s)).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'transport' });
  });
});
