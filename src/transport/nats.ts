/**
 * Core NATS as a transport (`@nats-io/transport-node`): subjects for topics (`/` → `.`, `+` → `*`,
 * `#` → `>`), queue groups for worker groups, the server's request/reply with its no-responders
 * status. A publish resolves after a flush (the server has it); flushes of one turn of the event
 * loop are shared. Reconnects use Roost's capped, jittered backoff, and every change of the
 * connection is a state event. Requests share one reply subscription per connection
 * (`<inbox>.*`, as nats.js's own `request()` does), with Roost's own table of waiting requests:
 * nats.js's `request()` also makes an Error per request (its "cancelled" rejection after the
 * answer came), a tenth of a request's CPU. `JetStreamTransport` (jetstream.ts) extends this class for delivery
 * that outlives a restart; the members it shares are `protected`. Presence (both transports) is a
 * KV bucket: nats-presence.ts.
 */
import { connect, createInbox, InvalidArgumentError, type Msg, type NatsConnection, type Subscription as NatsSubscription } from '@nats-io/transport-node';
import type { Envelope } from '../envelope/envelope.js';
import { RoostError, ensureError } from '../errors.js';
import { DEFAULT_BACKOFF, backoffDelay } from '../resilience/backoff.js';
import { TransportBase, connectError, readTls, type TransportBaseOptions } from './base.js';
import { NatsPresenceChannel } from './nats-presence.js';
import {
  checkGroup,
  checkRespondOptions,
  noResponders,
  requestTimeout,
  requestTimeoutMs,
  shownUrl,
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

/** The keys of {@link NatsTransportOptions} besides the base ones. */
export const NATS_OPTION_KEYS: readonly string[] = ['url', 'name', 'connectTimeoutMs'];

/** Options of a {@link NatsTransport}. */
export interface NatsTransportOptions extends TransportBaseOptions {
  /** `nats://host:port` (several, comma-separated, for a cluster); credentials may be in it. */
  readonly url: string;
  /** The connection's name, as the server shows it. */
  readonly name?: string;
  /** How long the first connection may take (default 5,000 ms). */
  readonly connectTimeoutMs?: number;
}

/** A subject for a checked topic or pattern. */
export function natsSubject(segments: readonly string[]): string {
  return segments.map((s) => (s === '+' ? '*' : s === '#' ? '>' : s)).join('.');
}


/** A request waiting for its answer (see {@link NatsTransport.request}). */
interface Waiting {
  readonly topic: string;
  readonly subject: string;
  readonly timeoutMs: number;
  readonly resolve: (answer: Envelope) => void;
  readonly reject: (error: RoostError) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

/** The reply subscription of one connection: answers come to `<prefix><token>`. */
interface Replies {
  readonly nc: NatsConnection;
  readonly prefix: string;
  readonly sub: NatsSubscription;
}

/** See the module comment. */
export class NatsTransport extends TransportBase implements Transport {
  readonly kind: string = 'nats';
  protected nc: NatsConnection | null = null;
  private readonly subs = new Set<NatsSubscription>();
  private flushing: Promise<void> | null = null;
  private replies: Replies | null = null;
  private readonly waiting = new Map<string, Waiting>();
  private nextToken = 0;
  /** Checked topics and their subjects (a topic's check and mapping, once; cleared when it grows past 1,024). */
  private readonly subjects = new Map<string, string>();
  private reconnects = 0;
  /** The wait before the next reconnect attempt: backoff by attempts made, fixed until the next one. */
  private reconnectDelay = backoffDelay(DEFAULT_BACKOFF, 1);
  private readonly presenceChannels = new Map<string, NatsPresenceChannel>();

  /** @param known the option keys besides the core ones (a subclass's). */
  constructor(
    protected readonly options: NatsTransportOptions,
    known: readonly string[] = [],
  ) {
    super(options, [...NATS_OPTION_KEYS, ...known]);
  }

  async connect(): Promise<void> {
    if (this.stateValue === 'closed' || this.closing !== null) throw transportClosed(this.kind);
    if (this.nc !== null) return;
    const servers: string[] = [];
    let user: string | undefined;
    let pass: string | undefined;
    for (const raw of this.options.url.split(',')) {
      const u = new URL(raw.trim());
      if (u.username !== '') user = decodeURIComponent(u.username);
      if (u.password !== '') pass = decodeURIComponent(u.password);
      servers.push(`${u.hostname}:${u.port === '' ? '4222' : u.port}`);
    }
    const tls = this.options.tls === undefined ? {} : { tls: readTls(this.options.tls) };
    let nc: NatsConnection;
    try {
      nc = await connect({
        ...tls,
        servers,
        ...(user === undefined ? {} : { user }),
        ...(pass === undefined ? {} : { pass }),
        name: this.options.name ?? 'roost',
        timeout: this.options.connectTimeoutMs ?? 5_000,
        reconnect: true,
        maxReconnectAttempts: -1,
        // nats.js otherwise makes two Errors per request (for their async stack traces), about
        // a third of a request's CPU in this process; Roost's request errors are its own.
        noAsyncTraces: true,
        // nats.js asks on every pass over its server pool and tries a server once this long has
        // passed since its last attempt: the answer must stay the same until an attempt is made.
        reconnectDelayHandler: () => this.reconnectDelay,
      });
    } catch (error) {
      throw connectError(this.kind, this.options.url, error, this.options.tls !== undefined);
    }
    try {
      if (this.closing === null) await this.ready(nc);
    } catch (error) {
      await nc.close();
      throw error;
    }
    if (this.closing !== null) {
      await nc.close(); // close() came while this connected
      throw transportClosed(this.kind);
    }
    this.nc = nc;
    this.setState('connected');
    void this.watch(nc);
  }

  /** Runs on a new connection before `connect()` resolves (a subclass sets up what it needs there); a rejection fails `connect()`. */
  protected ready(_nc: NatsConnection): Promise<void> {
    return Promise.resolve();
  }

  private async watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') this.setState('reconnecting', new Error(`disconnected from ${s.server}`));
      else if (s.type === 'reconnecting') this.reconnectDelay = backoffDelay(DEFAULT_BACKOFF, ++this.reconnects); // an attempt was made
      else if (s.type === 'reconnect') {
        this.reconnects = 0;
        this.reconnectDelay = backoffDelay(DEFAULT_BACKOFF, 1);
        this.setState('connected');
      }
    }
    // The iterator ends when the connection closed; when nats.js closed it (not close()), say so.
    if (this.closing === null) {
      const error = (await nc.closed()) ?? null;
      this.failWaiting();
      this.setState('closed', error);
    }
  }

  protected async send(topic: string, bytes: Buffer, _envelope?: Envelope): Promise<void> {
    const subject = this.subjectOf(topic);
    const nc = this.conn();
    try {
      nc.publish(subject, bytes); // throws at once when closed, draining, or over the server's max_payload
    } catch (error) {
      throw this.refused(error);
    }
    try {
      await this.flush(nc);
    } catch (error) {
      // Disconnected: nats.js fails the flush at once. The message may still go out from its
      // reconnect buffer, so a caller that retries can send it twice (dedup on receive).
      throw this.unavailable(error);
    }
  }

  protected ensureOpen(): void {
    this.conn();
  }

  /** One flush for every publish of this turn. */
  private flush(nc: NatsConnection): Promise<void> {
    this.flushing ??= Promise.resolve().then(async () => {
      this.flushing = null;
      await nc.flush();
    });
    return this.flushing;
  }

  async subscribe(pattern: string, handler: EnvelopeHandler, options: SubscribeOptions = {}): Promise<Subscription> {
    const h = options.dedup?.wrap(handler) ?? handler;
    return this.add(pattern, options, (msg) => {
      const envelope = this.decode(msg.data, msg.subject);
      if (envelope !== null) void this.handle(h, envelope, { topic: msg.subject.replaceAll('.', '/') });
    });
  }

  async respond(topic: string, responder: Responder, raw?: RespondOptions): Promise<Subscription> {
    const options = checkRespondOptions(raw);
    return this.add(topic, options, (msg) => {
      const envelope = this.decode(msg.data, msg.subject);
      if (envelope === null) return;
      // Not an async closure: this runs per request, and a responder's answer may be at hand.
      void this.handle(
        (env, delivery) => {
          const reply = responder(env, delivery);
          if (typeof (reply as Partial<PromiseLike<Envelope>>).then !== 'function') {
            msg.respond(this.encode(reply as Envelope));
            return;
          }
          return Promise.resolve(reply).then((answer) => {
            msg.respond(this.encode(answer));
          });
        },
        envelope,
        { topic: msg.subject.replaceAll('.', '/') },
      );
    });
  }

  request(topic: string, envelope: Envelope, options?: RequestOptions): Promise<Envelope> {
    let subject: string;
    let timeoutMs: number;
    let nc: NatsConnection;
    let bytes: Buffer;
    try {
      subject = this.subjectOf(topic);
      timeoutMs = requestTimeoutMs(options);
      nc = this.conn();
      bytes = this.encode(envelope);
    } catch (error) {
      return Promise.reject(ensureError(error)); // coded errors, as a rejection (as an async function would)
    }
    const replies = this.repliesOf(nc);
    const token = (this.nextToken++).toString(36);
    return new Promise<Envelope>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.waiting.delete(token)) reject(requestTimeout(topic, timeoutMs));
      }, timeoutMs);
      this.waiting.set(token, { topic, subject, timeoutMs, resolve, reject, timer });
      try {
        nc.publish(subject, bytes, { reply: replies.prefix + token }); // throws at once when closed or draining
      } catch (error) {
        this.waiting.delete(token);
        clearTimeout(timer);
        reject(this.unavailable(error));
      }
    });
  }

  /** The presence records of `namespace`: a KV bucket (nats-presence.ts); one channel per namespace. */
  presence(namespace: string): PresenceChannel {
    let channel = this.presenceChannels.get(namespace);
    if (channel === undefined) {
      channel = new NatsPresenceChannel(namespace, { kind: this.kind, conn: () => this.conn(), logger: this.logger });
      this.presenceChannels.set(namespace, channel);
    }
    return channel;
  }

  /** The checked topic's subject, from the cache when it was checked before. */
  protected subjectOf(topic: string): string {
    let subject = this.subjects.get(topic);
    if (subject === undefined) {
      subject = natsSubject(topicSegments(topic, false));
      if (this.subjects.size >= 1_024) this.subjects.clear();
      this.subjects.set(topic, subject);
    }
    return subject;
  }

  /** The reply subscription of `nc`, made on its first request (the server has it before the request: one connection, in order). */
  private repliesOf(nc: NatsConnection): Replies {
    if (this.replies !== null && this.replies.nc === nc) return this.replies;
    const prefix = `${createInbox()}.`;
    const sub = nc.subscribe(`${prefix}*`, {
      callback: (err, msg) => {
        if (err === null) this.answered(prefix, msg);
      },
    });
    this.replies = { nc, prefix, sub };
    return this.replies;
  }

  /** An answer (or the server's no-responders status) to a waiting request; one that came too late is dropped. */
  private answered(prefix: string, msg: Msg): void {
    const token = msg.subject.slice(prefix.length);
    const w = this.waiting.get(token);
    if (w === undefined) return;
    this.waiting.delete(token);
    clearTimeout(w.timer);
    if (msg.data.length === 0 && msg.headers?.code === 503) {
      w.reject(noResponders(w.topic));
      return;
    }
    const answer = this.decode(msg.data, w.subject);
    if (answer === null) w.reject(requestTimeout(w.topic, w.timeoutMs));
    else w.resolve(answer);
  }

  /** Fails the requests still waiting: the connection is gone for good. */
  private failWaiting(): void {
    if (this.waiting.size === 0) return;
    const error = this.unavailable(new Error('connection closed'));
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer);
      w.reject(error);
    }
    this.waiting.clear();
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  /** What `close()` runs, once: a subclass stops its own consumers first, then calls this. */
  protected async shutdown(): Promise<void> {
    await this.stopOutbox();
    const nc = this.nc;
    if (nc !== null) {
      // Stop taking messages, let the handlers finish (their replies go out), then drain.
      await Promise.allSettled([...this.subs].map((s) => s.drain()));
      await this.settle();
      try {
        await nc.drain();
      } catch {
        await nc.close(); // already closed by the server, or draining failed: close for good
      }
    }
    this.failWaiting(); // requests whose answers did not come before the connection went
    this.closed();
  }

  protected conn(): NatsConnection {
    if (this.stateValue === 'closed' || this.closing !== null) throw transportClosed(this.kind);
    if (this.nc === null) throw new RoostError('ROOST_ERR_INVALID_STATE', `${this.kind}: call connect() first`, { details: { transport: this.kind } });
    return this.nc;
  }

  /** A publish nats.js refused at once: over the server's max_payload (for good), or closed. */
  protected refused(error: unknown): RoostError {
    if (error instanceof InvalidArgumentError) {
      return new RoostError('ROOST_ERR_PAYLOAD_TOO_LARGE', `${this.kind}: ${error.message} (the server's max_payload is ${this.nc?.info?.max_payload ?? 'unknown'} bytes)`, {
        details: { transport: this.kind },
        cause: error,
      });
    }
    return this.unavailable(error);
  }

  protected unavailable(error: unknown): RoostError {
    return new RoostError('ROOST_ERR_TRANSPORT_UNAVAILABLE', `${this.kind}: ${ensureError(error).message}`, { details: { transport: this.kind, url: shownUrl(this.options.url) }, cause: error });
  }

  private async add(pattern: string, options: SubscribeOptions, callback: (msg: Msg) => void): Promise<Subscription> {
    const subject = natsSubject(topicSegments(pattern, true, 'pattern'));
    const group = options.group === undefined ? undefined : checkGroup(options.group);
    const nc = this.conn();
    const sub = nc.subscribe(subject, {
      ...(group === undefined ? {} : { queue: group }),
      callback: (err, msg) => {
        if (err === null) callback(msg);
      },
    });
    this.subs.add(sub);
    try {
      await nc.flush(); // the server has the subscription before this resolves
    } catch (error) {
      this.subs.delete(sub);
      sub.unsubscribe();
      throw this.unavailable(error);
    }
    return {
      unsubscribe: async () => {
        this.subs.delete(sub);
        await sub.drain();
      },
    };
  }
}
