// Every transport refuses an option key it does not know (a typo would otherwise be ignored and
// the default silently used). Construction does not connect, so no broker is needed.
import { describe, expect, it } from 'vitest';
import { InProcessTransport, JetStreamTransport, MqttTransport, NatsTransport, openTransport } from '../../src/index.js';

const unknown = (field: string): unknown => expect.objectContaining({ code: 'ROOST_ERR_INVALID_OPTION', field }) as unknown;

describe('transport options', () => {
  it('each transport refuses an unknown key, naming it', () => {
    expect(() => new MqttTransport({ url: 'mqtt://127.0.0.1:1', recieveMaximum: 4 } as never)).toThrow(unknown('options.recieveMaximum'));
    expect(() => new NatsTransport({ url: 'nats://127.0.0.1:1', clientId: 'x' } as never)).toThrow(unknown('options.clientId'));
    expect(() => new JetStreamTransport({ url: 'nats://127.0.0.1:1', streem: 'S' } as never)).toThrow(unknown('options.streem'));
    expect(() => new InProcessTransport({ maxEnvelopeByte: 10 } as never)).toThrow(unknown('options.maxEnvelopeByte'));
    // An option of another transport is unknown too.
    expect(() => new NatsTransport({ url: 'nats://127.0.0.1:1', receiveMaximum: 4 } as never)).toThrow(unknown('options.receiveMaximum'));
    expect(() => new MqttTransport({ url: 'mqtt://127.0.0.1:1', stream: 'S' } as never)).toThrow(unknown('options.stream'));
    expect(() => openTransport('mqtt://127.0.0.1:1', { maxPendingPublish: 5 } as never)).toThrow(unknown('options.maxPendingPublish'));
  });

  it('each transport takes its own keys and the common ones', () => {
    const common = { maxEnvelopeBytes: 1024, maxPendingPublishes: 10, logger: null };
    expect(new MqttTransport({ url: 'mqtt://127.0.0.1:1', clientId: 'c', receiveMaximum: 4, connectTimeoutMs: 100, keepaliveSeconds: 5, ...common }).kind).toBe('mqtt');
    expect(new NatsTransport({ url: 'nats://127.0.0.1:1', name: 'n', connectTimeoutMs: 100, ...common }).kind).toBe('nats');
    expect(new JetStreamTransport({ url: 'nats://127.0.0.1:1', name: 'n', stream: 'S', maxDeliver: 3, ...common }).kind).toBe('jetstream');
    expect(new InProcessTransport(common).kind).toBe('inprocess');
    expect(openTransport('jetstream://127.0.0.1:1', { clientId: 'c', jetstream: { stream: 'S' } }).kind).toBe('jetstream');
  });
});
