/**
 * A private broker killed and started again: each transport says so in its state events
 * (reconnecting, then connected), comes back by itself with its subscriptions, and works again.
 * (Zero loss across the outage is the outbox's job, which comes with the journal integration.)
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import type { Envelope } from '../../src/index.js';
import { MqttTransport } from '../../src/transport/mqtt.js';
import { NatsTransport } from '../../src/transport/nats.js';
import type { Transport, TransportStateEvent } from '../../src/transport/transport.js';
import { privateBroker, type PrivateBroker } from '../helpers/private-broker.js';
import { until } from '../helpers/runtime.js';
import { envelope } from './contract.js';

let broker: PrivateBroker | null = null;
const open: Transport[] = [];
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((t) => t.close()));
  await broker?.dispose();
  broker = null;
});

const KINDS = [
  { name: 'MQTT', broker: 'mosquitto' as const, make: (url: string, maxPendingPublishes?: number): Transport => new MqttTransport({ url, ...(maxPendingPublishes === undefined ? {} : { maxPendingPublishes }) }) },
  { name: 'NATS', broker: 'nats' as const, make: (url: string, maxPendingPublishes?: number): Transport => new NatsTransport({ url, ...(maxPendingPublishes === undefined ? {} : { maxPendingPublishes }) }) },
];

describe.each(KINDS)('$name across a broker restart', ({ broker: kind, make }) => {
  it('reports reconnecting then connected, and delivers again without a new subscribe', { timeout: 30_000 }, async () => {
    broker = await privateBroker(kind);
    const [pub, sub] = [make(broker.url), make(broker.url)];
    open.push(pub, sub);
    await Promise.all([pub.connect(), sub.connect()]);
    const states: TransportStateEvent['state'][] = [];
    sub.onState((e) => states.push(e.state));
    const topic = `roost-test-${randomUUID().slice(0, 8)}/r`;
    const got: Envelope[] = [];
    await sub.subscribe(topic, (env) => void got.push(env));
    await pub.publish(topic, envelope('before'));
    await until(() => got.length === 1, 5_000, 'the first delivery');

    await broker.stop();
    await until(() => states.includes('reconnecting'), 10_000, 'the reconnecting state');
    await broker.start();
    // Down for a moment only: the backoff has grown to a few hundred ms at most, so back within
    // 5 s (a reconnect loop that never came due took 10 s here once).
    await until(() => states.at(-1) === 'connected' && pub.state === 'connected', 5_000, 'both connected again');
    // The subscription is back (resubscribed by the client); a publish after the restart arrives.
    const after = envelope('after');
    const end = Date.now() + 10_000;
    while (!got.some((g) => g.payload === 'after')) {
      if (Date.now() > end) throw new Error('no delivery after the restart');
      await pub.publish(topic, after);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(states.slice(0, 1)).toEqual(['reconnecting']);
    expect(states.at(-1)).toBe('connected');
  });

  it('while the broker is away, publishes wait up to the bound (MQTT) or fail at once (NATS); never an unbounded buffer', { timeout: 30_000 }, async () => {
    broker = await privateBroker(kind);
    const pub = make(broker.url, 3);
    open.push(pub);
    await pub.connect();
    const states: TransportStateEvent['state'][] = [];
    pub.onState((e) => states.push(e.state));
    await broker.stop();
    await until(() => states.includes('reconnecting'), 10_000, 'the reconnecting state');
    const topic = `roost-test-${randomUUID().slice(0, 8)}/p`;
    if (kind === 'nats') {
      // nats.js does not hold a flush while disconnected: the publish fails at once, coded.
      await expect(pub.publish(topic, envelope(0))).rejects.toMatchObject({ code: 'ROOST_ERR_TRANSPORT_UNAVAILABLE', details: { transport: 'nats' } });
      await broker.start();
      await until(() => pub.state === 'connected', 5_000, 'connected again');
      await pub.publish(topic, envelope(5));
      return;
    }
    const waiting = [1, 2, 3].map((i) => pub.publish(topic, envelope(i)));
    await expect(pub.publish(topic, envelope(4))).rejects.toMatchObject({ code: 'ROOST_ERR_TRANSPORT_UNAVAILABLE', details: { pending: 3, max: 3 } });
    await broker.start();
    await Promise.all(waiting); // the three go out once the broker is back
    await pub.publish(topic, envelope(5)); // and there is room again
  });

  it('with the broker away, a request times out without crashing, and close() still returns', { timeout: 30_000 }, async () => {
    broker = await privateBroker(kind);
    const t = make(broker.url);
    await t.connect();
    const states: TransportStateEvent['state'][] = [];
    t.onState((e) => states.push(e.state));
    await broker.stop();
    await until(() => states.includes('reconnecting'), 10_000, 'the reconnecting state');
    const topic = `roost-test-${randomUUID().slice(0, 8)}/q`;
    const error = await t.request(topic, envelope(1), { timeoutMs: 200 }).catch((e: unknown) => e);
    expect((error as { code?: string }).code).toMatch(/^ROOST_ERR_(REQUEST_TIMEOUT|TRANSPORT_UNAVAILABLE)$/);
    await new Promise((r) => setTimeout(r, 300)); // a late rejection would surface here
    await t.close(); // resolves although publishes wait for a broker that is gone
    expect(t.state).toBe('closed');
  });
});
