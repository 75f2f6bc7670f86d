import { randomUUID } from 'node:crypto';
import mqtt from 'mqtt';
import { beforeAll, describe, expect, it } from 'vitest';
import { MqttTransport } from '../../src/transport/mqtt.js';
import { MQTT_URL, requireBroker } from '../helpers/brokers.js';
import { deferred, until } from '../helpers/runtime.js';
import { envelope, transportContract } from './contract.js';

beforeAll(() => requireBroker('mqtt', MQTT_URL));

transportContract('MQTT 5', () => ({
  knowsNoResponders: false,
  async make() {
    const t = new MqttTransport({ url: MQTT_URL });
    await t.connect();
    return t;
  },
  async raw(topic, bytes) {
    const client = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5 });
    await client.publishAsync(topic, bytes, { qos: 1 });
    await client.endAsync();
  },
}));

describe('MQTT options', () => {
  it('refuses a client id that cannot be a topic segment (it names the reply topic)', () => {
    expect(() => new MqttTransport({ url: MQTT_URL, clientId: 'a.b' })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: 'clientId' }));
  });

  it('refuses bounds that would stall or be no bound (receive maximum 0, no pending publishes)', () => {
    for (const [option, value] of [['receiveMaximum', 0], ['receiveMaximum', 70_000], ['maxPendingPublishes', 0], ['maxEnvelopeBytes', -1]] as const) {
      expect(() => new MqttTransport({ url: MQTT_URL, [option]: value })).toThrow(expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field: option }));
    }
  });
});

describe('MQTT receive-side backpressure', () => {
  it('handles at most receiveMaximum envelopes at once and holds the rest at the broker; none is lost', async () => {
    const prefix = `roost-test-${randomUUID().slice(0, 8)}`;
    const sub = new MqttTransport({ url: MQTT_URL, receiveMaximum: 4 });
    const pub = new MqttTransport({ url: MQTT_URL });
    await Promise.all([sub.connect(), pub.connect()]);
    try {
      let running = 0;
      let most = 0;
      const seen: number[] = [];
      let open = deferred();
      await sub.subscribe(`${prefix}/slow`, async (env) => {
        running++;
        most = Math.max(most, running);
        seen.push(env.payload as number);
        await open.promise;
        running--;
      });
      await Promise.all(Array.from({ length: 20 }, (_, i) => pub.publish(`${prefix}/slow`, envelope(i))));
      await until(() => running === 4, 5_000, 'four handlers running');
      await new Promise((r) => setTimeout(r, 200));
      expect(seen).toHaveLength(4); // the other sixteen wait at the broker, not in this process
      const release = open;
      open = deferred();
      open.resolve();
      release.resolve();
      await until(() => seen.length === 20 && running === 0, 10_000, 'all twenty handled');
      expect(most).toBeLessThanOrEqual(4);
      expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    } finally {
      await Promise.allSettled([sub.close(), pub.close()]);
    }
  });

  it('a responder answers more requests at once than receiveMaximum (a reply does not hold its slot waiting for its PUBACK)', async () => {
    // A reply that waited for its PUBACK on the socket the client stops reading at the cap would
    // wait for ever once the cap was reached: replies go out on the sending connection.
    const prefix = `roost-test-${randomUUID().slice(0, 8)}`;
    const server = new MqttTransport({ url: MQTT_URL, receiveMaximum: 2 });
    const client = new MqttTransport({ url: MQTT_URL });
    await Promise.all([server.connect(), client.connect()]);
    try {
      await server.respond(`${prefix}/echo`, (env) => envelope((env.payload as number) * 2));
      const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => client.request(`${prefix}/echo`, envelope(i), { timeoutMs: 5_000 })));
      expect(answers.map((a) => a.payload)).toEqual(Array.from({ length: 20 }, (_, i) => i * 2));
    } finally {
      await Promise.allSettled([server.close(), client.close()]);
    }
  });

  it('handlers that publish and make requests on their own transport, receiveMaximum of them at once, all finish', async () => {
    // Each handler awaits a PUBACK and an answer: on one connection paced at the cap, those
    // would wait behind the handlers that wait for them.
    const prefix = `roost-test-${randomUUID().slice(0, 8)}`;
    const worker = new MqttTransport({ url: MQTT_URL, receiveMaximum: 2 });
    const helper = new MqttTransport({ url: MQTT_URL });
    const feeder = new MqttTransport({ url: MQTT_URL });
    await Promise.all([worker.connect(), helper.connect(), feeder.connect()]);
    try {
      await helper.respond(`${prefix}/price`, (env) => envelope((env.payload as number) + 100));
      const done: number[] = [];
      await feeder.subscribe(`${prefix}/done`, (env) => void done.push(env.payload as number));
      await worker.subscribe(`${prefix}/work`, async (env) => {
        const priced = await worker.request(`${prefix}/price`, envelope(env.payload), { timeoutMs: 5_000 });
        await worker.publish(`${prefix}/done`, envelope(priced.payload));
      });
      for (let i = 0; i < 12; i++) await feeder.publish(`${prefix}/work`, envelope(i));
      await until(() => done.length === 12, 10_000, 'twelve handlers to finish');
      expect([...done].sort((a, b) => a - b)).toEqual(Array.from({ length: 12 }, (_, i) => i + 100));
    } finally {
      await Promise.allSettled([worker.close(), helper.close(), feeder.close()]);
    }
  });

  it('a persistent session started again: a message for an earlier subscription never reaches another handler', async () => {
    // The session keeps the first process's subscriptions and their identifiers; the second
    // numbers its own from 1 again.
    const prefix = `roost-test-${randomUUID().slice(0, 8)}`;
    const clientId = `roost-test-${randomUUID().slice(0, 8)}`;
    const first = new MqttTransport({ url: MQTT_URL, clientId, session: { expirySeconds: 5 } });
    await first.connect();
    await first.subscribe(`${prefix}/orders`, () => {});
    await first.subscribe(`${prefix}/audit`, () => {});
    await first.close();
    const second = new MqttTransport({ url: MQTT_URL, clientId, session: { expirySeconds: 5 } });
    const pub = new MqttTransport({ url: MQTT_URL });
    await Promise.all([second.connect(), pub.connect()]);
    try {
      const audit: string[] = [];
      await second.subscribe(`${prefix}/audit`, (env, d) => void audit.push(`${d.topic}:${String(env.payload)}`));
      await pub.publish(`${prefix}/orders`, envelope('order'));
      await pub.publish(`${prefix}/audit`, envelope('entry'));
      await until(() => audit.length >= 1, 5_000, 'the audit entry');
      await new Promise((r) => setTimeout(r, 200));
      expect(audit).toEqual([`${prefix}/audit:entry`]);
    } finally {
      await Promise.allSettled([second.close(), pub.close()]);
    }
  });
});
