/**
 * TLS against a private Mosquitto and a private nats-server that require a client certificate
 * (mTLS), with certificates made by openssl for the test: the right CA and a client certificate
 * connect and carry envelopes; a wrong CA, or no client certificate, is a clear coded error.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Envelope } from '../../src/index.js';
import type { TransportTlsOptions } from '../../src/transport/base.js';
import { MqttTransport } from '../../src/transport/mqtt.js';
import { NatsTransport } from '../../src/transport/nats.js';
import type { Transport } from '../../src/transport/transport.js';
import { makeCerts, type Certs } from '../helpers/certs.js';
import { privateBroker, type PrivateBroker } from '../helpers/private-broker.js';
import { until } from '../helpers/runtime.js';
import { envelope } from './contract.js';

let certs: Certs;
beforeAll(() => {
  certs = makeCerts();
});
afterAll(() => certs.cleanup());

const KINDS = [
  { name: 'MQTT', broker: 'mosquitto' as const, make: (url: string, tls: TransportTlsOptions): Transport => new MqttTransport({ url, tls }) },
  { name: 'NATS', broker: 'nats' as const, make: (url: string, tls: TransportTlsOptions): Transport => new NatsTransport({ url, tls }) },
];

describe.each(KINDS)('$name over TLS with a client certificate', ({ broker: kind, make }) => {
  let broker: PrivateBroker;
  beforeAll(async () => {
    broker = await privateBroker(kind, certs);
  });
  afterAll(() => broker.dispose());

  it('connects with the right CA and a client certificate, and carries envelopes', async () => {
    const tls = { caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey };
    const [pub, sub] = [make(broker.url, tls), make(broker.url, tls)];
    try {
      await Promise.all([pub.connect(), sub.connect()]);
      const topic = `roost-test-${randomUUID().slice(0, 8)}/tls`;
      const got: Envelope[] = [];
      await sub.subscribe(topic, (env) => void got.push(env));
      const sent = envelope({ secret: 'over tls' });
      await pub.publish(topic, sent);
      await until(() => got.length === 1, 5_000, 'the delivery');
      expect(got[0]).toEqual(sent);
    } finally {
      await Promise.allSettled([pub.close(), sub.close()]);
    }
  });

  it('a wrong CA is ROOST_ERR_TRANSPORT_UNAVAILABLE that says TLS', async () => {
    const t = make(broker.url, { caFile: certs.otherCa, certFile: certs.clientCert, keyFile: certs.clientKey });
    const error = (await t.connect().catch((e: unknown) => e)) as { code?: string; message: string; details?: Record<string, unknown> };
    expect(error.code).toBe('ROOST_ERR_TRANSPORT_UNAVAILABLE');
    expect(error.message).toMatch(/TLS: check tls\.caFile/);
    expect(error.details).toMatchObject({ tls: true, url: broker.url });
    await t.close();
  });

  it('no client certificate is ROOST_ERR_TRANSPORT_UNAVAILABLE', async () => {
    const t = make(broker.url, { caFile: certs.ca });
    const error = (await t.connect().catch((e: unknown) => e)) as { code?: string; message: string };
    expect(error.code).toBe('ROOST_ERR_TRANSPORT_UNAVAILABLE');
    expect(error.message).toContain(`cannot connect to ${broker.url}`);
    expect(error.message).toMatch(/tls\.certFile/); // it says where to look
    await t.close();
  });

  it('an unreadable certificate file is ROOST_ERR_INVALID_OPTION naming it', async () => {
    const t = make(broker.url, { caFile: `${certs.dir}/missing.pem` });
    await expect(t.connect()).rejects.toMatchObject({ code: 'ROOST_ERR_INVALID_OPTION', field: 'tls.caFile' });
    await t.close();
  });
});

describe.each(KINDS)('$name with a username and password', ({ broker: kind }) => {
  let broker: PrivateBroker;
  const auth = { user: 'roost', password: `pw-${randomUUID().slice(0, 8)}` };
  beforeAll(async () => {
    broker = await privateBroker(kind, undefined, { auth });
  });
  afterAll(() => broker.dispose());
  const url = (user: string, password: string): string => broker.url.replace('://', `://${user}:${encodeURIComponent(password)}@`);
  const make = (u: string): Transport => (kind === 'nats' ? new NatsTransport({ url: u, connectTimeoutMs: 3_000 }) : new MqttTransport({ url: u, connectTimeoutMs: 3_000 }));

  it('the right credentials in the URL connect and carry envelopes', async () => {
    const [a, b] = [make(url(auth.user, auth.password)), make(url(auth.user, auth.password))];
    try {
      await Promise.all([a.connect(), b.connect()]);
      const got: Envelope[] = [];
      const topic = `roost-test-${randomUUID().slice(0, 8)}/auth`;
      await b.subscribe(topic, (env) => void got.push(env));
      await a.publish(topic, envelope('authenticated'));
      await until(() => got.length === 1, 5_000, 'the delivery');
    } finally {
      await Promise.allSettled([a.close(), b.close()]);
    }
  });

  it('a wrong password is ROOST_ERR_TRANSPORT_UNAVAILABLE that does not show it', async () => {
    const t = make(url(auth.user, 'wrong-secret'));
    const error = await t.connect().then(
      () => null,
      (e: unknown) => e as Error & { code: string },
    );
    await t.close();
    expect(error).toMatchObject({ code: 'ROOST_ERR_TRANSPORT_UNAVAILABLE' });
    expect(error!.message).toMatch(/not authori[sz]ed|authorization|bad user name or password/i);
    expect(error!.message).not.toContain('wrong-secret');
    expect(error!.message).toContain('roost:***@');
  });
});
