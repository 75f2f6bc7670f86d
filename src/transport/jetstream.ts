/**
 * NATS JetStream as a transport (`@nats-io/jetstream`), for delivery that outlives a restart of the
 * server or of a subscriber. It extends the core NATS transport and shares its connection,
 * reconnects, TLS, state events and request/reply (core NATS, outside the stream); publish and
 * subscribe go through one stream:
 *
 * - The stream (`stream`, default `ROOST`) holds the subjects `<subjectPrefix>.>` (default prefix
 *   `roost-js.<stream>`): topic `a/b` is subject `<subjectPrefix>.a.b`. `connect()` creates it
 *   when missing (file storage, limits retention) and updates its limits when they differ.
 * - `publish` is a JetStream publish that resolves on the server's PubAck, with the envelope id
 *   (or its `roost-dedup-id` header) as `Nats-Msg-Id`: a publisher that retries after a lost ack stores the envelope once within
 *   the stream's duplicate window.
 * - `subscribe` with a group is a durable pull consumer named after the group (each envelope to
 *   one member; it stays on the server and resumes where it left); without a group, a pull
 *   consumer of its own that gets every envelope published after it subscribed. Each envelope is
 *   acknowledged after its handler resolved; a handler that rejects gets the envelope again after
 *   `retryDelayMs`, up to `maxDeliver` deliveries, and is then dropped (terminated) and logged.
 *   At most `maxAckPending` envelopes are unacknowledged per consumer, so at most that many
 *   handlers run at once and the rest wait on the server.
 * - A message in the stream that is not an envelope is counted, logged and terminated: it is
 *   never delivered again, and the consumer keeps working.
 *
 * Everything here works on nats-server 2.9 (docs/reference/transports.md lists the versions).
 */
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiError,
  jetstreamManager,
  ReplayPolicy,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type StreamConfig,
} from '@nats-io/jetstream';
import { randomUUID } from 'node:crypto';
import { InvalidArgumentError, nanos, type NatsConnection } from '@nats-io/transport-node';
import type { Envelope } from '../envelope/envelope.js';
import { RoostError, ensureError, invalidOption } from '../errors.js';
import { checkObject, optBool, optEnum, optInt } from '../validate-options.js';
import { BASE_OPTION_KEYS } from './base.js';
import { NATS_OPTION_KEYS, NatsTransport, natsSubject, type NatsTransportOptions } from './nats.js';
import { checkGroup, topicSegments, transportClosed, type EnvelopeHandler, type SubscribeOptions, type Subscription } from './transport.js';

/** Options of a {@link JetStreamTransport}: those of the core NATS transport, and the stream's and consumers'. */
export interface JetStreamTransportOptions extends NatsTransportOptions {
  /** The stream's name: 1 to 32 letters, digits, `_` and `-` (default `ROOST`). */
  readonly stream?: string;
  /** The subjects of the stream are `<subjectPrefix>.>`: dot-separated tokens of letters, digits, `_ - :` (default `roost-js.<stream>`). */
  readonly subjectPrefix?: string;
  /** How long the stream keeps a message, acknowledged or not (default 7 days). */
  readonly maxAgeMs?: number;
  /** The stream's size at most, in bytes (default 1 GiB). */
  readonly maxBytes?: number;
  /** What a full stream does: `old` drops its oldest messages, `new` refuses publishes (default `old`). */
  readonly discard?: 'old' | 'new';
  /** How long the server remembers a message id to drop a second publish of it (default 2 minutes, the server's). */
  readonly duplicateWindowMs?: number;
  /** Unacknowledged envelopes per consumer at most, and so handlers running at once (default 64). */
  readonly maxAckPending?: number;
  /** How long a delivered envelope may go unacknowledged before the server sends it again (default 30,000 ms). */
  readonly ackWaitMs?: number;
  /** Deliveries of one envelope at most; after the last failed one it is dropped and logged (default 5). */
  readonly maxDeliver?: number;
  /** The wait before a failed envelope is delivered again (default 1,000 ms). */
  readonly retryDelayMs?: number;
  /** How long the server waits for a PubAck's answer before a publish fails (default 5,000 ms). */
  readonly publishTimeoutMs?: number;
  /** Delete a group's durable consumer on unsubscribe and close (default false: it stays and resumes). */
  readonly deleteGroupConsumers?: boolean;
}

