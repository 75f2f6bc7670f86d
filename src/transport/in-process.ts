/**
 * The in-process transport: the contract within one process, through a broker object (one per
 * process by default; tests make their own). Envelopes are still encoded and decoded, so the
 * size cap and the validation hold as on a wire, and delivery is asynchronous, as on a wire.
 * Presence records live in the broker object, each kept for its `ttlMs` (no will: nothing in
 * one process can vanish without closing).
 */
import type { Envelope } from '../envelope/envelope.js';
import { TransportBase, type TransportBaseOptions } from './base.js';
import {
  checkGroup,
  checkNamespace,
  checkRespondOptions,
  noResponders,
  requestTimeout,
  requestTimeoutMs,
  topicMatches,
  topicSegments,
  transportClosed,
  type EnvelopeHandler,
  type RequestOptions,
  type RespondOptions,
  type Responder,
  type SubscribeOptions,
  type Subscription,
  type PresenceChannel,
  type PresenceListener,
  type PresenceWatch,
  type Transport,
} from './transport.js';

/** The presence records of one namespace in a broker object. */
interface PresenceSpace {
  readonly records: Map<string, { readonly bytes: Uint8Array; readonly expiresAt: number }>;
  readonly listeners: Set<PresenceListener>;
}

interface Entry {
  readonly pattern: readonly string[];
  readonly group: string | null;
  /** Receives the encoded envelope; resolves once handled. */
  readonly deliver: (bytes: Buffer, topic: string) => Promise<void>;
  /** For responders: answers with the encoded reply. */
  readonly answer?: (bytes: Buffer, topic: string) => Promise<Buffer | null>;
}

/** Routes between the in-process transports connected to it. */
export class InProcessBroker {
  private readonly entries = new Set<Entry>();
  private readonly turns = new Map<string, number>();
  private readonly spaces = new Map<string, PresenceSpace>();

  /** @internal the presence records of `namespace` (expired ones removed). */
  presenceSpace(namespace: string): PresenceSpace {
    let space = this.spaces.get(namespace);
    if (space === undefined) {
      space = { records: new Map(), listeners: new Set() };
      this.spaces.set(namespace, space);
    }
    const now = Date.now();
    for (const [id, r] of space.records) if (r.expiresAt <= now) space.records.delete(id);
    return space;
  }

  /** @internal */
  add(entry: Entry): () => void {
    this.entries.add(entry);
    return () => this.entries.delete(entry);
  }

  /** @internal the entries a message to `topic` goes to: every plain one, one per group. */
  route(topic: readonly string[], responders: boolean): Entry[] {
    const out: Entry[] = [];
    const groups = new Map<string, Entry[]>();
    for (const e of this.entries) {
      if ((e.answer !== undefined) !== responders || !topicMatches(e.pattern, topic)) continue;
      if (e.group === null) out.push(e);
      else {
        const key = `${e.pattern.join('/')}\u0000${e.group}`;
        const members = groups.get(key);
        if (members === undefined) groups.set(key, [e]);
        else members.push(e);
      }
    }
    for (const [key, members] of groups) {
      const turn = this.turns.get(key) ?? 0;
      this.turns.set(key, turn + 1);
      out.push(members[turn % members.length]!);
    }
    return out;
  }
}

const processBroker = new InProcessBroker();

/** Options of an {@link InProcessTransport}. */
export interface InProcessTransportOptions extends TransportBaseOptions {
  /** The broker to connect to (default: the process's). */
  readonly broker?: InProcessBroker;
}

/** See the module comment. */
export class InProcessTransport extends TransportBase implements Transport {
  readonly kind = 'inprocess';
  private readonly broker: InProcessBroker;
  private readonly removers = new Set<() => void>();

  constructor(options: InProcessTransportOptions = {}) {
    super(options, ['broker']);
    this.broker = options.broker ?? processBroker;
  }

  connect(): Promise<void> {
    if (this.stateValue === 'closed') return Promise.reject(transportClosed(this.kind));
    this.setState('connected');
    return Promise.resolve();
  }

  protected async send(topic: string, bytes: Buffer): Promise<void> {
    this.ready();
    await Promise.resolve(); // asynchronous, as on a wire
    for (const entry of this.broker.route(topic.split('/'), false)) void entry.deliver(bytes, topic);
  }

