/**
 * The transport contract: how envelopes move between processes. In-process, MQTT 5, NATS and JetStream
 * implement it; `test/transport/contract.ts` is one suite that runs against all four.
 *
 * Topics are written one way for every transport: segments separated by `/`, with `+` for one
 * segment and a final `#` for any number of them in subscription patterns (MQTT's notation; NATS
 * gets `.`, `*` and `>`). A segment holds letters, digits and `_ - : %` — no `.`, which is NATS's
 * separator: `topicSegment(name)` escapes a name (which may hold dots) into a segment.
 *
 * Envelopes travel as the core's JSON codec, with the same size cap and validation on receive:
 * a message from the wire that does not decode is counted (`stats().dropped`), logged and dropped;
 * the subscriber never sees it and keeps working.
 *
 * Presence (src/fleet/presence.ts) needs more than envelopes: a record per process that the
 * broker keeps for a while (MQTT: a retained message with a message expiry; NATS: a KV bucket),
 * and where the broker can, a last will. Each transport offers it as a {@link PresenceChannel}
 * (`transport.presence(namespace)`); the records are opaque bytes to the transport.
 */
import type { Envelope } from '../envelope/envelope.js';
import { RoostError, invalidOption } from '../errors.js';
import { hidePassword } from '../redact.js';
import { checkObject, optInt } from '../validate-options.js';

/** A transport's connection, as its state events tell it. */
export type TransportState = 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** A change of a transport's connection state. */
export interface TransportStateEvent {
  readonly type: 'transport_state';
  readonly transport: string;
  readonly state: TransportState;
  readonly ts: number;
  /** Why it left `connected`, when it says. */
  readonly error: { readonly code: string; readonly message: string } | null;
}

/** Where a received envelope came from. */
export interface Delivery {
  /** The concrete topic it was published to. */
  readonly topic: string;
}

/** Handles one received envelope. A rejection is logged; the message counts as handled. */
export type EnvelopeHandler = (envelope: Envelope, delivery: Delivery) => void | Promise<void>;

/** Answers one request with an envelope (or rejects: the requester gets the error). */
export type Responder = (envelope: Envelope, delivery: Delivery) => Envelope | Promise<Envelope>;

/** How to subscribe. */
export interface SubscribeOptions {
  /**
   * A worker group: each envelope goes to one member of the group instead of to every subscriber
   * (MQTT 5 shared subscriptions, NATS queue groups). A name: letters, digits, `_ - :`.
   */
  readonly group?: string;
  /** Handle each envelope once, by id, even when the broker delivers it again (see dedup.ts). */
  readonly dedup?: { wrap(handler: EnvelopeHandler): EnvelopeHandler };
}

/**
 * How to answer requests. No dedup: a repeated request is answered again (its requester may be
 * waiting for that answer), so a responder with effects makes them idempotent itself.
 */
export interface RespondOptions {
  /** A worker group: each request goes to one member (as {@link SubscribeOptions.group}). */
  readonly group?: string;
}

/** Checks respond options: `dedup` is refused with a coded error rather than ignored. */
export function checkRespondOptions(options: unknown): RespondOptions {
  const o = checkObject('options', options, ['group']);
  return o.group === undefined ? {} : { group: checkGroup(o.group) };
}

/** How to make a request. */
export interface RequestOptions {
  /** Fail with `ROOST_ERR_REQUEST_TIMEOUT` when no answer came within this long (default 5,000 ms). */
  readonly timeoutMs?: number;
}

/** A live subscription. */
export interface Subscription {
  /** Stops it; envelopes being handled finish. */
  unsubscribe(): Promise<void>;
}

/** What a transport counted. */
export interface TransportStats {
  /** Envelopes the broker took (publishes, requests, replies; kept ones once sent). */
  readonly published: number;
  readonly received: number;
  /** Messages from the wire that did not decode as envelopes (bad JSON, oversize, invalid). */
  readonly dropped: number;
  /** Envelopes kept in the outbox because the broker was away (outbox.ts), in all. */
  readonly kept: number;
  /** Envelopes in the outbox now, waiting for the broker. */
  readonly outbox: number;
  /** Kept envelopes the broker refused for good when they were sent (logged, then forgotten). */
  readonly outboxFailed: number;
}

/** See the module comment. */
export interface Transport {
  /** `inprocess`, `mqtt`, `nats` or `jetstream`. */
  readonly kind: string;
  readonly state: TransportState;
  /** Connects (resolves once connected; rejects with a coded error if it cannot). */
  connect(): Promise<void>;
  /** Publishes an envelope; resolves once the broker has it (MQTT PUBACK, NATS flush, JetStream PubAck). */
  publish(topic: string, envelope: Envelope): Promise<void>;
  /** Subscribes to a pattern; resolves once the broker confirmed the subscription. */
  subscribe(pattern: string, handler: EnvelopeHandler, options?: SubscribeOptions): Promise<Subscription>;
  /** Sends a request to `topic` and resolves with the answer of one responder. */
  request(topic: string, envelope: Envelope, options?: RequestOptions): Promise<Envelope>;
  /** Answers requests sent to `topic` (one answer per request, by one member of `group`). */
  respond(topic: string, responder: Responder, options?: RespondOptions): Promise<Subscription>;
  /** Subscribes to state changes; returns the unsubscribe function. */
  onState(listener: (event: TransportStateEvent) => void): () => void;
  stats(): TransportStats;
  /** Lets handlers in progress finish, then disconnects. The same promise on repeat. */
  close(): Promise<void>;
  /**
   * The presence records of `namespace` (see {@link PresenceChannel}). Every Roost transport has
   * it; a transport of one's own may leave it out, and presence then refuses it.
   */
  presence?(namespace: string): PresenceChannel;
}