/** The options after checking, with their defaults. */
export interface ResolvedJetStreamOptions {
  readonly stream: string;
  readonly subjectPrefix: string;
  readonly maxAgeMs: number;
  readonly maxBytes: number;
  readonly discard: 'old' | 'new';
  readonly duplicateWindowMs: number;
  readonly maxAckPending: number;
  readonly ackWaitMs: number;
  readonly maxDeliver: number;
  readonly retryDelayMs: number;
  readonly publishTimeoutMs: number;
  readonly deleteGroupConsumers: boolean;
}

/** A week: long enough to ride out a weekend with its consumers down, bounded so a stream never grows for ever. */
const DEFAULT_MAX_AGE_MS = 7 * 24 * 3_600_000;
/** 1 GiB: the stream's disk use at most, together with `maxAgeMs`. */
const DEFAULT_MAX_BYTES = 1024 * 1024 * 1024;
/** The server's own default duplicate window. */
const DEFAULT_DUPLICATE_WINDOW_MS = 120_000;
/** As MQTT's receive maximum: 64 envelopes unacknowledged per consumer. */
const DEFAULT_MAX_ACK_PENDING = 64;
/** An ephemeral consumer whose subscriber vanished without unsubscribing is removed by the server after this long without pulls. */
const EPHEMERAL_INACTIVE_MS = 30_000;
/** The JetStream options besides the core transport's. */
const JETSTREAM_OPTION_KEYS = [
  'stream', 'subjectPrefix', 'maxAgeMs', 'maxBytes', 'discard', 'duplicateWindowMs', 'maxAckPending', 'ackWaitMs', 'maxDeliver', 'retryDelayMs', 'publishTimeoutMs', 'deleteGroupConsumers',
];
const STREAM_NAME = /^[A-Za-z0-9_-]{1,32}$/;
const SUBJECT_PREFIX = /^[A-Za-z0-9_\-:]{1,128}(\.[A-Za-z0-9_\-:]{1,128}){0,15}$/;

/** Checks the JetStream options (the core ones are the core transport's). */
export function resolveJetStreamOptions(options: JetStreamTransportOptions): ResolvedJetStreamOptions {
  const o = checkObject('options', options, [...BASE_OPTION_KEYS, ...NATS_OPTION_KEYS, ...JETSTREAM_OPTION_KEYS]);
  const stream = o['stream'] ?? 'ROOST';
  if (typeof stream !== 'string' || !STREAM_NAME.test(stream)) throw invalidOption('stream', 'a stream name of 1 to 32 letters, digits, _ and -', stream);
  const subjectPrefix = o['subjectPrefix'] ?? `roost-js.${stream}`;
  if (typeof subjectPrefix !== 'string' || !SUBJECT_PREFIX.test(subjectPrefix)) {
    throw invalidOption('subjectPrefix', 'dot-separated subject tokens of letters, digits and _ - : (no wildcards)', subjectPrefix);
  }
  const day = 24 * 3_600_000;
  return Object.freeze({
    stream,
    subjectPrefix,
    maxAgeMs: optInt('', o, 'maxAgeMs', 1_000, 3_650 * day, DEFAULT_MAX_AGE_MS),
    maxBytes: optInt('', o, 'maxBytes', 1024, Number.MAX_SAFE_INTEGER, DEFAULT_MAX_BYTES),
    discard: optEnum('', o, 'discard', ['old', 'new'] as const, 'old'),
    duplicateWindowMs: optInt('', o, 'duplicateWindowMs', 100, day, DEFAULT_DUPLICATE_WINDOW_MS),
    maxAckPending: optInt('', o, 'maxAckPending', 1, 65_535, DEFAULT_MAX_ACK_PENDING),
    ackWaitMs: optInt('', o, 'ackWaitMs', 100, day, 30_000),
    maxDeliver: optInt('', o, 'maxDeliver', 1, 1_000, 5),
    retryDelayMs: optInt('', o, 'retryDelayMs', 0, day, 1_000),
    publishTimeoutMs: optInt('', o, 'publishTimeoutMs', 1, 2_147_483_647, 5_000),
    deleteGroupConsumers: optBool('', o, 'deleteGroupConsumers', false),
  });
}

