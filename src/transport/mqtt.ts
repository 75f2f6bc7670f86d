/**
 * MQTT 5 as a transport (`mqtt`, QoS 1): topics as they are, worker groups as shared
 * subscriptions (`$share/<group>/<filter>`), request/reply through MQTT 5 response topics and
 * correlation data (each client listens on a reply topic of its own).
 *
 * - TCP_NODELAY is set on every (re)connected socket: mqtt.js leaves Nagle on, and a round trip
 *   then costs tens of milliseconds instead of a fraction of one. (The broker needs
 *   `set_tcp_nodelay true` too.)
 * - Receive-side backpressure: at most `receiveMaximum` envelopes (default 64) are handled at
 *   once; past that the client stops reading, its acknowledgements wait, and the broker holds the
 *   rest (MQTT 5 receive maximum, told to the broker at connect). The client never buffers
 *   without bound.
 * - Two connections per transport: one reads subscriptions (paced as above, with the persistent
 *   session when there is one), the other (client id `<clientId>-out`, a clean session) sends
 *   publishes, requests and replies and reads the answers to requests. A handler that awaits a
 *   publish or a request of its own thus never waits on the socket its pacing stopped reading.
 * - Reconnects use Roost's capped, jittered backoff; every change is a state event (connected
 *   when both connections are).
 * - Presence (mqtt-presence.ts): retained records with an MQTT 5 message expiry, and a last will
 *   on the sending connection. That is the connection that publishes the heartbeats, so the will
 *   comes after every heartbeat it sent (the broker publishes it once that connection is gone),
 *   and it is never paced: a busy process does not miss its keepalive and look dead. A receiving
 *   connection that is gone while the sending one lives fires no will, but the transport is not
 *   `connected` then, presence sends no heartbeat, and its record expires.
 */
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import mqtt, { type IPublishPacket, type MqttClient } from 'mqtt';
import type { Envelope } from '../envelope/envelope.js';
import { RoostError, ensureError, invalidOption } from '../errors.js';
import { checkObject, optInt } from '../validate-options.js';
import { DEFAULT_BACKOFF, backoffDelay } from '../resilience/backoff.js';
import { TransportBase, connectError, readTls, type TransportBaseOptions } from './base.js';
import { MqttPresenceChannel, type MqttWill } from './mqtt-presence.js';
import {
  checkGroup,
  checkRespondOptions,
  requestTimeout,
  requestTimeoutMs,
  topicMatches,
  topicSegments,
  transportClosed,
  type EnvelopeHandler,
  type RequestOptions,
  type RespondOptions,
  type Responder,
  type PresenceChannel,
  type SubscribeOptions,
  type Subscription,
  type Transport,
} from './transport.js';

/** Options of an {@link MqttTransport}. */
export interface MqttTransportOptions extends TransportBaseOptions {
  /** `mqtt://host:port` (`mqtts://` for TLS); credentials may be in it. */
  readonly url: string;
  /** The client id (default: `roost-` and a random suffix). */
  readonly clientId?: string;
  /** Envelopes handled at once, and the receive maximum told to the broker (default 64). */
  readonly receiveMaximum?: number;
  /** How long the first connection may take (default 5,000 ms). */
  readonly connectTimeoutMs?: number;
  /**
   * A persistent session (MQTT 5 `clean start` off, with a session expiry): the broker keeps this
   * client's subscriptions and queues its QoS 1 messages while it is away — across a restart of
   * the broker too, when the broker persists sessions and is stopped cleanly (Mosquitto:
   * `persistence true`; it saves periodically and on exit). Needs a `clientId` of its own.
   * Without it, what is published between a broker restart and this client's resubscribe is
   * lost to it.
   */
  readonly session?: { readonly expirySeconds: number };
  /**
   * The MQTT keepalive, in seconds (default 60; 0: none). A connection whose socket closed (its
   * process killed) is gone for the broker at once; one that just fell silent (a host gone, a
   * network cut) only after 1.5 × this, and only then does the broker publish its last will.
   */
  readonly keepaliveSeconds?: number;
}

