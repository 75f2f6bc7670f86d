/**
 * Core NATS as a transport (`@nats-io/transport-node`): subjects for topics (`/` → `.`, `+` → `*`,
 * `#` → `>`), queue groups for worker groups, the server's request/reply with its no-responders
 * status. A publish resolves after a flush (the server has it); flushes of one turn of the event
 * loop are shared. Reconnects use Roost's capped, jittered backoff, and every change of the
 * connection is a state event. `JetStreamTransport` (jetstream.ts) extends this class for delivery
 * that outlives a restart; the members it shares are `protected`.
 */
import { connect, InvalidArgumentError, RequestError, TimeoutError, type Msg, type NatsConnection, type Subscription as NatsSubscription } from '@nats-io/transport-node';
import type { Envelope } from '../envelope/envelope.js';
import { RoostError, ensureError } from '../errors.js';
import { DEFAULT_BACKOFF, backoffDelay } from '../resilience/backoff.js';
import { TransportBase, connectError, readTls, type TransportBaseOptions } from './base.js';
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
  type SubscribeOptions,
  type Subscription,
  type Transport,
} from './transport.js';

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


/** See the module comment. */
export class NatsTransport extends TransportBase implements Transport {
  readonly kind: string = 'nats';
  protected nc: NatsConnection | null = null;
  private readonly subs = new Set<NatsSubscription>();
  private flushing: Promise<void> | null = null;
  private reconnects = 0;
  /** The wait before the next reconnect attempt: backoff by attempts made, fixed until the next one. */
  private reconnectDelay = backoffDelay(DEFAULT_BACKOFF, 1);

  constructor(protected readonly options: NatsTransportOptions) {
    super(options);
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
    if (this.closing === null) this.setState('closed', (await nc.closed()) ?? null);
  }

  protected async send(topic: string, bytes: Buffer, _envelope?: Envelope): Promise<void> {
    const subject = natsSubject(topic.split('/'));
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

  async request(topic: string, envelope: Envelope, options?: RequestOptions): Promise<Envelope> {
    const subject = natsSubject(topicSegments(topic, false));
    const timeoutMs = requestTimeoutMs(options);
    const nc = this.conn();
    let msg: Msg;
    try {
      msg = await nc.request(subject, this.encode(envelope), { timeout: timeoutMs });
    } catch (error) {
      if (error instanceof RequestError && error.isNoResponders()) throw noResponders(topic);
      if (error instanceof TimeoutError || (error instanceof RequestError && error.cause instanceof TimeoutError)) throw requestTimeout(topic, timeoutMs);
      throw this.unavailable(error);
    }
    const answer = this.decode(msg.data, subject);
    if (answer === null) throw requestTimeout(topic, timeoutMs);
    return answer;
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
