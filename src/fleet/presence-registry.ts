/**
 * The fleet as one process sees it: the presence records it heard (presence.ts feeds them in),
 * each until its `expiresAt`, and the choice of a process for a capability.
 *
 * - When a record counts: from its `ts` to its `expiresAt` (the sender's clock), but never longer
 *   than its expiry after it was heard, nor longer than the broker says it keeps it (MQTT 5's
 *   message expiry left), so a sender whose clock runs ahead cannot outlive its heartbeats. A
 *   last will (null times) counts from when it was heard. Clocks of the fleet must agree to well
 *   within the expiry less the heartbeat (NTP does).
 * - Expired entries are never listed (each call checks the time) and are dropped by a timer set
 *   to the next expiry, which tells the listeners (`down`).
 * - An `unavailable` entry stays listed until it expires (so who went away shows); `pick` skips
 *   it, and `draining` ones too.
 * - A malformed record (not JSON, a wrong type, an id that is not its key's) is counted in
 *   `stats().malformed`, logged at `warn` and ignored; the entry of that id, if any, stays as it
 *   was until it expires.
 */
import { invalidOption } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';
import type { PresenceRecordMeta, PresenceWatch } from '../transport/transport.js';
import type { MalformedPresence, PresenceInfo, PresenceRecord } from './presence-record.js';

/** How an entry changed: `up` it appeared, `update` a new record for it, `down` it left the list (expired or removed). */
export type PresenceChange = 'up' | 'update' | 'down';

/** What a registry counted. */
export interface PresenceRegistryStats {
  /** Records heard (valid ones). */
  readonly heard: number;
  /** Records that were not valid presence records (ignored). */
  readonly malformed: number;
  /** Entries dropped because their record expired. */
  readonly expired: number;
}

/** What the HTTP service and the metrics read of a registry (a {@link PresenceRegistry} is one). */
export interface FleetView {
  list(): PresenceInfo[];
}

/** The fleet of one namespace (see the module comment). */
export interface PresenceRegistry {
  /** The processes whose record has not expired, by id; `unavailable` ones included until they expire. */
  list(): PresenceInfo[];
  get(id: string): PresenceInfo | undefined;
  /**
   * A healthy process (`available`, not expired) with `capability`, the least loaded: by
   * (load + `extraLoad(id)`) / capacity (capacity 0, unknown, counts as 1), those with room before
   * those at capacity; ties in turn (round-robin per capability). `capability` is an agent
   * capability, `agent:<name>` for an agent by name, or `node:<flow>/<node>` for a node the
   * process works on. Null when no healthy process has it.
   */
  pick(capability: string, extraLoad?: (id: string) => number): PresenceInfo | null;
  /** Calls `listener` on each change (see {@link PresenceChange}); returns the function that stops it. */
  onChange(listener: (info: PresenceInfo, change: PresenceChange) => void): () => void;
  stats(): PresenceRegistryStats;
  /** Stops watching; the list empties. The same promise on repeat. */
  close(): Promise<void>;
}

/** @internal made by watchPresence. */
export class PresenceRegistryImpl implements PresenceRegistry {
  private readonly entries = new Map<string, PresenceInfo>();
  private readonly listeners = new Set<(info: PresenceInfo, change: PresenceChange) => void>();
  private readonly turns = new Map<string, number>();
  private counts = { heard: 0, malformed: 0, expired: 0 };
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private watch: PresenceWatch | null = null;
  private closing: Promise<void> | null = null;

  constructor(
    private readonly logger: Logger | null,
    private readonly namespace: string,
  ) {}

  /** @internal */
  watching(watch: PresenceWatch): void {
    this.watch = watch;
  }

  /** @internal a valid record from the channel. */
  heard(record: PresenceRecord, meta: PresenceRecordMeta): void {
    if (this.closing !== null) return;
    this.counts.heard++;
    const now = Date.now();
    const previous = this.entries.get(record.id);
    let ts = record.ts ?? now;
    let expiresAt = Math.min(record.expiresAt ?? now + record.expiryMs, now + record.expiryMs);
    if (meta.remainingMs !== null) expiresAt = Math.min(expiresAt, now + meta.remainingMs);
    if (ts > now) ts = now; // a clock ahead: never "seen in the future"
    // A last will is written when the connection is made: what the process hosted is its last record's.
    const will = record.ts === null && previous !== undefined;
    const info: PresenceInfo = Object.freeze({
      id: record.id,
      status: record.status,
      version: will ? previous.version : record.version,
      load: record.load,
      capacity: will ? previous.capacity : record.capacity,
      agents: Object.freeze(will ? previous.agents : record.agents.map((a) => Object.freeze({ ...a, capabilities: Object.freeze([...a.capabilities]) }))),
      nodes: Object.freeze(will ? previous.nodes : [...record.nodes]),
      ts,
      expiresAt,
    });
    if (expiresAt <= now) {
      // Already over (a retained record past its time on a broker without expiry): as if removed.
      if (previous !== undefined) this.drop(previous, false);
      return;
    }
    this.entries.set(info.id, info);
    this.arm(expiresAt);
    this.emit(info, previous === undefined || previous.expiresAt <= now ? 'up' : 'update');
  }

