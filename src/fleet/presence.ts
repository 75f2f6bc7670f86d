/**
 * Presence: each process tells the fleet, through its transport, who it is, what it hosts and how
 * busy it is; a registry of the fleet listens and picks a healthy, least-loaded process for a
 * capability. The records (presence-record.ts) travel on the transport's `PresenceChannel`
 * (transport.ts): MQTT retained messages with a message expiry and a last will, a NATS KV bucket,
 * or the in-process broker's memory.
 *
 *   preparePresence(transport, { namespace, id });        // before connect(): MQTT's last will
 *   await transport.connect();
 *   const presence = await startPresence(transport, { namespace, id }, () => ({ status: 'available', load, capacity, agents, nodes }));
 *   const fleet = await watchPresence(transport, { namespace });
 *   fleet.pick('summarize');                              // the least-loaded healthy process with it
 *   await presence.close();                               // publishes 'unavailable'
 *
 * A record counts until its `expiresAt` (the sender's heartbeat time + its expiry, default
 * 3 × the 5 s heartbeat): a process that stops heartbeating leaves every registry then, on every
 * transport. On MQTT a process that vanishes (killed, its connection cut) is also reported at
 * once by its last will, a retained `unavailable` record. An `unavailable` entry stays listed,
 * as unavailable, until it expires, so `roost agents` shows who went away; `pick` never chooses
 * it.
 */
import { isRoostError, ensureError, invalidOption, RoostError } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';
import type { PresenceChannel, PresenceRecordMeta, PresenceWatch, Transport } from '../transport/transport.js';
import { checkNamespace } from '../transport/transport.js';
import { checkObject, optInt } from '../validate-options.js';
import { roostVersion } from '../version.js';
import {
  MAX_EXPIRY_MS,
  MalformedPresence,
  PRESENCE_RECORD_VERSION,
  checkPresenceId,
  decodePresence,
  encodePresence,
  type PresenceInfo,
  type PresenceRecord,
  type PresenceStatus,
} from './presence-record.js';
import { PresenceRegistryImpl, type PresenceRegistry } from './presence-registry.js';

export type { PresenceAgent, PresenceInfo, PresenceStatus } from './presence-record.js';
export type { FleetView, PresenceChange, PresenceRegistry, PresenceRegistryStats } from './presence-registry.js';

/** The default heartbeat: a record is written again this often. */
export const DEFAULT_HEARTBEAT_MS = 5_000;
/** A record's default lifetime, in heartbeats: two can be lost before a live process drops out. */
export const DEFAULT_EXPIRY_HEARTBEATS = 3;

/** How a process publishes its presence. */
export interface PresenceOptions {
  /** The fleet's namespace: 1 to 64 letters, digits, `_` and `-` (MQTT topics `<namespace>/presence/…`, NATS bucket `<namespace>-presence`). */
  readonly namespace: string;
  /** This process's id (its runtime owner id): 1 to 100 letters, digits and `. _ : -`. */
  readonly id: string;
  /** How often the record is written (default 5,000 ms). */
  readonly heartbeatMs?: number;
  /** How long a record counts (default 3 × heartbeatMs; more than heartbeatMs, at most a day). */
  readonly expiryMs?: number;
  /** The version told (default: this package's). */
  readonly version?: string;
  /** Where failed heartbeats are logged (default: silent). */
  readonly logger?: Logger | null;
}

/** The options after checking. */
export interface ResolvedPresenceOptions {
  readonly namespace: string;
  readonly id: string;
  readonly heartbeatMs: number;
  readonly expiryMs: number;
  readonly version: string;
  readonly logger: Logger | null;
}

/** What a process reports at each heartbeat (the rest is fixed by its options). */
export type PresenceSnapshot = Pick<PresenceInfo, 'load' | 'capacity' | 'agents' | 'nodes' | 'status'>;

/** A process's presence, publishing. */
export interface PresenceHandle {
  readonly id: string;
  readonly state: 'running' | 'closing' | 'closed';
  /** Publishes now (after a change worth telling before the next heartbeat). */
  refresh(): Promise<void>;
  /**
   * Stops the heartbeat and publishes `unavailable` (its last snapshot, so readers still see
   * what it hosted) while the record lives out its expiry. Call it before the transport's
   * `close()`. The same promise on repeat.
   */
  close(status?: 'unavailable'): Promise<void>;
}

/** How a registry watches. */
export interface WatchPresenceOptions {
  readonly namespace: string;
  /** Where malformed records and failing listeners are logged (default: silent). */
  readonly logger?: Logger | null;
}

