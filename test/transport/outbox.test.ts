/**
 * The outbox: envelopes published while the broker is away are kept in the journal and sent, in
 * order, when it is back; a private broker stopped and started during a stream loses nothing and
 * hands nothing over twice (with a persistent session and durable dedup on the receiving side).
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryStore, SqliteStore, type Envelope, type Store } from '../../src/index.js';
import { Dedup } from '../../src/transport/dedup.js';
import { MqttTransport } from '../../src/transport/mqtt.js';
import { JetStreamTransport } from '../../src/transport/jetstream.js';
import { NatsTransport } from '../../src/transport/nats.js';
import type { Transport } from '../../src/transport/transport.js';
import { privateBroker, type PrivateBroker } from '../helpers/private-broker.js';
import { until } from '../helpers/runtime.js';
import { envelope } from './contract.js';

const brokers: PrivateBroker[] = [];
const open: Transport[] = [];
const stores: Store[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((t) => t.close()));
  await Promise.allSettled(brokers.splice(0).map((b) => b.dispose()));
  await Promise.allSettled(stores.splice(0).map((s) => s.close()));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function sqlite(name: string): SqliteStore {
  const dir = mkdtempSync(join(tmpdir(), 'roost-outbox-'));
  dirs.push(dir);
  const store = new SqliteStore(join(dir, `${name}.db`));
  stores.push(store);
  return store;
}

function track<T extends Transport>(t: T): T {
  open.push(t);
  return t;
}

const id = (): string => randomUUID().slice(0, 8);

describe('outbox over MQTT', () => {
  it('keeps what is published while the broker is away and sends it in order when it is back', { timeout: 30_000 }, async () => {
    const broker = await privateBroker('mosquitto', undefined, { persistence: true });
    brokers.push(broker);
    const topic = `roost-test-${id()}/orders`;
    const sub = track(new MqttTransport({ url: broker.url, clientId: `sub-${id()}`, session: { expirySeconds: 300 } }));
    const pub = track(new MqttTransport({ url: broker.url, outbox: { store: sqlite('pub'), source: 'pub' } }));
    await Promise.all([sub.connect(), pub.connect()]);
    const got: number[] = [];
    await sub.subscribe(topic, (env) => void got.push(env.payload as number));

    await broker.stop({ graceful: true });
    await until(() => pub.state === 'reconnecting', 10_000, 'the publisher to see the broker gone');
    for (let n = 0; n < 50; n++) await pub.publish(topic, envelope(n)); // each resolves: accepted
    expect(pub.stats()).toMatchObject({ kept: 50, outbox: 50, published: 0 });

    await broker.start();
    await until(() => got.length >= 50, 15_000, 'the kept envelopes to arrive');
    expect(got).toEqual([...Array(50).keys()]);
    await until(() => pub.stats().outbox === 0, 5_000, 'the outbox to be empty');
    expect(pub.stats()).toMatchObject({ kept: 50, published: 50, outboxFailed: 0 });
    // Straight out again once drained.
    await pub.publish(topic, envelope(50));
    await until(() => got.length === 51, 5_000, 'a publish after the drain');
    expect(pub.stats().kept).toBe(50);
  });

  it('a broker stopped and started during a stream: zero lost, zero handled twice, outbox drained', { timeout: 60_000 }, async () => {
    const broker = await privateBroker('mosquitto', undefined, { persistence: true });
    brokers.push(broker);
    const topic = `roost-test-${id()}/stream`;
    const sub = track(new MqttTransport({ url: broker.url, clientId: `sub-${id()}`, session: { expirySeconds: 300 } }));
    const pub = track(new MqttTransport({ url: broker.url, clientId: `pub-${id()}`, session: { expirySeconds: 300 }, outbox: { store: sqlite('pub'), source: 'pub' } }));
    await Promise.all([sub.connect(), pub.connect()]);
    const handled = new Map<number, number>();
    const dedup = new Dedup({ store: sqlite('sub') });
    await sub.subscribe(
      topic,
      async (env) => {
        const n = env.payload as number;
        handled.set(n, (handled.get(n) ?? 0) + 1);
        await new Promise((r) => setTimeout(r, 1)); // a handler that takes a moment: some are in flight at the stop
      },
      { dedup },
    );

    const total = 600;
    // The publisher stops at 200 until the broker is down, sends 100 while it is (each kept),
    // and waits at 300 until it is back: the outage falls mid-stream, whatever the timing.
    let phase: 'up' | 'down' | 'back' = 'up';
    let published = 0;
    const publishing = (async () => {
      for (let n = 0; n < total; n++) {
        if (n === 200) await until(() => phase !== 'up', 20_000, 'the broker to stop');
        if (n === 300) await until(() => phase === 'back', 20_000, 'the broker to start');
        await pub.publish(topic, envelope(n)); // never rejects: sent, or kept
        published++;
        if (n % 10 === 0) await new Promise((r) => setTimeout(r, 2));
      }
    })();
    await until(() => handled.size >= 100 && published >= 200, 15_000, 'the stream to be under way');
    await broker.stop({ graceful: true });
    await until(() => pub.state === 'reconnecting', 10_000, 'the publisher to see the broker gone');
    phase = 'down';
    await until(() => published >= 300, 10_000, 'a hundred publishes during the outage');
    await broker.start();
    phase = 'back';
    await publishing;
    await until(() => handled.size === total, 30_000, `all ${total} envelopes to be handled`);
    await until(() => pub.stats().outbox === 0, 5_000, 'the outbox to be empty');
    await new Promise((r) => setTimeout(r, 500)); // late redeliveries, if any, would show now
    expect([...handled.keys()].sort((a, b) => a - b)).toEqual([...Array(total).keys()]);
    expect([...handled.values()].every((count) => count === 1)).toBe(true);
    expect(pub.stats().kept).toBeGreaterThanOrEqual(100); // the hundred published while it was down
    expect(pub.stats().outboxFailed).toBe(0);
  });

  it('what one publisher kept, the next one with the same journal and source sends', { timeout: 30_000 }, async () => {
    const broker = await privateBroker('mosquitto', undefined, { persistence: true });
    brokers.push(broker);
    const topic = `roost-test-${id()}/resume`;
    const dir = mkdtempSync(join(tmpdir(), 'roost-outbox-'));
    dirs.push(dir);
    const file = join(dir, 'pub.db');
    const sub = track(new MqttTransport({ url: broker.url, clientId: `sub-${id()}`, session: { expirySeconds: 300 } }));
    await sub.connect();
    const got: number[] = [];
    await sub.subscribe(topic, (env) => void got.push(env.payload as number));

    const first = new SqliteStore(file);
    const pub1 = new MqttTransport({ url: broker.url, outbox: { store: first, source: 'worker-1' } });
    await pub1.connect();
    await broker.stop({ graceful: true });
    await until(() => pub1.state === 'reconnecting', 10_000, 'the publisher to see the broker gone');
    for (let n = 0; n < 5; n++) await pub1.publish(topic, envelope(n));
    await pub1.close(); // the process ends with five envelopes kept
    await first.close();

    await broker.start();
    const second = new SqliteStore(file);
    stores.push(second);
    const pub2 = track(new MqttTransport({ url: broker.url, outbox: { store: second, source: 'worker-1' } }));
    await pub2.connect();
    await until(() => got.length === 5, 15_000, 'the kept envelopes of the first publisher');
    expect(got).toEqual([0, 1, 2, 3, 4]);
    await until(() => pub2.stats().outbox === 0, 5_000, 'the outbox to be empty');
    expect(await second.outboxSize('worker-1')).toBe(0);
  });

  it('a full outbox refuses with a coded error instead of dropping', { timeout: 30_000 }, async () => {
    const broker = await privateBroker('mosquitto');
    brokers.push(broker);
    const store = new MemoryStore();
    stores.push(store);
    const pub = track(new MqttTransport({ url: broker.url, outbox: { store, source: 'p', max: 3 } }));
    await pub.connect();
    await broker.stop();
    await until(() => pub.state === 'reconnecting', 10_000, 'the publisher to see the broker gone');
    for (let n = 0; n < 3; n++) await pub.publish('roost-test/full', envelope(n));
    await expect(pub.publish('roost-test/full', envelope(3))).rejects.toMatchObject({ code: 'ROOST_ERR_TRANSPORT_UNAVAILABLE', details: { outbox: 3, max: 3 } });
    expect(await store.outboxSize('p')).toBe(3);
    // Too big is refused at once, never kept.
    await expect(pub.publish('roost-test/full', envelope('x'.repeat(300 * 1024)))).rejects.toMatchObject({ code: 'ROOST_ERR_PAYLOAD_TOO_LARGE' });
  });

  it('checks its options', () => {
    const store = new MemoryStore();
    stores.push(store);
    expect(() => new MqttTransport({ url: 'mqtt://127.0.0.1:1', outbox: { store, source: 'no spaces' } })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'outbox.source' }));
    expect(() => new MqttTransport({ url: 'mqtt://127.0.0.1:1', outbox: { store, source: 'p', max: 0 } })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION' }));
    expect(() => new MqttTransport({ url: 'mqtt://127.0.0.1:1', outbox: { store: {} as Store, source: 'p' } })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'outbox.store' }));
    expect(() => new MqttTransport({ url: 'mqtt://127.0.0.1:1', session: { expirySeconds: 60 } })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'clientId' }));
    expect(() => new MqttTransport({ url: 'mqtt://127.0.0.1:1', clientId: 'c', session: { expirySeconds: 0 } })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION' }));
  });
});

describe('outbox over core NATS', () => {
  it('keeps what is published while the server is away and sends it in order when it is back', { timeout: 30_000 }, async () => {
    const broker = await privateBroker('nats');
    brokers.push(broker);
    const topic = `roost-test-${id()}/orders`;
    // One connection publishes and subscribes: nats.js resubscribes before the outbox drains, so
    // core NATS (at most once) loses nothing here; across connections that is JetStream's job.
    const t = track(new NatsTransport({ url: broker.url, outbox: { store: sqlite('nats'), source: 'n' } }));
    await t.connect();
    const got: Envelope[] = [];
    await t.subscribe(topic, (env) => void got.push(env));
    await broker.stop();
    await until(() => t.state === 'reconnecting', 10_000, 'the transport to see the server gone');
    for (let n = 0; n < 20; n++) await t.publish(topic, envelope(n));
    expect(t.stats()).toMatchObject({ kept: 20, outbox: 20 });
    await broker.start();
    await until(() => got.length >= 20, 15_000, 'the kept envelopes to arrive');
    expect(got.map((e) => e.payload)).toEqual([...Array(20).keys()]);
    await until(() => t.stats().outbox === 0, 5_000, 'the outbox to be empty');
  });
});

describe('outbox over JetStream', () => {
  it('keeps what is published while the server is away and a durable group gets it, in order, when it is back', { timeout: 60_000 }, async () => {
    const broker = await privateBroker('nats');
    brokers.push(broker);
    const stream = `OUTBOX_${id()}`;
    const options = { url: broker.url, stream, subjectPrefix: `roost-test.${id()}` };
    const sub = track(new JetStreamTransport(options));
    const pub = track(new JetStreamTransport({ ...options, outbox: { store: sqlite('js'), source: 'js' } }));
    await Promise.all([sub.connect(), pub.connect()]);
    const got: number[] = [];
    await sub.subscribe('orders', (env) => void got.push(env.payload as number), { group: 'billing', dedup: new Dedup() });
    await broker.stop({ graceful: true });
    await until(() => pub.state === 'reconnecting', 10_000, 'the publisher to see the server gone');
    for (let n = 0; n < 20; n++) await pub.publish('orders', envelope(n));
    expect(pub.stats()).toMatchObject({ kept: 20, outbox: 20 });
    await broker.start();
    await until(() => got.length >= 20, 30_000, 'the kept envelopes to arrive');
    expect(got).toEqual([...Array(20).keys()]);
    await until(() => pub.stats().outbox === 0, 5_000, 'the outbox to be empty');
  });
});