  /** @internal a record removed from the broker (an empty retained message, a KV delete). */
  removed(id: string): void {
    const previous = this.entries.get(id);
    if (previous !== undefined) this.drop(previous, false);
  }

  /** @internal a record that did not decode. */
  malformed(key: string, error: MalformedPresence, bytes: number): void {
    this.counts.malformed++;
    this.logger?.warn({ namespace: this.namespace, key, field: error.field, bytes }, `presence: ignored a malformed record: ${error.message}`);
  }

  list(): PresenceInfo[] {
    const now = Date.now();
    return [...this.entries.values()].filter((e) => e.expiresAt > now).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  get(id: string): PresenceInfo | undefined {
    const e = this.entries.get(id);
    return e !== undefined && e.expiresAt > Date.now() ? e : undefined;
  }

  pick(capability: string, extraLoad?: (id: string) => number): PresenceInfo | null {
    if (typeof capability !== 'string' || capability.length === 0) throw invalidOption('capability', 'a capability, agent:<name> or node:<flow>/<node>', capability);
    if (extraLoad !== undefined && typeof extraLoad !== 'function') throw invalidOption('extraLoad', 'a function of a process id', extraLoad);
    const has = capability.startsWith('node:')
      ? (e: PresenceInfo) => e.nodes.includes(capability.slice(5))
      : capability.startsWith('agent:')
        ? (e: PresenceInfo) => e.agents.some((a) => a.name === capability.slice(6))
        : (e: PresenceInfo) => e.agents.some((a) => a.capabilities.includes(capability));
    let best: { info: PresenceInfo; full: boolean; ratio: number }[] = [];
    const now = Date.now();
    for (const e of this.entries.values()) {
      if (e.status !== 'available' || e.expiresAt <= now || !has(e)) continue;
      const extra = extraLoad?.(e.id) ?? 0;
      const load = e.load + (Number.isFinite(extra) && extra > 0 ? extra : 0);
      const full = e.capacity > 0 && load >= e.capacity;
      const ratio = load / Math.max(1, e.capacity);
      const top = best[0];
      if (top === undefined || (top.full && !full) || (top.full === full && ratio < top.ratio)) best = [{ info: e, full, ratio }];
      else if (top.full === full && ratio === top.ratio) best.push({ info: e, full, ratio });
    }
    if (best.length === 0) return null;
    const turn = this.turns.get(capability) ?? 0;
    this.turns.set(capability, turn + 1);
    if (this.turns.size > 10_000) this.turns.clear(); // bounded: capabilities asked for are few, but callers decide
    return best[turn % best.length]!.info;
  }

  onChange(listener: (info: PresenceInfo, change: PresenceChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  stats(): PresenceRegistryStats {
    return { ...this.counts };
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopTimer();
      try {
        await this.watch?.stop();
      } catch (error) {
        this.logger?.warn({ err: error, namespace: this.namespace }, 'presence: stopping the watch failed');
      }
      this.entries.clear();
      this.listeners.clear();
    })();
    return this.closing;
  }

  /** @internal */
  stopTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
  }

  private drop(info: PresenceInfo, expired: boolean): void {
    this.entries.delete(info.id);
    if (expired) this.counts.expired++;
    this.emit(info, 'down');
  }

  /** Makes sure the timer fires by `at` (one timer, at the earliest expiry). */
  private arm(at: number): void {
    if (this.closing !== null || at >= this.timerAt) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.sweep(), Math.max(0, at - Date.now()));
    this.timer.unref(); // a registry never keeps a process up by itself
  }

  private sweep(): void {
    this.timer = null;
    this.timerAt = Infinity;
    const now = Date.now();
    let next = Infinity;
    for (const e of [...this.entries.values()]) {
      if (e.expiresAt <= now) this.drop(e, true);
      else next = Math.min(next, e.expiresAt);
    }
    if (next !== Infinity) this.arm(next);
  }

  private emit(info: PresenceInfo, change: PresenceChange): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(info, change);
      } catch (error) {
        this.logger?.error({ err: error, namespace: this.namespace, presence: info.id }, 'presence: a change listener threw');
      }
    }
  }
}