/** One subscription's consumer and its pull loop. */
interface Pull {
  readonly consumer: string;
  readonly filter: string;
  readonly group: string | null;
  readonly handler: EnvelopeHandler;
  messages: ConsumerMessages | null;
  stopped: boolean;
  /** The highest stream sequence delivered: where a lost ephemeral consumer is recreated from. */
  lastSeq: number;
  readonly running: Set<Promise<void>>;
  /** A restart of the pull loop under way (one at a time). */
  restarting: Promise<void> | null;
}

/** See the module comment. */
export class JetStreamTransport extends NatsTransport {
  override readonly kind: string = 'jetstream';
  /** The checked JetStream options. */
  readonly jetstream: ResolvedJetStreamOptions;
  private jsm: JetStreamManager | null = null;
  private js: JetStreamClient | null = null;
  private readonly pulls = new Set<Pull>();
  private restoring: Promise<void> | null = null;

  constructor(options: JetStreamTransportOptions) {
    super(options, JETSTREAM_OPTION_KEYS);
    this.jetstream = resolveJetStreamOptions(options);
  }

  /** The stream's config as this transport wants it (fields nats-server 2.9 knows). */
  private streamConfig(): Partial<StreamConfig> & { name: string } {
    const j = this.jetstream;
    return {
      name: j.stream,
      subjects: [`${j.subjectPrefix}.>`],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: j.discard === 'old' ? DiscardPolicy.Old : DiscardPolicy.New,
      max_age: nanos(j.maxAgeMs),
      max_bytes: j.maxBytes,
      duplicate_window: nanos(j.duplicateWindowMs),
    };
  }

  protected override async ready(nc: NatsConnection): Promise<void> {
    let jsm: JetStreamManager;
    try {
      jsm = await jetstreamManager(nc, { timeout: this.jetstream.publishTimeoutMs });
    } catch (error) {
      throw new RoostError('ROOST_ERR_TRANSPORT_UNAVAILABLE', `jetstream: JetStream does not answer on the server (start nats-server with -js): ${ensureError(error).message}`, {
        details: { transport: this.kind },
        cause: error,
      });
    }
    await this.ensureStream(jsm);
    this.jsm = jsm;
    this.js = jsm.jetstream();
  }

  /** Creates the stream when missing, updates its limits and subjects when they differ. */
  private async ensureStream(jsm: JetStreamManager): Promise<void> {
    const want = this.streamConfig();
    try {
      const info = await jsm.streams.info(want.name).catch((error: unknown) => {
        if (error instanceof JetStreamApiError && error.code === 10059) return null; // stream not found
        throw error;
      });
      if (info === null) {
        await jsm.streams.add(want);
      } else {
        const c = info.config;
        const subjects = c.subjects ?? [];
        const differs =
          !subjects.includes(want.subjects![0]!) || c.max_age !== want.max_age || c.max_bytes !== want.max_bytes || c.duplicate_window !== want.duplicate_window || c.discard !== want.discard;
        if (differs) {
          const { name: _name, storage: _storage, retention: _retention, ...update } = want;
          await jsm.streams.update(want.name, { ...update, subjects: [...new Set([...subjects, ...want.subjects!])] });
        }
      }
    } catch (error) {
      const e = ensureError(error);
      if (e instanceof JetStreamApiError) {
        throw new RoostError('ROOST_ERR_INVALID_OPTION', `jetstream: the server refused stream ${want.name} with subjects ${want.subjects!.join(', ')}: ${e.message}`, {
          field: 'stream',
          expected: 'a stream this transport can create or update (subjects that overlap no other stream)',
          received: want.name,
          cause: error,
        });
      }
      throw this.unavailable(error);
    }
  }

