/**
 * A transport from one URL, as the configuration and the CLI name it:
 *
 *   mqtt://host:1883, mqtts://host:8883     MQTT 5 (mqtt.ts)
 *   nats://host:4222, tls://host:4222       core NATS (nats.ts)
 *   jetstream://host:4222                   NATS JetStream (jetstream.ts; `jetstreams://` for TLS)
 *
 * Credentials may be in the URL (`mqtt://user:pass@host`); they never show in errors or logs.
 */
import { invalidOption } from '../errors.js';
import type { TransportBaseOptions } from './base.js';
import { InProcessTransport } from './in-process.js';
import { JetStreamTransport, type JetStreamTransportOptions } from './jetstream.js';
import { MqttTransport, type MqttTransportOptions } from './mqtt.js';
import { NatsTransport } from './nats.js';
import { shownUrl, type Transport } from './transport.js';

/** What every transport opened by URL may be given, besides the URL. */
export interface OpenTransportOptions extends TransportBaseOptions {
  /** The MQTT client id, or the NATS connection name. */
  readonly clientId?: string;
  /** MQTT only. */
  readonly receiveMaximum?: number;
  /** MQTT only. */
  readonly session?: MqttTransportOptions['session'];
  /** MQTT only. */
  readonly keepaliveSeconds?: number;
  /** JetStream only. */
  readonly jetstream?: Omit<JetStreamTransportOptions, keyof TransportBaseOptions | 'url' | 'name'>;
}

const EXPECTED = 'a transport URL: mqtt://, mqtts://, nats://, tls://, jetstream:// or jetstreams://, or inprocess:';

/** Opens (does not connect) the transport `url` names; a URL of no known scheme is a coded error. */
export function openTransport(url: unknown, options: OpenTransportOptions = {}, field = 'transport'): Transport {
  if (typeof url !== 'string' || url.length === 0) throw invalidOption(field, EXPECTED, url);
  const scheme = /^([a-z]+):/.exec(url)?.[1];
  const { clientId, receiveMaximum, session, keepaliveSeconds, jetstream, ...base } = options;
  switch (scheme) {
    case 'mqtt':
    case 'mqtts':
      return new MqttTransport({
        ...base,
        url,
        ...(clientId === undefined ? {} : { clientId }),
        ...(receiveMaximum === undefined ? {} : { receiveMaximum }),
        ...(session === undefined ? {} : { session }),
        ...(keepaliveSeconds === undefined ? {} : { keepaliveSeconds }),
      });
    case 'nats':
    case 'tls':
      return new NatsTransport({ ...base, url, ...(clientId === undefined ? {} : { name: clientId }) });
    case 'jetstream':
    case 'jetstreams':
      return new JetStreamTransport({
        ...base,
        ...jetstream,
        url: url.replace(/^jetstreams?:/, scheme === 'jetstreams' ? 'tls:' : 'nats:'),
        ...(clientId === undefined ? {} : { name: clientId }),
      });
    case 'inprocess':
      return new InProcessTransport(base);
    default:
      throw invalidOption(field, EXPECTED, shownUrl(url));
  }
}