/** What the broker says of a presence record it delivers. */
export interface PresenceRecordMeta {
  /**
   * How much longer the broker keeps the record at most, in ms, when it says (MQTT 5: the message
   * expiry interval left, whole seconds, plus one for its rounding); null when it does not (NATS
   * KV). In-process: exact.
   */
  readonly remainingMs: number | null;
}

/** Receives the records of a presence watch: `record` null means the record was removed. */
export type PresenceListener = (id: string, record: Uint8Array | null, meta: PresenceRecordMeta) => void;

/** A live presence watch. */
export interface PresenceWatch {
  stop(): Promise<void>;
}

/**
 * One namespace's presence records on a transport: one record per process id, kept by the broker
 * for a bounded time, and a last will where the broker has one.
 *
 * - MQTT: the retained message `<namespace>/presence/<topicSegment(id)>` with an MQTT 5 message
 *   expiry; the will is set on the sending connection (`<clientId>-out`), so it must be set
 *   before `connect()`.
 * - NATS and JetStream: the KV bucket `<namespace>-presence`, key = the id (`.`, `:` escaped as `=2E`, `=3A`), its
 *   `max_age` the longest record lifetime asked for; no will (nats-server 2.9 has no per-key TTL
 *   either: expiry is the reader's, by the times in each record).
 * - In-process: the same, in the broker object's memory.
 */
export interface PresenceChannel {
  /** Whether this transport has a last will (`setWill` does something). */
  readonly lastWill: boolean;
  /**
   * The record the broker publishes for `id` if this process's connection vanishes without a
   * clean close, kept `ttlMs` (MQTT's last will). Only before `connect()`; one per transport. A
   * transport without a will ignores it.
   */
  setWill(id: string, record: Uint8Array, ttlMs: number): void;
  /** Stores `id`'s record, kept at least `ttlMs` by the broker; resolves once the broker has it. */
  put(id: string, record: Uint8Array, ttlMs: number): Promise<void>;
  /** Removes `id`'s record. */
  remove(id: string): Promise<void>;
  /** Delivers every record the broker keeps now (retained, in the bucket), then each change. */
  watch(listener: PresenceListener): Promise<PresenceWatch>;
}

const NAMESPACE = /^[A-Za-z0-9_-]{1,64}$/;

/** Checks a presence namespace: one topic segment that is also a NATS KV bucket name. */
export function checkNamespace(namespace: unknown, field = 'namespace'): string {
  if (typeof namespace !== 'string' || !NAMESPACE.test(namespace)) throw invalidOption(field, 'a namespace of 1 to 64 letters, digits, _ and -', namespace);
  return namespace;
}

/** The default of {@link RequestOptions.timeoutMs}. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 5_000;

const SEGMENT = /^[A-Za-z0-9_\-:%]{1,128}$/;
const GROUP = /^[A-Za-z0-9_\-:]{1,64}$/;

/** The segments of a topic (`wildcards`: a pattern may use `+` and a final `#`), or a coded error. */
export function topicSegments(topic: unknown, wildcards: boolean, field = 'topic'): string[] {
  const expected = wildcards
    ? 'a topic pattern: segments of letters, digits and _ - : % separated by /, with + for one segment and a final # for the rest'
    : 'a topic: segments of letters, digits and _ - : % separated by /';
  if (typeof topic !== 'string' || topic.length === 0 || topic.length > 1024) throw invalidOption(field, expected, topic);
  const segments = topic.split('/');
  segments.forEach((s, i) => {
    if (SEGMENT.test(s)) return;
    if (wildcards && (s === '+' || (s === '#' && i === segments.length - 1))) return;
    throw invalidOption(field, expected, topic);
  });
  return segments;
}

/** Checks a worker group name. */
export function checkGroup(group: unknown, field = 'options.group'): string {
  if (typeof group !== 'string' || !GROUP.test(group)) throw invalidOption(field, 'a group name of 1 to 64 letters, digits and _ - :', group);
  return group;
}

/** A name (which may hold `.` and other characters a segment may not) as one topic segment. */
export function topicSegment(name: string): string {
  return name.replace(/[^A-Za-z0-9_\-:]/g, (c) => {
    const code = c.codePointAt(0)!;
    return code < 0x80 ? `%${code.toString(16).toUpperCase().padStart(2, '0')}` : encodeURIComponent(c);
  });
}

/** Whether `topic` matches `pattern` (both already checked). */
export function topicMatches(pattern: readonly string[], topic: readonly string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    if (p === '#') return true;
    if (i >= topic.length) return false;
    if (p !== '+' && p !== topic[i]) return false;
  }
  return pattern.length === topic.length;
}

/** The error of a request that got no answer in time. */
export function requestTimeout(topic: string, timeoutMs: number): RoostError {
  return new RoostError('ROOST_ERR_REQUEST_TIMEOUT', `request to ${topic}: no answer within ${timeoutMs} ms`, { details: { topic, timeoutMs } });
}

/** The error of a request nobody listens for. */
export function noResponders(topic: string): RoostError {
  return new RoostError('ROOST_ERR_NO_RESPONDERS', `request to ${topic}: no responder is subscribed`, { details: { topic } });
}

/** The error of a call on a closed transport. */
export function transportClosed(kind: string): RoostError {
  return new RoostError('ROOST_ERR_TRANSPORT_CLOSED', `the ${kind} transport is closed`, { details: { transport: kind } });
}

/** Checks a request timeout option. */
export function requestTimeoutMs(options: RequestOptions | undefined): number {
  return optInt('options', checkObject('options', options, ['timeoutMs']), 'timeoutMs', 1, 2_147_483_647, DEFAULT_REQUEST_TIMEOUT_MS);
}

/** A broker URL as logs and errors may show it: without its password. */
export const shownUrl = hidePassword;