  /**
   * A publish nothing answered (no stream on its subject: the stream was deleted, or the server
   * came back without its store): makes the stream again, once at a time, so a retry succeeds.
   */
  private restoreStream(): void {
    const jsm = this.jsm;
    if (jsm === null || this.restoring !== null || this.closing !== null) return;
    this.restoring = this.ensureStream(jsm)
      .then(
        () => this.logger?.warn({ transport: this.kind, stream: this.jetstream.stream }, 'jetstream: the stream was gone; made it again'),
        (error: unknown) => this.logger?.warn({ err: error, transport: this.kind, stream: this.jetstream.stream }, 'jetstream: the stream is gone and cannot be made again yet'),
      )
      .finally(() => {
        this.restoring = null;
      });
  }

  protected override async send(topic: string, bytes: Buffer, envelope: Envelope): Promise<void> {
    const subject = `${this.jetstream.subjectPrefix}.${this.subjectOf(topic)}`;
    const js = this.client();
    try {
      // The `roost-dedup-id` header, when an envelope has one, names it instead of its id: a fleet
      // task sent again (a redelivery, a retry) keeps its envelope id and must not be dropped.
      await js.publish(subject, bytes, { msgID: envelope.headers['roost-dedup-id'] ?? envelope.id, timeout: this.jetstream.publishTimeoutMs });
    } catch (error) {
      // A negative PubAck is the server's answer (a full stream that takes nothing new, out of
      // storage): a retry does not change it. Over max_payload neither. Anything else (no
      // answer: disconnected, timed out; no stream for the subject yet) may be stored or not: a
      // retry is safe within the duplicate window (same msgID).
      if (error instanceof JetStreamApiError) {
        throw new RoostError('ROOST_ERR_PUBLISH_REFUSED', `${this.kind}: the stream refused a publish to ${topic}: ${error.message}`, {
          details: { transport: this.kind, topic, apiCode: error.code },
          cause: error,
        });
      }
      if (error instanceof InvalidArgumentError) throw this.refused(error);
      if (ensureError(error).name === 'JetStreamNotEnabled') this.restoreStream(); // nats.js's name for "no responders"
      throw this.unavailable(error);
    }
  }

  override async subscribe(pattern: string, handler: EnvelopeHandler, options: SubscribeOptions = {}): Promise<Subscription> {
    const filter = `${this.jetstream.subjectPrefix}.${natsSubject(topicSegments(pattern, true, 'pattern'))}`;
    const group = options.group === undefined ? null : checkGroup(options.group);
    this.client();
    const pull: Pull = {
      consumer: group ?? `roost_${randomUUID().replaceAll('-', '')}`,
      filter,
      group,
      handler: options.dedup?.wrap(handler) ?? handler,
      messages: null,
      stopped: false,
      lastSeq: 0,
      running: new Set(),
      restarting: null,
    };
    try {
      await this.ensureConsumer(pull, false);
      await this.start(pull);
    } catch (error) {
      pull.stopped = true;
      pull.messages?.stop();
      if (error instanceof RoostError) throw error;
      throw this.unavailable(error);
    }
    this.pulls.add(pull);
    return { unsubscribe: () => this.stop(pull) };
  }

  private client(): JetStreamClient {
    this.conn(); // closed or never connected: coded
    if (this.js === null) throw transportClosed(this.kind);
    return this.js;
  }

