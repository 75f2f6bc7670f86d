/**
 * Presence records on NATS (core NATS and JetStream alike; see `PresenceChannel` in
 * transport.ts), in the JetStream KV bucket `<namespace>-presence` (`@nats-io/kv`): key = the
 * process id escaped by {@link presenceKey}, history 1, file storage (so the bucket, and the
 * `unavailable` of a clean close, outlive a server restart; a heartbeat every few seconds per
 * process is little to write).
 *
 * nats-server 2.9 has no per-key TTL (2.11) and no last will: the bucket's `max_age` is the
 * longest record lifetime any process asked for (it only grows, so a process with a short expiry
 * never cuts another's records short), which bounds how long a dead process's record stays on
 * the server; readers expire a record by the times in it (src/fleet/presence.ts). Note that the
 * server's `max_age` removes a record without telling watchers: the reader's own timer does.
 */
import { JetStreamApiError, jetstreamManager, StorageType } from '@nats-io/jetstream';
import { Kvm, type KV, type KvWatchEntry } from '@nats-io/kv';
import { nanos, type NatsConnection, type QueuedIterator } from '@nats-io/transport-node';
import { RoostError, ensureError } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';
import { checkNamespace, type PresenceChannel, type PresenceListener, type PresenceWatch } from './transport.js';

/** The bucket's `max_age` when a reader makes it (the default presence expiry, 3 × 5 s). */
const DEFAULT_MAX_AGE_MS = 15_000;

/** How often a watch checks that its bucket is still the one it watches. */
const RECHECK_MS = 10_000;

/** A watch of the bucket. */
interface Watching {
  readonly kv: KV;
  /** The creation time of the bucket's stream when the watch began. */
  readonly created: string;
  readonly entries: QueuedIterator<KvWatchEntry>;
}

/** What the channel needs of its NatsTransport. */
export interface NatsPresenceHost {
  readonly kind: string;
  /** The connection (throws the transport's coded error when closed or not connected). */
  conn(): NatsConnection;
  readonly logger: Logger | null;
}

/**
 * A KV key for a process id: any character but letters, digits, `_` and `-` as `=XX` (its code
 * in hex). A KV key splits into tokens at dots and may hold no `:`, which an id may.
 */