/** Checks presence options (unknown keys refused, defaults filled in), frozen. */
export function resolvePresenceOptions(options: PresenceOptions): ResolvedPresenceOptions {
  const o = checkObject('options', options, ['namespace', 'id', 'heartbeatMs', 'expiryMs', 'version', 'logger']);
  const namespace = checkNamespace(o['namespace'], 'namespace');
  const id = checkPresenceId(o['id'], 'id');
  const heartbeatMs = optInt('', o, 'heartbeatMs', 10, MAX_EXPIRY_MS - 1, DEFAULT_HEARTBEAT_MS);
  const expiryMs = optInt('', o, 'expiryMs', heartbeatMs + 1, MAX_EXPIRY_MS, Math.min(MAX_EXPIRY_MS, DEFAULT_EXPIRY_HEARTBEATS * heartbeatMs));
  const version = o['version'] ?? roostVersion();
  if (typeof version !== 'string' || version.length === 0 || version.length > 64) throw invalidOption('version', 'a version string of 1 to 64 characters', version);
  return Object.freeze({ namespace, id, heartbeatMs, expiryMs, version, logger: (o['logger'] as Logger | null | undefined) ?? null });
}

/** The transport's presence channel of `namespace`, or a coded error when it has none. */
function channelOf(transport: Transport, namespace: string): PresenceChannel {
  if (typeof transport.presence !== 'function') {
    throw invalidOption('transport', 'a transport that carries presence (in-process, MQTT, NATS or JetStream)', transport.kind);
  }
  return transport.presence(namespace);
}

/** Transports whose last will was set, with the namespace and id it is for. */
const wills = new WeakMap<Transport, string>();

/**
 * Sets this process's last will on `transport` (MQTT: a retained `unavailable` record the broker
 * publishes if the connection vanishes). Call it before `transport.connect()`; on a transport
 * without a will (NATS, in-process) it only checks the options.
 */
export function preparePresence(transport: Transport, options: PresenceOptions): void {
  const o = resolvePresenceOptions(options);
  const channel = channelOf(transport, o.namespace);
  if (!channel.lastWill) return;
  if (transport.state !== 'connecting') {
    throw new RoostError('ROOST_ERR_INVALID_STATE', `presence: preparePresence() comes before transport.connect() (the ${transport.kind} broker takes the last will with the connection)`, {
      details: { transport: transport.kind, state: transport.state },
    });
  }
  const will: PresenceRecord = { v: PRESENCE_RECORD_VERSION, id: o.id, status: 'unavailable', version: o.version, load: 0, capacity: 0, agents: [], nodes: [], ts: null, expiresAt: null, expiryMs: o.expiryMs };
  channel.setWill(o.id, encodePresence(will), o.expiryMs);
  wills.set(transport, `${o.namespace}\u0000${o.id}`);
}

/** The bytes of `snapshot` as `o`'s record at `now`. */
function recordOf(o: ResolvedPresenceOptions, snapshot: PresenceSnapshot, now: number, status?: PresenceStatus): Uint8Array {
  if (typeof snapshot !== 'object' || snapshot === null) throw invalidOption('snapshot()', 'an object { status, load, capacity, agents, nodes }', snapshot);
  return encodePresence({
    v: PRESENCE_RECORD_VERSION,
    id: o.id,
    status: status ?? snapshot.status,
    version: o.version,
    load: snapshot.load,
    capacity: snapshot.capacity,
    agents: snapshot.agents,
    nodes: snapshot.nodes,
    ts: now,
    expiresAt: now + o.expiryMs,
    expiryMs: o.expiryMs,
  });
}

class Publisher implements PresenceHandle {
  state: PresenceHandle['state'] = 'running';
  private timer: NodeJS.Timeout | null = null;
  private offState: (() => void) | null = null;
  /** The publishes in order: one at a time. */
  private chain: Promise<void> = Promise.resolve();
  private beating = false;
  private closing: Promise<void> | null = null;
  private failing = false;
  private last: PresenceSnapshot | null = null;

  constructor(
    private readonly transport: Transport,
    private readonly channel: PresenceChannel,
    private readonly o: ResolvedPresenceOptions,
    private readonly snapshot: () => PresenceSnapshot,
  ) {}

  get id(): string {
    return this.o.id;
  }

  async start(): Promise<void> {
    await this.publish(); // a first write that fails (no JetStream, refused) fails the start
    this.timer = setInterval(() => this.beat(), this.o.heartbeatMs);
    this.timer.unref(); // presence never keeps a process up by itself
    // Back after an outage (the will fired, or the record expired meanwhile): tell at once.
    this.offState = this.transport.onState((e) => {
      if (e.state === 'connected') this.beat();
    });
  }

  /** One heartbeat: skipped while the transport is not connected (the record then expires) or one is under way. */
  private beat(): void {
    if (this.state !== 'running' || this.beating || this.transport.state !== 'connected') return;
    this.beating = true;
    this.publish().then(
      () => {
        if (this.failing) this.o.logger?.info({ presence: this.o.id, namespace: this.o.namespace }, 'presence: heartbeats go through again');
        this.failing = false;
      },
      (error: unknown) => {
        if (!this.failing) this.o.logger?.warn({ err: error, presence: this.o.id, namespace: this.o.namespace }, 'presence: a heartbeat failed (the record expires unless a later one goes through)');
        this.failing = true;
      },
    ).finally(() => {
      this.beating = false;
    });
  }

