/**
 * What every transport shares: its state and the events of its changes, its counters, the codec
 * with its size cap (a message that does not decode is counted, logged and dropped), and the
 * handlers in progress that `close()` waits for.
 */
import { decodeEnvelope, encodeEnvelope, DEFAULT_MAX_ENVELOPE_BYTES } from '../envelope/codec.js';
import type { Envelope } from '../envelope/envelope.js';
import { readFileSync } from 'node:fs';
import { RoostError, ensureError, isRoostError } from '../errors.js';
import { checkObject, optInt } from '../validate-options.js';
import type { Logger } from '../telemetry/logger.js';
import { INTERRUPTED, Interrupts, Outbox, isRefused, type TransportOutboxOptions } from './outbox.js';
import { shownUrl, topicSegments, type Delivery, type EnvelopeHandler, type TransportState, type TransportStateEvent, type TransportStats } from './transport.js';

/** TLS for a broker connection: files in PEM. */
export interface TransportTlsOptions {
  /** The CA that signed the broker's certificate (default: the system's CAs). */
  readonly caFile?: string;
  /** This client's certificate and key, for brokers that require one (mTLS). */
  readonly certFile?: string;
  readonly keyFile?: string;
}

/** The TLS files, read; an unreadable one is `ROOST_ERR_INVALID_OPTION` naming it. */
export function readTls(tls: TransportTlsOptions): { ca?: string; cert?: string; key?: string } {
  const out: { ca?: string; cert?: string; key?: string } = {};
  for (const [option, into] of [['caFile', 'ca'], ['certFile', 'cert'], ['keyFile', 'key']] as const) {
    const file = tls[option];
    if (file === undefined) continue;
    try {
      out[into] = readFileSync(file, 'utf8');
    } catch (error) {
      throw new RoostError('ROOST_ERR_INVALID_OPTION', `tls.${option}: cannot read ${file} (${ensureError(error).message})`, {
        field: `tls.${option}`,
        expected: 'a readable PEM file',
        received: file,
      });
    }
  }
  if ((out.cert === undefined) !== (out.key === undefined)) {
    throw new RoostError('ROOST_ERR_INVALID_OPTION', 'tls: a client certificate needs its key, and a key its certificate', {
      field: out.cert === undefined ? 'tls.certFile' : 'tls.keyFile',
      expected: 'certFile and keyFile together',
    });
  }
  return out;
}

/** Whether a connection error came from TLS (a certificate, a handshake alert). */
export function isTlsError(error: unknown): boolean {
  const e = ensureError(error) as NodeJS.ErrnoException;
  return /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO|ERR_OSSL/i.test(e.code ?? '') || /certificate|ssl|tls|handshake|alert/i.test(e.message);
}

/** `ROOST_ERR_TRANSPORT_UNAVAILABLE` for a first connection that failed, saying when TLS is why. */
export function connectError(kind: string, url: string, error: unknown, tls: boolean): RoostError {
  const e = ensureError(error);
  const cause = e.message !== '' ? e.message : ((e as NodeJS.ErrnoException).code ?? e.name);
  const tlsFault = tls && isTlsError(e);
  const hint = tlsFault
    ? ' (TLS: check tls.caFile, and tls.certFile and tls.keyFile if the broker requires a client certificate)'
    : tls && /timeout/i.test(cause)
      ? ' (TLS is on: a broker that refuses the client certificate can show as a timeout; check tls.certFile and tls.keyFile)'
      : '';
  return new RoostError('ROOST_ERR_TRANSPORT_UNAVAILABLE', `${kind}: cannot connect to ${shownUrl(url)}: ${cause}${hint}`, {
    details: { transport: kind, url: shownUrl(url), tls: tlsFault },
    cause: error,
  });
}

/** The keys of {@link TransportBaseOptions}: each transport refuses any key neither these nor its own. */
export const BASE_OPTION_KEYS: readonly string[] = ['tls', 'maxEnvelopeBytes', 'maxPendingPublishes', 'logger', 'outbox'];

/** Options every transport takes. */
export interface TransportBaseOptions {
  /** TLS (with a CA of its own, and a client certificate for mTLS). */
  readonly tls?: TransportTlsOptions;
  /** Largest envelope sent or accepted, in bytes (default 256 KiB, as the core codec). */
  readonly maxEnvelopeBytes?: number;
  /**
   * Publishes waiting for the broker at most (default 10,000): while it is away they wait in the
   * client; one more is refused with `ROOST_ERR_TRANSPORT_UNAVAILABLE` instead of growing memory.
   */
  readonly maxPendingPublishes?: number;
  /** Where dropped messages and failed handlers are logged (default: silent). */
  readonly logger?: Logger | null;
  /**
   * Keep envelopes published while the broker is away in the journal and send them, in order,
   * when it is back (outbox.ts). Without it, such a publish waits in the client (MQTT, bounded by
   * `maxPendingPublishes`) or fails with `ROOST_ERR_TRANSPORT_UNAVAILABLE` (NATS).
   */
  readonly outbox?: TransportOutboxOptions;
}