  protected ensureOpen(): void {
    this.ready();
  }

  async subscribe(pattern: string, handler: EnvelopeHandler, options: SubscribeOptions = {}): Promise<Subscription> {
    await Promise.resolve();
    const h = options.dedup?.wrap(handler) ?? handler;
    return this.add(pattern, options, { deliver: (bytes, topic) => this.receive(bytes, topic, h) });
  }

  async respond(topic: string, responder: Responder, raw?: RespondOptions): Promise<Subscription> {
    const options = checkRespondOptions(raw);
    await Promise.resolve();
    return this.add(topic, options, {
        deliver: () => Promise.resolve(),
        answer: async (bytes, t) => {
          const envelope = this.decode(bytes, t);
          if (envelope === null) return null;
          let reply: Envelope | undefined;
          await this.handle(async (env, delivery) => {
            reply = await responder(env, delivery);
          }, envelope, { topic: t });
          return reply === undefined ? null : this.encode(reply);
        },
      });
  }

  async request(topic: string, envelope: Envelope, options?: RequestOptions): Promise<Envelope> {
    const segments = topicSegments(topic, false);
    const timeoutMs = requestTimeoutMs(options);
    this.ready();
    const bytes = this.encode(envelope);
    await Promise.resolve();
    const [responder] = this.broker.route(segments, true);
    if (responder === undefined) throw noResponders(topic);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(requestTimeout(topic, timeoutMs)), timeoutMs);
    });
    try {
      const reply = await Promise.race([responder.answer!(bytes, topic), timeout]);
      if (reply === null) throw requestTimeout(topic, timeoutMs); // the responder failed: no answer, as on a wire
      const answer = this.decode(reply, topic);
      if (answer === null) throw requestTimeout(topic, timeoutMs);
      return answer;
    } finally {
      clearTimeout(timer);
    }
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.stopOutbox();
      for (const remove of this.removers) remove();
      this.removers.clear();
      await this.settle();
      this.closed();
    })();
    return this.closing;
  }

  private ready(): void {
    if (this.stateValue === 'closed' || this.closing !== null) throw transportClosed(this.kind);
  }

  presence(namespace: string): PresenceChannel {
    const ns = checkNamespace(namespace);
    const broker = this.broker;
    const tell = (space: PresenceSpace, id: string, record: Uint8Array | null, remainingMs: number | null): void => {
      for (const listener of [...space.listeners]) listener(id, record, { remainingMs });
    };
    return {
      lastWill: false,
      setWill: () => {},
      put: async (id, record, ttlMs) => {
        this.ready();
        await Promise.resolve(); // asynchronous, as on a wire
        const space = broker.presenceSpace(ns);
        const bytes = Uint8Array.from(record);
        space.records.set(id, { bytes, expiresAt: Date.now() + ttlMs });
        tell(space, id, bytes, ttlMs);
      },
      remove: async (id) => {
        this.ready();
        await Promise.resolve();
        const space = broker.presenceSpace(ns);
        if (space.records.delete(id)) tell(space, id, null, null);
      },
      watch: async (listener): Promise<PresenceWatch> => {
        this.ready();
        await Promise.resolve();
        const space = broker.presenceSpace(ns);
        const now = Date.now();
        for (const [id, r] of space.records) listener(id, r.bytes, { remainingMs: r.expiresAt - now });
        space.listeners.add(listener);
        const stop = (): void => void space.listeners.delete(listener);
        this.removers.add(stop);
        return {
          stop: () => {
            stop();
            this.removers.delete(stop);
            return Promise.resolve();
          },
        };
      },
    };
  }

  private add(pattern: string, options: SubscribeOptions, entry: Omit<Entry, 'pattern' | 'group'>): Subscription {
    const segments = topicSegments(pattern, true, 'pattern');
    const group = options.group === undefined ? null : checkGroup(options.group);
    this.ready();
    const remove = this.broker.add({ ...entry, pattern: segments, group });
    this.removers.add(remove);
    return {
      unsubscribe: () => {
        remove();
        this.removers.delete(remove);
        return Promise.resolve();
      },
    };
  }

  private receive(bytes: Buffer, topic: string, handler: EnvelopeHandler): Promise<void> {
    const envelope = this.decode(bytes, topic);
    return envelope === null ? Promise.resolve() : this.handle(handler, envelope, { topic });
  }
}