export function presenceKey(id: string): string {
  return id.replace(/[^A-Za-z0-9_-]/g, (c) => `=${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

/** The process id of a KV key. */
export function presenceIdOf(key: string): string {
  return key.replace(/=([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}

/** The presence channel of one namespace on one NatsTransport. */
export class NatsPresenceChannel implements PresenceChannel {
  readonly lastWill = false;
  readonly bucket: string;
  private opened: { readonly nc: NatsConnection; readonly kv: Promise<KV> } | null = null;
  /** The bucket's `max_age` as last seen or set, ms. */
  private maxAgeMs = 0;

  constructor(
    namespace: string,
    private readonly host: NatsPresenceHost,
  ) {
    this.bucket = `${checkNamespace(namespace)}-presence`;
  }

  setWill(): void {
    // No will on NATS: a vanished process's record expires (see the module comment).
  }

  async put(id: string, record: Uint8Array, ttlMs: number): Promise<void> {
    const kv = await this.open(ttlMs);
    try {
      await kv.put(presenceKey(id), record);
    } catch (error) {
      this.opened = null; // the bucket may be gone (deleted, a server back without it): make it again next time
      throw this.failed(error, `a presence write to bucket ${this.bucket} failed`);
    }
  }

  async remove(id: string): Promise<void> {
    const kv = await this.open(0);
    try {
      await kv.delete(presenceKey(id));
    } catch (error) {
      throw this.failed(error, `a presence delete in bucket ${this.bucket} failed`);
    }
  }

  async watch(listener: PresenceListener): Promise<PresenceWatch> {
    let current: Watching | null = await this.startWatch();
    let stopped = false;
    const pause: { wake: (() => void) | null } = { wake: null };
    // The watch is an ordered consumer: nats.js makes it again after a reconnect or a server
    // restart. A bucket deleted and made again (by an operator, a server back without its store)
    // starts its sequences over, which the consumer never notices: a check every
    // RECHECK_MS compares the stream's creation time and watches again when it changed. A watch
    // that ends or fails is made again with a growing pause, until stopped or the transport
    // closed; the records then come again (updates to the registry).
    const loop = (async () => {
      for (let attempt = 0; !stopped; ) {
        if (current !== null) {
          const watching = current;
          const check = setInterval(() => void this.recheck(watching), RECHECK_MS);
          check.unref();
          try {
            for await (const e of watching.entries) {
              attempt = 0;
              listener(presenceIdOf(e.key), e.operation === 'PUT' ? e.value : null, { remainingMs: null });
            }
          } catch (error) {
            this.host.logger?.warn({ err: error, transport: this.host.kind, bucket: this.bucket }, 'presence: the KV watch failed');
          } finally {
            clearInterval(check);
          }
          current = null;
        }
        if (stopped) return;
        await new Promise<void>((resolve) => {
          pause.wake = resolve;
          setTimeout(resolve, Math.min(5_000, 250 * 2 ** Math.min(attempt++, 5))).unref();
        });
        if (stopped) return;
        try {
          current = await this.startWatch();
          this.host.logger?.info({ transport: this.host.kind, bucket: this.bucket }, 'presence: watching the KV bucket again');
        } catch (error) {
          if (error instanceof RoostError && error.code === 'ROOST_ERR_TRANSPORT_CLOSED') return;
          this.host.logger?.warn({ err: error, transport: this.host.kind, bucket: this.bucket, attempt }, 'presence: cannot watch the KV bucket yet');
        }
      }
    })();
    return {
      stop: async () => {
        stopped = true;
        current?.entries.stop();
        pause.wake?.();
        await loop;
      },
    };
  }

  /** A watch of the whole bucket, with the creation time of its stream then. */
  private async startWatch(): Promise<Watching> {
    const kv = await this.open(0);
    try {
      const created = (await kv.status()).streamInfo.created;
      return { kv, created, entries: await kv.watch({ key: '>' }) };
    } catch (error) {
      this.opened = null; // the bucket may be gone: make it again on the next try
      throw this.failed(error, `cannot watch presence bucket ${this.bucket}`);
    }
  }

  /** Ends a watch whose bucket is gone or was made again since (the loop then watches anew). */
  private async recheck(watching: Watching): Promise<void> {
    try {
      const created = (await watching.kv.status()).streamInfo.created;
      if (created === watching.created) return;
    } catch (error) {
      if (!(error instanceof JetStreamApiError) && !/not found/i.test(ensureError(error).message)) return; // the server away: the consumer rides it out
    }
    this.opened = null;
    watching.entries.stop();
  }

  /** The bucket, made when missing, with a `max_age` of at least `ttlMs` (it only grows). */
  private async open(ttlMs: number): Promise<KV> {
    const nc = this.host.conn();
    if (this.opened === null || this.opened.nc !== nc) {
      const kv = new Kvm(nc).create(this.bucket, { history: 1, storage: StorageType.File, ttl: Math.max(ttlMs, DEFAULT_MAX_AGE_MS) }).then(
        async (bucket) => {
          this.maxAgeMs = (await bucket.status()).ttl;
          return bucket;
        },
        (error: unknown) => {
          this.opened = null; // a later call tries again
          throw this.failed(error, `cannot open presence bucket ${this.bucket} (presence on NATS needs JetStream: nats-server -js)`);
        },
      );
      this.opened = { nc, kv };
    }
    const kv = await this.opened.kv;
    if (ttlMs > this.maxAgeMs) await this.growMaxAge(nc, ttlMs);
    return kv;
  }

  private async growMaxAge(nc: NatsConnection, ttlMs: number): Promise<void> {
    try {
      const jsm = await jetstreamManager(nc);
      const stream = `KV_${this.bucket}`;
      const info = await jsm.streams.info(stream);
      const have = Math.round(info.config.max_age / 1e6);
      if (have > 0 && have < ttlMs) await jsm.streams.update(stream, { max_age: nanos(ttlMs) });
      this.maxAgeMs = Math.max(have, ttlMs);
    } catch (error) {
      throw this.failed(error, `cannot raise the max_age of presence bucket ${this.bucket} to ${ttlMs} ms`);
    }
  }

  private failed(error: unknown, what: string): RoostError {
    if (error instanceof RoostError) return error;
    const e = ensureError(error);
    return new RoostError('ROOST_ERR_TRANSPORT_UNAVAILABLE', `${this.host.kind}: ${what}: ${e.message}`, {
      details: { transport: this.host.kind, bucket: this.bucket, ...(error instanceof JetStreamApiError ? { apiCode: error.code } : {}) },
      cause: error,
    });
  }
}