  private publish(status?: PresenceStatus): Promise<void> {
    const run = this.chain.then(() => {
      const snapshot = status === undefined ? this.snapshot() : (this.last ?? { status: 'unavailable', load: 0, capacity: 0, agents: [], nodes: [] });
      const bytes = recordOf(this.o, snapshot, Date.now(), status);
      if (status === undefined) this.last = snapshot;
      return this.channel.put(this.o.id, bytes, this.o.expiryMs);
    });
    this.chain = run.catch(() => {});
    return run;
  }

  refresh(): Promise<void> {
    if (this.state !== 'running') return Promise.reject(new RoostError('ROOST_ERR_INVALID_STATE', 'presence: refresh() after close()', { details: { id: this.o.id } }));
    return this.publish();
  }

  close(_status: 'unavailable' = 'unavailable'): Promise<void> {
    this.closing ??= (async () => {
      this.state = 'closing';
      if (this.timer !== null) clearInterval(this.timer);
      this.offState?.();
      if (this.transport.state === 'connected') {
        // Bounded: past its expiry the record is gone anyway (and MQTT would hold the publish
        // for as long as the broker is away).
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<'late'>((resolve) => {
          timer = setTimeout(() => resolve('late'), this.o.expiryMs);
        });
        try {
          const sent = this.publish('unavailable');
          if ((await Promise.race([sent, late])) === 'late') sent.catch(() => {});
        } catch (error) {
          this.o.logger?.warn({ err: error, presence: this.o.id, namespace: this.o.namespace }, 'presence: could not publish unavailable on close (the record expires)');
        } finally {
          clearTimeout(timer);
        }
      }
      this.state = 'closed';
    })();
    return this.closing;
  }
}

/**
 * Starts publishing this process's presence on a connected transport: at once (resolving once
 * the broker has the first record; a failure rejects), then every `heartbeatMs` and whenever the
 * transport connects again, from `snapshot()`. On MQTT, `preparePresence` must have set the will
 * before `connect()`.
 */
export async function startPresence(transport: Transport, options: PresenceOptions, snapshot: () => PresenceSnapshot): Promise<PresenceHandle> {
  const o = resolvePresenceOptions(options);
  if (typeof snapshot !== 'function') throw invalidOption('snapshot', 'a function returning { status, load, capacity, agents, nodes }', snapshot);
  const channel = channelOf(transport, o.namespace);
  if (channel.lastWill && wills.get(transport) !== `${o.namespace}\u0000${o.id}`) {
    throw new RoostError('ROOST_ERR_INVALID_STATE', `presence: on ${transport.kind}, call preparePresence() with the same namespace and id before transport.connect() (it sets the last will)`, {
      details: { transport: transport.kind, namespace: o.namespace, id: o.id },
    });
  }
  if (transport.state === 'connecting') {
    throw new RoostError('ROOST_ERR_INVALID_STATE', 'presence: startPresence() comes after transport.connect()', { details: { transport: transport.kind } });
  }
  const publisher = new Publisher(transport, channel, o, snapshot);
  await publisher.start();
  return publisher;
}

/**
 * Watches the fleet of `namespace`: resolves once the watch is in place (the records the broker
 * keeps arrive right after, retained messages and KV entries alike). See {@link PresenceRegistry}.
 */
export async function watchPresence(transport: Transport, options: WatchPresenceOptions): Promise<PresenceRegistry> {
  const o = checkObject('options', options, ['namespace', 'logger']);
  const namespace = checkNamespace(o['namespace'], 'namespace');
  const logger = (o['logger'] as Logger | null | undefined) ?? null;
  const channel = channelOf(transport, namespace);
  const registry = new PresenceRegistryImpl(logger, namespace);
  let watch: PresenceWatch;
  try {
    watch = await channel.watch((id, bytes, meta) => heard(registry, id, bytes, meta));
  } catch (error) {
    registry.stopTimer();
    throw isRoostError(error) ? error : ensureError(error);
  }
  registry.watching(watch);
  return registry;
}

/** One record from the channel: decoded and checked, or counted as malformed. */
function heard(registry: PresenceRegistryImpl, key: string, bytes: Uint8Array | null, meta: PresenceRecordMeta): void {
  if (bytes === null) {
    registry.removed(key);
    return;
  }
  let record: PresenceRecord;
  try {
    record = decodePresence(bytes);
    if (record.id !== key) throw new MalformedPresence('id', `the id its key names (${key})`);
  } catch (error) {
    registry.malformed(key, error instanceof MalformedPresence ? error : new MalformedPresence('record', ensureError(error).message), bytes.length);
    return;
  }
  registry.heard(record, meta);
}
