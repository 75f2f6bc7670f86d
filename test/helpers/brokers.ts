/** The machines' brokers (../shared/SERVICES.md): their URLs, and a clear failure when one is down. */
import { createConnection } from 'node:net';

export const MQTT_URL = process.env['ROOST_TEST_MQTT_URL'] ?? 'mqtt://127.0.0.1:1883';
export const NATS_URL = process.env['ROOST_TEST_NATS_URL'] ?? 'nats://127.0.0.1:4222';

const HOW = {
  mqtt: 'mosquitto -d -c /etc/mosquitto/mosquitto.conf',
  nats: 'start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log',
} as const;

/** Resolves when the broker at `url` accepts a TCP connection; else fails saying how to start it. */
export function requireBroker(kind: keyof typeof HOW, url: string): Promise<void> {
  const u = new URL(url);
  const port = Number(u.port === '' ? (kind === 'mqtt' ? 1883 : 4222) : u.port);
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: u.hostname, port }, () => {
      socket.end();
      resolve();
    });
    socket.setTimeout(3_000, () => socket.destroy(new Error('timed out')));
    socket.on('error', (error) => reject(new Error(`the ${kind} broker at ${url} does not answer (${error.message}); start it with: ${HOW[kind]} (or set ROOST_TEST_${kind.toUpperCase()}_URL)`)));
  });
}

/**
 * Deletes JetStream streams on the machine's NATS: a fleet namespace's presence bucket
 * (`KV_<namespace>-presence`) and any stream named. Missing ones are fine (a test that failed early).
 */
export async function deleteNatsStreams(names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  const { connect } = await import('@nats-io/transport-node');
  const { jetstreamManager } = await import('@nats-io/jetstream');
  const nc = await connect({ servers: NATS_URL.replace('nats://', '') });
  try {
    const jsm = await jetstreamManager(nc);
    for (const name of names) {
      await jsm.streams.delete(name).catch((error: unknown) => {
        if (!/not found/i.test(String(error))) throw error;
      });
    }
  } finally {
    await nc.close();
  }
}

/** The stream of a fleet namespace's presence bucket on NATS. */
export function presenceStream(namespace: string): string {
  return `KV_${namespace}-presence`;
}