const MQTT_OPTION_KEYS: readonly string[] = ['url', 'clientId', 'receiveMaximum', 'connectTimeoutMs', 'session', 'keepaliveSeconds'];

/**
 * One subscription at the broker, shared by every local subscription to its filter: the broker
 * keeps one subscription per filter and client, so a second SUBSCRIBE would replace the first and
 * an UNSUBSCRIBE would end both.
 */
interface BrokerSubscription {
  /** Its MQTT 5 subscription identifier: the broker names it in each message it delivers for it. */
  readonly id: number;
  readonly pattern: readonly string[];
  readonly filter: string;
  /** A shared subscription: each message goes to one local subscription, in turn. */
  readonly group: boolean;
  readonly locals: LocalSubscription[];
  turn: number;
  /** Settles when the broker confirmed it. */
  ready: Promise<void>;
}

interface LocalSubscription {
  readonly onMessage: (packet: IPublishPacket) => void | Promise<void>;
}

/**
 * Resolves on the client's first connection, or rejects on its first error or close (mqtt.js
 * would retry for ever; a first connect that cannot work should say why at once).
 */
export function firstConnect(client: MqttClient, timeoutMs?: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let last: Error | null = null;
    const done = (error: Error | null): void => {
      clearTimeout(timer);
      client.off('connect', onConnect);
      client.off('error', onError);
      client.off('close', onClose);
      if (error === null) resolve();
      else reject(error);
    };
    // mqtt.js's own connectTimeout ends an attempt; this bounds the whole wait when asked.
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => done(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    const onConnect = (): void => done(null);
    const onError = (error: Error): void => {
      last = error;
      if (!/ECONNRESET|EPIPE/.test((error as NodeJS.ErrnoException).code ?? '')) done(error);
    };
    const onClose = (): void => done(last ?? new Error('the broker closed the connection'));
    client.on('connect', onConnect);
    client.on('error', onError);
    client.on('close', onClose);
  });
}

/** PUBACK reason codes that a retry does not change: not authorized, topic name invalid, payload format invalid. */
const REFUSED_FOR_GOOD = new Set([0x87, 0x90, 0x99]);

/**
 * The PUBACK reason code when mqtt.js failed a publish with one that no retry changes (one of
 * {@link REFUSED_FOR_GOOD}, or 0x95, packet too large); null for anything else (a connection
 * lost, a quota), which may go through later.
 */
export function refusedForGood(error: unknown): number | null {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'number' && (code === 0x95 || REFUSED_FOR_GOOD.has(code)) ? code : null;
}

/** See the module comment. */
export class MqttTransport extends TransportBase implements Transport {
  readonly kind = 'mqtt';
  /** The connection that reads subscriptions (paced by receiveMaximum). */
  private client: MqttClient | null = null;
  /** The connection that publishes, sends requests and replies, and reads the answers to requests. */
  private out: MqttClient | null = null;
  private readonly up = { in: false, out: false };
  private readonly clientId: string;
  private readonly replyTopic: string;
  private readonly receiveMaximum: number;
  private readonly filters = new Map<string, BrokerSubscription>();
  private readonly pending = new Map<string, { resolve: (p: IPublishPacket) => void }>();
  private handling = 0;
  private readonly waiting: (() => void)[] = [];
  private nextSubscriptionId = 1;
  /** Seconds the broker keeps this client's session after it left (0: a clean session). */
  private readonly sessionExpiry: number = 0;
  private readonly keepalive: number;
  /** The sending connection's last will (presence), set before connect(). */
  private will: MqttWill | null = null;
  /** True once connect() began: the will can no longer change. */
  private connectBegan = false;
  private readonly presenceChannels = new Map<string, MqttPresenceChannel>();

