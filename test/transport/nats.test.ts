import { randomUUID } from 'node:crypto';
import { connect } from '@nats-io/transport-node';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NatsTransport, natsSubject } from '../../src/transport/nats.js';
import { NATS_URL, requireBroker } from '../helpers/brokers.js';
import { envelope, transportContract } from './contract.js';

beforeAll(() => requireBroker('nats', NATS_URL));

transportContract('NATS', () => ({
  knowsNoResponders: true,
  async make() {
    const t = new NatsTransport({ url: NATS_URL });
    await t.connect();
    return t;
  },
  async raw(topic, bytes) {
    const nc = await connect({ servers: NATS_URL.replace('nats://', '') });
    nc.publish(natsSubject(topic.split('/')), bytes);
    await nc.drain();
  },
}));

describe('NATS requests (one reply subscription per connection, Roost’s table of waiting requests)', () => {
  const open: NatsTransport[] = [];
  const make = async (): Promise<NatsTransport> => {
    const t = new NatsTransport({ url: NATS_URL });
    await t.connect();
    open.push(t);
    return t;
  };
  afterEach(async () => {
    await Promise.allSettled(open.splice(0).map((t) => t.close()));
  });
  const topic = (): string => `roost-test-${randomUUID().slice(0, 8)}/q`;

  it('a request still waiting when close() is called is rejected with ROOST_ERR_TRANSPORT_UNAVAILABLE, and no timer is left', async () => {
    const [client, server] = [await make(), await make()];
    const t = topic();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    await server.respond(t, async (env) => {
      await held;
      return envelope(1, { parentId: env.id });
    });
    const pending = client.request(t, envelope(0), { timeoutMs: 60_000 }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 100)); // the request reached the responder
    const t0 = Date.now();
    await client.close();
    expect(await pending).toMatchObject({ code: 'ROOST_ERR_TRANSPORT_UNAVAILABLE' });
    expect(Date.now() - t0).toBeLessThan(5_000);
    release();
  });

  it('an answer after the timeout is dropped; the next requests are answered', async () => {
    const [client, server] = [await make(), await make()];
    const t = topic();
    let first = true;
    await server.respond(t, async (env) => {
      if (first) {
        first = false;
        await new Promise((r) => setTimeout(r, 300));
      }
      return envelope(env.payload, { parentId: env.id });
    });
    await expect(client.request(t, envelope(1), { timeoutMs: 100 })).rejects.toMatchObject({ code: 'ROOST_ERR_REQUEST_TIMEOUT' });
    await new Promise((r) => setTimeout(r, 400)); // the late answer came and was dropped
    const answers = await Promise.all([2, 3, 4].map((n) => client.request(t, envelope(n), { timeoutMs: 5_000 })));
    expect(answers.map((a) => a.payload)).toEqual([2, 3, 4]);
  });

  it('an answer that is not an envelope fails the request at once (ROOST_ERR_REQUEST_TIMEOUT) and is counted as dropped', async () => {
    const client = await make();
    const t = topic();
    const nc = await connect({ servers: NATS_URL.replace('nats://', '') });
    try {
      nc.subscribe(natsSubject(t.split('/')), { callback: (err, msg) => void (err === null && msg.respond('not json')) });
      await nc.flush();
      const t0 = Date.now();
      await expect(client.request(t, envelope(1), { timeoutMs: 5_000 })).rejects.toMatchObject({ code: 'ROOST_ERR_REQUEST_TIMEOUT' });
      expect(Date.now() - t0).toBeLessThan(2_000);
      expect(client.stats().dropped).toBe(1);
    } finally {
      await nc.drain();
    }
  });

  it('refuses a bad topic and an unknown option with coded rejections, not throws', async () => {
    const client = await make();
    const bad = client.request('a.b', envelope(1));
    await expect(bad).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION' });
    await expect(client.request(topic(), envelope(1), { nope: 1 } as never)).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION' });
  });
});
