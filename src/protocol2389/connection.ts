/**
 * One MQTT 5 connection of the 2389 adapter (the `mqtt` package): TCP_NODELAY on every socket
 * (mqtt.js leaves Nagle on), Roost's capped backoff between reconnects, a first connect that
 * fails at once with a coded error instead of retrying for ever, and an optional last will.
 */
import type { Socket } from 'node:net';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { DEFAULT_BACKOFF, backoffDelay } from '../resilience/backoff.js';
import type { Logger } from '../telemetry/logger.js';
import { connectError, readTls, type TransportTlsOptions } from '../transport/base.js';
import { firstConnect } from '../transport/mqtt.js';

export interface ConnectionOptions {
  readonly url: string;
  readonly clientId: string;
  readonly tls?: TransportTlsOptions | undefined;
  readonly connectTimeoutMs: number;
  readonly keepaliveSeconds: number;
  /** A retained last will (the agent's `unavailable` status), with its MQTT 5 message expiry. */
  readonly will?: { readonly topic: string; readonly payload: Buffer; readonly expirySeconds: number } | undefined;
  /** Told on every connect after the first (subscriptions are made again, the status published again). */
  readonly onReconnect?: () => void;
  readonly logger: Logger;
  /** Counts connection attempts (for the 2389 `/metrics`). */
  readonly onAttempt?: () => void;
}

/** Opens the connection; resolves once the broker accepted it, rejects (coded) if the first attempt fails. */
export async function openConnection(o: ConnectionOptions): Promise<MqttClient> {
  const tls = o.tls === undefined ? {} : { ...readTls(o.tls), rejectUnauthorized: true };
  const options: IClientOptions = {
    ...tls,
    protocolVersion: 5,
    clientId: o.clientId,
    clean: true,
    connectTimeout: o.connectTimeoutMs,
    keepalive: o.keepaliveSeconds,
    reconnectPeriod: backoffDelay(DEFAULT_BACKOFF, 1),
    ...(o.will === undefined
      ? {}
      : { will: { topic: o.will.topic, payload: o.will.payload, qos: 1 as const, retain: true, properties: { messageExpiryInterval: o.will.expirySeconds, payloadFormatIndicator: true, contentType: 'application/json' } } }),
  };
  o.onAttempt?.();
  const client = mqtt.connect(o.url, options);
  let first = true;
  let reconnects = 0;
  client.on('connect', () => {
    (client.stream as Partial<Socket>).setNoDelay?.(true);
    reconnects = 0;
    client.options.reconnectPeriod = backoffDelay(DEFAULT_BACKOFF, 1);
    if (!first) o.onReconnect?.();
  });
  client.on('reconnect', () => o.onAttempt?.());
  client.on('close', () => {
    if (!first) client.options.reconnectPeriod = backoffDelay(DEFAULT_BACKOFF, ++reconnects);
  });
  client.on('error', (error) => o.logger.warn({ err: error, clientId: o.clientId }, '2389: mqtt client error'));
  try {
    await firstConnect(client);
  } catch (error) {
    client.end(true);
    throw connectError('mqtt', o.url, error, o.tls !== undefined);
  }
  first = false;
  return client;
}