  constructor(private readonly options: MqttTransportOptions) {
    super(options, MQTT_OPTION_KEYS);
    this.clientId = options.clientId ?? `roost-${randomUUID().slice(0, 12)}`;
    topicSegments(this.clientId, false, 'clientId'); // it is a segment of this client's reply topic
    this.replyTopic = `_roost/reply/${this.clientId}`;
    // MQTT 5 allows 1 to 65,535; 0 would stop the client reading for good.
    this.receiveMaximum = optInt('', options as unknown as Record<string, unknown>, 'receiveMaximum', 1, 65_535, 64);
    this.keepalive = optInt('', options as unknown as Record<string, unknown>, 'keepaliveSeconds', 0, 65_535, 60);
    if (options.session !== undefined) {
      const session = checkObject('session', options.session, ['expirySeconds']);
      this.sessionExpiry = optInt('session', session, 'expirySeconds', 1, 4_294_967_295, 0);
      if (this.sessionExpiry === 0) throw invalidOption('session.expirySeconds', 'an integer of seconds, 1 to 4294967295', options.session.expirySeconds);
      if (options.clientId === undefined) throw invalidOption('clientId', 'a client id of its own, the same after a restart (a persistent session is named by it)', undefined);
    }
  }

  async connect(): Promise<void> {
    if (this.stateValue === 'closed' || this.closing !== null) throw transportClosed(this.kind);
    if (this.client !== null) return;
    this.connectBegan = true;
    // Two connections: one reads subscriptions, paced by receiveMaximum; the other sends. A
    // handler that publishes (or asks) and awaits the broker's answer then never waits on the
    // socket its own pacing stopped reading.
    const inbound = this.open(this.clientId, 'in');
    const outbound = this.open(`${this.clientId}-out`, 'out');
    const results = await Promise.allSettled([firstConnect(inbound), firstConnect(outbound)]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) {
      inbound.end(true);
      outbound.end(true);
      throw connectError(this.kind, this.options.url, failed.reason, this.options.tls !== undefined);
    }
    if (this.closing !== null) {
      inbound.end(true); // close() came while this connected
      outbound.end(true);
      throw transportClosed(this.kind);
    }
    this.client = inbound;
    this.out = outbound;
    try {
      await outbound.subscribeAsync(this.replyTopic, { qos: 1 });
    } catch (error) {
      // Nothing half open: a later connect() starts again.
      this.client = null;
      this.out = null;
      inbound.end(true);
      outbound.end(true);
      throw new RoostError('ROOST_ERR_TRANSPORT_UNAVAILABLE', `mqtt: the subscription to this client's reply topic failed: ${(error as Error).message}`, {
        details: { transport: this.kind, filter: this.replyTopic },
        cause: error,
      });
    }
    this.syncState(null); // connected, now that both are
  }

  /** A client for one of the two connections, reconnecting by itself with Roost's backoff. */
  private open(clientId: string, role: 'in' | 'out'): MqttClient {
    const tls = this.options.tls === undefined ? {} : { ...readTls(this.options.tls), rejectUnauthorized: true };
    const session = role === 'in' && this.sessionExpiry > 0;
    const client = mqtt.connect(this.options.url, {
      ...tls,
      protocolVersion: 5,
      clientId,
      clean: !session,
      connectTimeout: this.options.connectTimeoutMs ?? 5_000,
      keepalive: this.keepalive,
      ...(role === 'out' && this.will !== null ? { will: { ...this.will, properties: { ...this.will.properties } } } : {}),
      reconnectPeriod: backoffDelay(DEFAULT_BACKOFF, 1),
      properties: role === 'in' ? { receiveMaximum: this.receiveMaximum, ...(session ? { sessionExpiryInterval: this.sessionExpiry } : {}) } : {},
    });
    let reconnects = 0;
    client.handleMessage =
      role === 'in'
        ? (packet, done) => this.onPacket(packet, done)
        : (packet, done) => {
            // Answers to this client's requests: handed to their waiter at once, never paced.
            const id = packet.properties?.correlationData?.toString('utf8');
            const waiter = id === undefined ? undefined : this.pending.get(id);
            if (waiter !== undefined) waiter.resolve(packet);
            done();
          };
    client.on('connect', () => {
      (client.stream as Partial<Socket>).setNoDelay?.(true);
      reconnects = 0;
      client.options.reconnectPeriod = backoffDelay(DEFAULT_BACKOFF, 1);
      this.up[role] = true;
      if (this.client !== null) this.syncState(null); // the first time, connect() says so itself
    });
    client.on('close', () => {
      this.up[role] = false;
      if (this.closing !== null || this.client === null) return; // closing, or a first connect that failed
      client.options.reconnectPeriod = backoffDelay(DEFAULT_BACKOFF, ++reconnects);
      this.syncState(new Error(`the ${role === 'in' ? 'receiving' : 'sending'} connection to the broker closed`));
    });
    client.on('error', (error) => this.logger?.warn({ err: error, transport: this.kind, connection: role }, 'mqtt client error'));
    return client;
  }

