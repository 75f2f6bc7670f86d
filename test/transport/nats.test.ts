import { connect } from '@nats-io/transport-node';
import { beforeAll } from 'vitest';
import { NatsTransport, natsSubject } from '../../src/transport/nats.js';
import { NATS_URL, requireBroker } from '../helpers/brokers.js';
import { transportContract } from './contract.js';

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