/** See the module comment. */
export abstract class TransportBase {
  abstract readonly kind: string;
  protected stateValue: TransportState = 'connecting';
  protected closing: Promise<void> | null = null;
  protected readonly maxBytes: number;
  private readonly maxPending: number;
  private pendingPublishes = 0;
  protected readonly logger: Logger | null;
  private readonly listeners = new Set<(event: TransportStateEvent) => void>();
  /** Handlers in progress (see {@link handle}), and what `settle()` waits on until they are none. */
  private running = 0;
  private idleWaiters: (() => void)[] = [];
  /** Ends one handler in progress (bound once: `handle` passes it to `then` without a closure). */
  private readonly handled = (): void => {
    if (--this.running === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const wake of waiters) wake();
    }
  };
  private counts = { published: 0, received: 0, dropped: 0 };
  private readonly outbox: Outbox | null;
  /** Fired when the connection goes: publishes awaiting the broker and the outbox's drain stop waiting. */
  private readonly away = new Interrupts();

  /**
   * @param known the subclass's own option keys: any other key (a typo, an option of another
   * transport) is `ROOST_ERR_INVALID_OPTION` instead of being ignored.
   */
  constructor(options: TransportBaseOptions = {}, known: readonly string[] = []) {
    const o = checkObject('options', options, [...BASE_OPTION_KEYS, ...known]);
    this.maxBytes = optInt('', o, 'maxEnvelopeBytes', 1, 64 * 1024 * 1024, DEFAULT_MAX_ENVELOPE_BYTES);
    this.maxPending = optInt('', o, 'maxPendingPublishes', 1, Number.MAX_SAFE_INTEGER, 10_000);
    this.logger = options.logger ?? null;
    this.outbox =
      options.outbox === undefined
        ? null
        : new Outbox(
            () => this.kind, // a field of the subclass, not set yet here

            options.outbox,
            (topic, envelope) => this.sendCounted(topic, encodeEnvelope(envelope, { maxBytes: this.maxBytes }), envelope),
            () => this.stateValue === 'connected' && this.closing === null,
            this.away,
            this.logger,
          );
  }

  /** Sends an envelope, encoded as `bytes`, to a checked topic; resolves once the broker has it. */
  protected abstract send(topic: string, bytes: Buffer, envelope: Envelope): Promise<void>;

  /** Throws the transport's coded error when it cannot publish at all (closed; never connected). */
  protected abstract ensureOpen(): void;

  /**
   * Publishes an envelope: sent now, or, with an outbox, kept when the broker is away or kept
   * envelopes still wait (see outbox.ts). Resolves once the broker (or the journal) has it.
   */
  async publish(topic: string, envelope: Envelope): Promise<void> {
    topicSegments(topic, false);
    this.ensureOpen();
    const bytes = encodeEnvelope(envelope, { maxBytes: this.maxBytes }); // too big: refused now, never kept
    const outbox = this.outbox;
    if (outbox === null) return this.sendCounted(topic, bytes, envelope);
    if (!outbox.isReady) await outbox.ready(); // once: no await per publish after it
    if (outbox.mustKeep()) return outbox.keep(topic, envelope);
    try {
      // The connection may go while the broker's acknowledgement is awaited: the client then
      // holds the message until it is back (and sends it then). Its publisher need not wait for
      // that: the envelope is kept too, and the receiver's dedup drops the second copy.
      const sent = this.sendCounted(topic, bytes, envelope);
      if ((await this.away.race(sent)) === INTERRUPTED) {
        sent.catch(() => {});
        await outbox.keep(topic, envelope);
      }
    } catch (error) {
      // Refused for good: the caller is told. Anything else (the broker away, too many
      // publishes waiting, a connection that dropped under it): kept.
      if (isRefused(error) || this.closing !== null) throw error;
      await outbox.keep(topic, envelope);
    }
  }

  private async sendCounted(topic: string, bytes: Buffer, envelope: Envelope): Promise<void> {
    await this.bounded(() => this.send(topic, bytes, envelope));
    this.counts.published++;
  }

  /** Publishes waiting to learn whether the connection goes (for tests: none stay after they end). */
  protected get awayWaiters(): number {
    return this.away.size;
  }

  /** Stops the outbox (what it keeps stays in the journal); for `close()`. */
  protected async stopOutbox(): Promise<void> {
    await this.outbox?.stop();
  }

  get state(): TransportState {
    return this.stateValue;
  }

  onState(listener: (event: TransportStateEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  stats(): TransportStats {
    return {
      ...this.counts,
      kept: this.outbox?.keptCount ?? 0,
      outbox: this.outbox?.waiting ?? 0,
      outboxFailed: this.outbox?.failedCount ?? 0,
    };
  }

  /** Moves to `state` and tells the listeners (once per change). */
  protected setState(state: TransportState, error: unknown = null): void {
    if (this.stateValue === state || this.stateValue === 'closed') return;
    this.stateValue = state;
    const e = error === null ? null : ensureError(error);
    const event: TransportStateEvent = {
      type: 'transport_state',
      transport: this.kind,
      state,
      ts: Date.now(),
      error: e === null ? null : { code: isRoostError(e) ? e.code : ((e as NodeJS.ErrnoException).code ?? 'ERROR'), message: e.message },
    };
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (thrown) {
        this.logger?.error({ err: thrown }, 'transport state listener threw');
      }
    }
    if (state === 'connected') this.outbox?.wake();
    else this.away.fire();
  }

  /** Runs a publish that waits for the broker, within the bound on publishes waiting. */
  protected async bounded(publish: () => Promise<unknown>): Promise<void> {
    this.reservePublish();
    try {
      await publish();
    } finally {
      this.releasePublish();
    }
  }

  /**
   * Counts one more publish waiting for the broker, or refuses it past `maxPendingPublishes`
   * (for a publish made with a callback; {@link releasePublish} when it is done).
   */
  protected reservePublish(): void {
    if (this.pendingPublishes >= this.maxPending) {
      throw new RoostError('ROOST_ERR_TRANSPORT_UNAVAILABLE', `${this.kind}: ${this.pendingPublishes} publishes are waiting for the broker already (maxPendingPublishes)`, {
        details: { transport: this.kind, pending: this.pendingPublishes, max: this.maxPending, state: this.stateValue },
      });
    }
    this.pendingPublishes++;
  }

  protected releasePublish(): void {
    this.pendingPublishes--;
  }

  /** Encodes an envelope sent at once (a request, a reply), and counts it. */
  protected encode(envelope: Envelope): Buffer {
    const bytes = encodeEnvelope(envelope, { maxBytes: this.maxBytes });
    this.counts.published++;
    return bytes;
  }

  /** The envelope in `bytes`, or null when they are not one (counted and logged). */
  protected decode(bytes: Uint8Array | string, topic: string): Envelope | null {
    try {
      const envelope = decodeEnvelope(bytes, { maxBytes: this.maxBytes });
      this.counts.received++;
      return envelope;
    } catch (error) {
      this.counts.dropped++;
      const e = ensureError(error);
      this.logger?.warn({ transport: this.kind, topic, code: isRoostError(e) ? e.code : 'ERROR', bytes: bytes.length }, `dropped a message that is not an envelope: ${e.message}`);
      return null;
    }
  }

  /**
   * Runs `handler` on a received envelope, tracked so that `close()` waits for it; the promise
   * resolves when it is done and never rejects (a failure is logged). It runs on every message,
   * so it makes no async closure and no promise for a handler that returns none: a count of the
   * handlers still running is all `settle()` needs.
   */
  protected handle(handler: EnvelopeHandler, envelope: Envelope, delivery: Delivery): Promise<void> {
    let result: void | Promise<void>;
    try {
      result = handler(envelope, delivery);
    } catch (error) {
      this.handlerFailed(error, envelope, delivery);
      return Promise.resolve();
    }
    if (result === undefined || result === null || typeof (result as Partial<PromiseLike<void>>).then !== 'function') return Promise.resolve();
    this.running++;
    return Promise.resolve(result).then(this.handled, (error: unknown) => {
      this.handlerFailed(error, envelope, delivery);
      this.handled();
    });
  }

  private handlerFailed(error: unknown, envelope: Envelope, delivery: Delivery): void {
    this.logger?.error({ err: error, transport: this.kind, topic: delivery.topic, envelopeId: envelope.id }, 'a transport handler failed');
  }

  /** Waits for the handlers in progress (and for those they start meanwhile). */
  protected async settle(): Promise<void> {
    while (this.running > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Marks the transport closed (after its own shutdown). */
  protected closed(): void {
    this.setState('closed');
  }
}