  private consumerConfig(pull: Pull, recreate: boolean): Partial<ConsumerConfig> {
    const j = this.jetstream;
    // A lost consumer is made again from the next envelope this subscriber has not seen; a new
    // group starts from the stream's first envelope for its pattern, a new single subscriber
    // from the next one published.
    const start = recreate
      ? pull.lastSeq > 0
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: pull.lastSeq + 1 }
        : { deliver_policy: DeliverPolicy.All }
      : { deliver_policy: pull.group === null ? DeliverPolicy.New : DeliverPolicy.All };
    return {
      ...(pull.group === null ? { name: pull.consumer, inactive_threshold: nanos(EPHEMERAL_INACTIVE_MS) } : { durable_name: pull.consumer }),
      filter_subject: pull.filter,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(j.ackWaitMs),
      max_ack_pending: j.maxAckPending,
      max_deliver: j.maxDeliver,
      replay_policy: ReplayPolicy.Instant,
      ...start,
    };
  }

  /** Makes the subscription's consumer, or checks (and updates) a group's existing one. */
  private async ensureConsumer(pull: Pull, recreate: boolean): Promise<void> {
    const jsm = this.jsm!;
    const stream = this.jetstream.stream;
    if (recreate && pull.lastSeq > 0 && (await jsm.streams.info(stream)).state.last_seq < pull.lastSeq) {
      pull.lastSeq = 0; // the stream itself was made again: its sequences started over, so start at its first envelope
    }
    const want = this.consumerConfig(pull, recreate);
    if (pull.group !== null) {
      const info = await jsm.consumers.info(stream, pull.consumer).catch((error: unknown) => {
        if (error instanceof JetStreamApiError && error.code === 10014) return null; // consumer not found
        throw error;
      });
      if (info !== null) {
        const c = info.config;
        if (c.filter_subject !== pull.filter) {
          throw new RoostError('ROOST_ERR_ALREADY_EXISTS', `jetstream: group ${pull.consumer} on stream ${stream} consumes ${c.filter_subject ?? '(all)'} already; a group consumes one pattern (use another group name for ${pull.filter})`, {
            details: { transport: this.kind, stream, group: pull.consumer, existing: c.filter_subject ?? null, wanted: pull.filter },
          });
        }
        if (c.ack_wait !== want.ack_wait || c.max_ack_pending !== want.max_ack_pending || c.max_deliver !== want.max_deliver) {
          await jsm.consumers.update(stream, pull.consumer, { ack_wait: want.ack_wait!, max_ack_pending: want.max_ack_pending!, max_deliver: want.max_deliver! });
        }
        return;
      }
    }
    const info = await jsm.consumers.add(stream, want);
    // A subscriber's own consumer starts after the stream's last envelope: remember it as seen,
    // so that if the consumer is lost before anything came, it is made again from there.
    if (pull.group === null && !recreate) pull.lastSeq = info.delivered.stream_seq;
  }

  /** Starts the pull loop of a subscription on its consumer. */
  private async start(pull: Pull): Promise<void> {
    const consumer = await this.client().consumers.get(this.jetstream.stream, pull.consumer);
    if (pull.stopped) return;
    const messages = await consumer.consume({
      max_messages: this.jetstream.maxAckPending,
      callback: (m) => this.receive(pull, m),
    });
    pull.messages = messages;
    if (pull.stopped) messages.stop(); // unsubscribed while this started
    void (async () => {
      try {
        for await (const s of messages.status()) {
          // Gone from the server (deleted, or an ephemeral consumer lost in a restart): make it again.
          if ((s.type === 'consumer_not_found' || s.type === 'consumer_deleted') && !pull.stopped) void this.restart(pull, messages);
        }
      } catch (error) {
        this.logger?.warn({ err: error, transport: this.kind, consumer: pull.consumer }, 'jetstream: the consumer status stream failed');
      }
    })();
  }

  private restart(pull: Pull, old: ConsumerMessages): Promise<void> {
    pull.restarting ??= (async () => {
      if (pull.messages !== old) return;
      old.stop();
      pull.messages = null;
      for (let attempt = 1; !pull.stopped && this.closing === null; attempt++) {
        try {
          await this.ensureConsumer(pull, true);
          await this.start(pull);
          this.logger?.warn({ transport: this.kind, consumer: pull.consumer, fromSeq: pull.lastSeq + 1 }, 'jetstream: consumer was gone from the server; made it again');
          return;
        } catch (error) {
          this.logger?.warn({ err: error, transport: this.kind, consumer: pull.consumer, attempt }, 'jetstream: cannot make the consumer again yet');
          await new Promise((r) => setTimeout(r, Math.min(5_000, 100 * 2 ** Math.min(attempt, 6))));
        }
      }
    })().finally(() => {
      pull.restarting = null;
    });
    return pull.restarting;
  }

  /**
   * Sends an ack, NAK or TERM. They are publishes: nats.js holds them while reconnecting and
   * throws once the connection closed; a lost one means a redelivery, which dedup absorbs.
   */
  private reply(m: JsMsg, what: 'ack' | 'nak' | 'term', delayMs?: number): void {
    try {
      if (what === 'ack') m.ack();
      else if (what === 'term') m.term();
      else m.nak(delayMs);
    } catch (error) {
      this.logger?.warn({ err: error, transport: this.kind, seq: m.seq }, `jetstream: could not send the ${what} (the server delivers the message again after ackWaitMs)`);
    }
  }

  /** One message from the consumer: decode, handle, then ack, retry or drop. */
  private receive(pull: Pull, m: JsMsg): void {
    if (pull.stopped) {
      this.reply(m, 'nak'); // arrived after unsubscribe: back to the server at once, for another member
      return;
    }
    if (m.seq > pull.lastSeq) pull.lastSeq = m.seq;
    const topic = m.subject.slice(this.jetstream.subjectPrefix.length + 1).replaceAll('.', '/');
    const envelope = this.decode(m.data, topic);
    if (envelope === null) {
      this.reply(m, 'term'); // counted and logged by decode: never delivered again
      return;
    }
    let ok = false;
    const handler = pull.handler;
    const run = this.handle(
      async (env, delivery) => {
        await handler(env, delivery);
        ok = true;
      },
      envelope,
      { topic },
    ).then(() => {
      if (ok) this.reply(m, 'ack');
      else if (m.info.deliveryCount >= this.jetstream.maxDeliver) {
        this.reply(m, 'term');
        this.logger?.error(
          { transport: this.kind, topic, envelopeId: envelope.id, deliveries: m.info.deliveryCount, consumer: pull.consumer },
          `jetstream: dropped an envelope whose handler failed on each of its ${m.info.deliveryCount} deliveries (maxDeliver)`,
        );
      } else this.reply(m, 'nak', this.jetstream.retryDelayMs);
    });
    pull.running.add(run);
    void run.finally(() => pull.running.delete(run));
  }

  /** Stops fetching, lets the handlers finish and acknowledges them; removes the consumer if it is not to stay. */
  private async stop(pull: Pull): Promise<void> {
    if (pull.stopped) return;
    pull.stopped = true;
    this.pulls.delete(pull);
    pull.messages?.stop();
    await pull.restarting;
    pull.messages?.stop(); // one a restart started meanwhile (stop is idempotent)
    while (pull.running.size > 0) await Promise.allSettled([...pull.running]);
    const nc = this.nc;
    if (nc === null || this.stateValue !== 'connected') return; // the server is away: an ephemeral consumer expires by itself
    try {
      await nc.flush(); // the acks are on the server before the consumer may go
      if (pull.group === null || this.jetstream.deleteGroupConsumers) await this.deleteConsumer(pull.consumer);
    } catch (error) {
      this.logger?.warn({ err: error, transport: this.kind, consumer: pull.consumer }, 'jetstream: could not remove a consumer on unsubscribe');
    }
  }

  /**
   * Deletes a consumer. nats-server 2.9 can fail a delete that races the write of an ack to the
   * consumer's file store (`unlinkat …: directory not empty`): a moment later it succeeds.
   */
  private async deleteConsumer(name: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.jsm!.consumers.delete(this.jetstream.stream, name);
        return;
      } catch (error) {
        if (error instanceof JetStreamApiError && error.code === 10014) return; // gone already
        if (attempt >= 3) throw error;
        await new Promise((r) => setTimeout(r, 50 * attempt));
      }
    }
  }

  protected override async shutdown(): Promise<void> {
    await Promise.allSettled([...this.pulls].map((p) => this.stop(p)));
    await super.shutdown();
  }
}