  /** Connected when both connections are; reconnecting when either is not. */
  private syncState(error: Error | null): void {
    if (this.up.in && this.up.out) this.setState('connected');
    else if (this.stateValue === 'connected') this.setState('reconnecting', error);
  }

  protected async send(topic: string, bytes: Buffer): Promise<void> {
    const client = this.outConn();
    try {
      await client.publishAsync(topic, bytes, { qos: 1 });
    } catch (error) {
      throw this.publishError(topic, error);
    }
  }

  /**
   * A failed publish, coded: a PUBACK reason code that no retry changes is a refusal; anything
   * else (disconnecting, a connection closed under it, quota exceeded) is the broker away.
   */
  private publishError(topic: string, error: unknown): RoostError {
    const e = ensureError(error);
    const reasonCode = refusedForGood(e);
    if (reasonCode !== null) {
      if (reasonCode === 0x95) {
        return new RoostError('ROOST_ERR_PAYLOAD_TOO_LARGE', `mqtt: the broker refused a publish to ${topic} as too large (reason code 0x95)`, { details: { transport: this.kind, topic, reasonCode }, cause: error });
      }
      return new RoostError('ROOST_ERR_PUBLISH_REFUSED', `mqtt: the broker refused a publish to ${topic}: ${e.message} (reason code 0x${reasonCode.toString(16)})`, {
        details: { transport: this.kind, topic, reasonCode },
        cause: error,
      });
    }
    return new RoostError('ROOST_ERR_TRANSPORT_UNAVAILABLE', `mqtt: a publish to ${topic} failed: ${e.message}`, { details: { transport: this.kind, topic }, cause: error });
  }

  protected ensureOpen(): void {
    this.conn();
  }

  async subscribe(pattern: string, handler: EnvelopeHandler, options: SubscribeOptions = {}): Promise<Subscription> {
    const segments = topicSegments(pattern, true, 'pattern');
    const h = options.dedup?.wrap(handler) ?? handler;
    return this.add(segments, this.filter(pattern, options), (packet) => {
      const envelope = this.decode(packet.payload, packet.topic);
      return envelope === null ? undefined : this.handle(h, envelope, { topic: packet.topic });
    });
  }

  async respond(topic: string, responder: Responder, raw?: RespondOptions): Promise<Subscription> {
    const options = checkRespondOptions(raw);
    const segments = topicSegments(topic, true, 'pattern');
    return this.add(segments, this.filter(topic, options), (packet) => {
      const envelope = this.decode(packet.payload, packet.topic);
      const responseTopic = packet.properties?.responseTopic;
      const correlationData = packet.properties?.correlationData;
      if (envelope === null || responseTopic === undefined) return undefined;
      return this.handle(
        async (env, delivery) => {
          const reply = await responder(env, delivery);
          // On the sending connection: its PUBACK never waits behind this one's pacing, so the
          // request is acknowledged once its answer is with the broker.
          const client = this.outConn();
          const bytes = this.encode(reply);
          await this.bounded(() => client.publishAsync(responseTopic, bytes, { qos: 1, properties: correlationData === undefined ? {} : { correlationData } }));
        },
        envelope,
        { topic: packet.topic },
      );
    });
  }

