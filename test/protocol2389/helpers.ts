/**
 * A foreign 2389 client for the tests, written with the raw `mqtt` package only (no Roost code):
 * it subscribes, publishes tasks, collects what arrives, and clears every retained message its
 * agents left on the shared broker.
 */
import { randomUUID } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { MQTT_URL } from '../helpers/brokers.js';

export interface Heard {
  readonly topic: string;
  readonly text: string;
  readonly json: unknown;
  readonly retain: boolean;
  readonly expiry: number | undefined;
}

export class ForeignClient {
  readonly heard: Heard[] = [];
  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      const text = payload.toString('utf8');
      let json: unknown = null;
      try {
        json = JSON.parse(text);
      } catch {
        json = null;
      }
      this.heard.push({ topic, text, json, retain: packet.retain, expiry: packet.properties?.messageExpiryInterval });
    });
  }

  static async connect(url = MQTT_URL): Promise<ForeignClient> {
    const client = await mqtt.connectAsync(url, { protocolVersion: 5, clientId: `foreign-${randomUUID().slice(0, 8)}`, clean: true, reconnectPeriod: 0 });
    (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
    return new ForeignClient(client);
  }

  subscribe(topic: string): Promise<unknown> {
    return this.client.subscribeAsync(topic, { qos: 1 });
  }

  publish(topic: string, body: unknown, options: { retain?: boolean } = {}): Promise<unknown> {
    const payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    return this.client.publishAsync(topic, payload, { qos: 1, retain: options.retain === true });
  }

  /** Messages heard on `topic`. */
  on(topic: string): Heard[] {
    return this.heard.filter((h) => h.topic === topic);
  }

  /** Waits until `check` holds (polling), or fails after `timeoutMs`. */
  async until(check: () => boolean, timeoutMs = 10_000, what = 'a message'): Promise<void> {
    const start = Date.now();
    while (!check()) {
      if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}; heard: ${JSON.stringify(this.heard.map((h) => [h.topic, h.text.slice(0, 200)]))}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async close(): Promise<void> {
    await this.client.endAsync();
  }
}

/** A random agent id for one test. */
export function agentId(prefix = 't'): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** Clears the retained messages of these agents' topics (status and input). */
export async function clearRetained(ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  const client = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, clientId: `cleaner-${randomUUID().slice(0, 8)}`, clean: true, reconnectPeriod: 0 });
  try {
    for (const id of ids) {
      for (const topic of [`/control/agents/${id}/status`, `/control/agents/${id}/input`]) {
        await client.publishAsync(topic, Buffer.alloc(0), { qos: 1, retain: true });
      }
    }
  } finally {
    await client.endAsync();
  }
}

/** A v1 TaskEnvelope. */
export function taskV1(agent: string, input: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { task_id: randomUUID(), conversation_id: `c-${randomUUID().slice(0, 8)}`, topic: `/control/agents/${agent}/input`, instruction: 'do it', input, next: null, ...extra };
}

/** A v2 TaskEnvelope. */
export function taskV2(agent: string, input: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...taskV1(agent, input),
    version: '2.0',
    context: { original_query: 'the question', steps_completed: [{ agent_id: 'upstream', action: 'plan', timestamp: new Date().toISOString() }], iteration_count: 1 },
    routing_trace: [{ from_agent: 'router', to_agent: agent, reason: 'capability', timestamp: new Date().toISOString(), step_number: 1 }],
    ...extra,
  };
}
