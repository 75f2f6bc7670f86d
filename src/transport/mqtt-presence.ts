/**
 * Presence records on MQTT 5 (see `PresenceChannel` in transport.ts): process `id`'s record is the
 * retained message `<namespace>/presence/<topicSegment(id)>`, published with an MQTT 5 message
 * expiry of its lifetime (the broker forgets it then, whether or not anyone replaces it), and
 * removed by an empty retained message. The last will is the same kind of message, set on the
 * transport's sending connection before it connects (mqtt.ts says why that one).
 *
 * A watch subscribes to `<namespace>/presence/+`: the broker sends the retained records at once,
 * each with the expiry it has left, then every change. The broker keeps one subscription per
 * filter and client, and sends the retained messages only to a new one: watches of one namespace
 * on one transport share one subscription and a copy of what it delivered, so a second watch
 * gets the records too.
 */
import type { IPublishPacket } from 'mqtt';
import { checkNamespace, topicSegment, type PresenceChannel, type PresenceListener, type PresenceRecordMeta, type PresenceWatch, type Subscription } from './transport.js';

/** A will as mqtt.js takes it. */
export interface MqttWill {
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: 1;
  readonly retain: true;
  readonly properties: { readonly messageExpiryInterval: number; readonly payloadFormatIndicator: true; readonly contentType: string };
}

/** What the channel needs of its MqttTransport. */
export interface MqttPresenceHost {
  /** Sets the will of the sending connection (throws once connecting began). */
  setWill(will: MqttWill): void;
  /** Publishes a retained message on the sending connection; resolves on its PUBACK. */
  publishRetained(topic: string, payload: Buffer, expirySeconds: number | null): Promise<void>;
  /** Subscribes to `pattern` (QoS 1) on the receiving connection, with the packets as they come. */
  subscribePackets(pattern: string, onPacket: (packet: IPublishPacket) => void): Promise<Subscription>;
}

/** An MQTT 5 message expiry, in whole seconds (at least one), for a lifetime in ms. */
function expirySeconds(ttlMs: number): number {
  return Math.max(1, Math.ceil(ttlMs / 1000));
}

/** The id in a presence topic's last segment (its escapes undone; as it is when they are not valid). */
function idOf(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** What one namespace's shared subscription delivered last, per id. */
interface Heard {
  readonly record: Uint8Array;
  readonly heardAt: number;
  readonly remainingMs: number | null;
}

/** The presence channel of one namespace on one MqttTransport (made once per namespace there). */
export class MqttPresenceChannel implements PresenceChannel {
  readonly lastWill = true;
  private readonly prefix: string;
  private readonly listeners = new Set<PresenceListener>();
  private readonly heard = new Map<string, Heard>();
  private subscription: Promise<Subscription> | null = null;

  constructor(
    namespace: string,
    private readonly host: MqttPresenceHost,
  ) {
    this.prefix = `${checkNamespace(namespace)}/presence`;
  }

  private topicOf(id: string): string {
    return `${this.prefix}/${topicSegment(id)}`;
  }

  setWill(id: string, record: Uint8Array, ttlMs: number): void {
    this.host.setWill({
      topic: this.topicOf(id),
      payload: Buffer.from(record),
      qos: 1,
      retain: true,
      properties: { messageExpiryInterval: expirySeconds(ttlMs), payloadFormatIndicator: true, contentType: 'application/json' },
    });
  }

  put(id: string, record: Uint8Array, ttlMs: number): Promise<void> {
    return this.host.publishRetained(this.topicOf(id), Buffer.from(record), expirySeconds(ttlMs));
  }

  remove(id: string): Promise<void> {
    return this.host.publishRetained(this.topicOf(id), Buffer.alloc(0), null);
  }

  async watch(listener: PresenceListener): Promise<PresenceWatch> {
    const now = Date.now();
    // What the shared subscription heard already (a new watch would not get the retained copies).
    for (const [id, h] of this.heard) {
      const remainingMs = h.remainingMs === null ? null : h.remainingMs - (now - h.heardAt);
      if (remainingMs !== null && remainingMs <= 0) this.heard.delete(id);
      else listener(id, h.record, { remainingMs });
    }
    this.listeners.add(listener);
    try {
      this.subscription ??= this.host.subscribePackets(`${this.prefix}/+`, (packet) => this.onPacket(packet));
      await this.subscription;
    } catch (error) {
      this.subscription = null;
      this.listeners.delete(listener);
      throw error;
    }
    let stopped = false;
    return {
      stop: async () => {
        if (stopped) return;
        stopped = true;
        this.listeners.delete(listener);
        if (this.listeners.size > 0 || this.subscription === null) return;
        const sub = this.subscription;
        this.subscription = null;
        this.heard.clear();
        try {
          await (await sub).unsubscribe();
        } catch {
          // The transport closed meanwhile: the subscription went with its connection.
        }
      },
    };
  }

  private onPacket(packet: IPublishPacket): void {
    const id = idOf(packet.topic.slice(this.prefix.length + 1));
    const payload = packet.payload;
    const record = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
    const expiry = packet.properties?.messageExpiryInterval;
    // Whole seconds, counted down by the broker's clock in whole seconds: up to a second more is left.
    const meta: PresenceRecordMeta = { remainingMs: typeof expiry === 'number' ? (expiry + 1) * 1000 : null };
    if (record.length === 0) this.heard.delete(id);
    else this.heard.set(id, { record, heardAt: Date.now(), remainingMs: meta.remainingMs });
    for (const listener of [...this.listeners]) listener(id, record.length === 0 ? null : record, meta);
  }
}