  async request(topic: string, envelope: Envelope, options?: RequestOptions): Promise<Envelope> {
    topicSegments(topic, false);
    const timeoutMs = requestTimeoutMs(options);
    const client = this.outConn();
    const bytes = this.encode(envelope);
    const id = randomUUID();
    let timer: NodeJS.Timeout | undefined;
    try {
      // One promise: the answer, the timeout, or a publish that failed (with the broker away it
      // waits in the client; the timeout decides).
      this.reservePublish();
      const packet = await new Promise<IPublishPacket>((resolve, reject) => {
        this.pending.set(id, { resolve });
        timer = setTimeout(() => reject(requestTimeout(topic, timeoutMs)), timeoutMs);
        client.publish(topic, bytes, { qos: 1, properties: { responseTopic: this.replyTopic, correlationData: Buffer.from(id, 'utf8') } }, (error) => {
          this.releasePublish();
          if (error) reject(error);
        });
      });
      const answer = this.decode(packet.payload, packet.topic);
      if (answer === null) throw requestTimeout(topic, timeoutMs);
      return answer;
    } finally {
      clearTimeout(timer);
      this.pending.delete(id);
    }
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.stopOutbox();
      const [client, out] = [this.client, this.out];
      if (client !== null && out !== null) {
        // Take no more messages: onPacket holds, unacknowledged, what comes from now on (with a
        // persistent session the broker hands it over again at the next connect).
        this.filters.clear();
        await this.settle();
        for (const wake of this.waiting.splice(0)) wake(); // acknowledge what was handled
        // Away from the broker, unacknowledged publishes would keep a clean end waiting for ever.
        const force = this.stateValue !== 'connected';
        await Promise.all([client.endAsync(force), out.endAsync(force)]);
      }
      for (const wake of this.waiting.splice(0)) wake();
      this.closed();
    })();
    return this.closing;
  }

  /** The presence records of `namespace` (mqtt-presence.ts); one channel per namespace. */
  presence(namespace: string): PresenceChannel {
    let channel = this.presenceChannels.get(namespace);
    if (channel === undefined) {
      channel = new MqttPresenceChannel(namespace, {
        setWill: (will) => {
          if (this.connectBegan) {
            throw new RoostError('ROOST_ERR_INVALID_STATE', 'mqtt: a last will is set before connect() (the broker takes it with the connection)', { details: { transport: this.kind } });
          }
          if (this.will !== null && this.will.topic !== will.topic) {
            throw new RoostError('ROOST_ERR_INVALID_STATE', `mqtt: this transport has a last will for ${this.will.topic} already (one per connection)`, { details: { transport: this.kind, will: this.will.topic } });
          }
          this.will = will;
        },
        publishRetained: async (topic, payload, expiry) => {
          const client = this.outConn();
          try {
            await this.bounded(() => client.publishAsync(topic, payload, { qos: 1, retain: true, ...(expiry === null ? {} : { properties: { messageExpiryInterval: expiry } }) }));
          } catch (error) {
            throw error instanceof RoostError ? error : this.publishError(topic, error);
          }
        },
        subscribePackets: (pattern, onPacket) => this.add(topicSegments(pattern, true, 'pattern'), pattern, onPacket),
      });
      this.presenceChannels.set(namespace, channel);
    }
    return channel;
  }

  /** Every received publish: dispatched, and paced by the number handled at once. */
  private onPacket(packet: IPublishPacket, done: (error?: Error) => void): void {
    if (this.closing !== null) return; // not acknowledged, and the client reads no further
    let topic: string[];
    try {
      topic = topicSegments(packet.topic, false, 'packet.topic');
    } catch {
      this.decode(Buffer.alloc(0), packet.topic); // a topic no Roost topic can be: counted and dropped
      return done();
    }
    // Overlapping subscriptions get a copy each: the identifiers say which copy is whose.
    const ids = packet.properties?.subscriptionIdentifier;
    // With a persistent session the identifiers may be an earlier process's (which numbered its
    // subscriptions its own way): they count only where the topic matches too, and a message
    // none of them fits goes by its topic.
    const session = this.sessionExpiry > 0;
    const runs: Promise<void>[] = [];
    let matched = false;
    for (const sub of this.filters.values()) {
      const mine = ids === undefined ? topicMatches(sub.pattern, topic) : (Array.isArray(ids) ? ids.includes(sub.id) : ids === sub.id) && (!session || topicMatches(sub.pattern, topic));
      if (!mine) continue;
      matched = true;
      this.dispatch(sub, packet, runs);
    }
    if (!matched && session && ids !== undefined) {
      for (const sub of this.filters.values()) if (topicMatches(sub.pattern, topic)) this.dispatch(sub, packet, runs);
    }
    if (runs.length === 0) return done();
    this.handling++;
    const release = (): void => {
      this.handling--;
      this.waiting.shift()?.();
    };
    // Most packets are for one subscription: its run alone, without allSettled's promises.
    void (runs.length === 1 ? runs[0]! : Promise.allSettled(runs)).then(release, release);
    // Under the cap, read on at once; at the cap, read the next packet when a slot frees.
    if (this.handling < this.receiveMaximum) done();
    else this.waiting.push(() => done());
  }

  /** Hands a packet to a broker subscription's local ones: each of them, or one in turn for a group. */
  private dispatch(sub: BrokerSubscription, packet: IPublishPacket, runs: Promise<void>[]): void {
    const n = sub.locals.length;
    if (n === 0) return;
    if (sub.group) {
      const run = sub.locals[sub.turn++ % n]!.onMessage(packet);
      if (run !== undefined) runs.push(run);
      return;
    }
    for (const local of sub.locals) {
      const run = local.onMessage(packet);
      if (run !== undefined) runs.push(run);
    }
  }

  private filter(pattern: string, options: SubscribeOptions): string {
    return options.group === undefined ? pattern : `$share/${checkGroup(options.group)}/${pattern}`;
  }

  private outConn(): MqttClient {
    this.conn();
    return this.out!;
  }

  private conn(): MqttClient {
    if (this.stateValue === 'closed' || this.closing !== null) throw transportClosed(this.kind);
    if (this.client === null) throw new RoostError('ROOST_ERR_INVALID_STATE', 'mqtt: call connect() first', { details: { transport: this.kind } });
    return this.client;
  }

  private async add(pattern: readonly string[], filter: string, onMessage: LocalSubscription['onMessage']): Promise<Subscription> {
    const client = this.conn();
    let sub = this.filters.get(filter);
    if (sub === undefined) {
      const created: BrokerSubscription = { id: this.nextSubscriptionId++, pattern, filter, group: filter.startsWith('$share/'), locals: [], turn: 0, ready: Promise.resolve() };
      created.ready = client.subscribeAsync(filter, { qos: 1, properties: { subscriptionIdentifier: created.id } }).then(
        () => undefined,
        (error: unknown) => {
          if (this.filters.get(filter) === created) this.filters.delete(filter); // a refused SUBACK rejects in mqtt.js
          throw new RoostError('ROOST_ERR_TRANSPORT_UNAVAILABLE', `mqtt: the subscription to ${filter} failed: ${(error as Error).message}`, {
            details: { transport: this.kind, filter },
            cause: error,
          });
        },
      );
      this.filters.set(filter, created);
      sub = created;
    }
    const local: LocalSubscription = { onMessage };
    const entry = sub;
    entry.locals.push(local);
    const remove = (): boolean => {
      const i = entry.locals.indexOf(local);
      if (i >= 0) entry.locals.splice(i, 1);
      // The last local subscription of the filter takes the broker's with it.
      if (entry.locals.length > 0 || this.filters.get(filter) !== entry) return false;
      this.filters.delete(filter);
      return true;
    };
    try {
      await entry.ready;
    } catch (error) {
      remove();
      throw error;
    }
    return {
      unsubscribe: async () => {
        if (remove()) await client.unsubscribeAsync(filter);
      },
    };
  }
}
