/**
 * A runtime's part in a fleet: the transport it shares with the other processes, the dispatcher
 * that sends the envelopes of its remote nodes to workers (dispatcher.ts), and the worker that
 * runs the nodes it hosts for the others (worker.ts).
 *
 * A node is remote in the processes that list it in `remote` (`flow/node`): its runs go to the
 * node's worker group. The processes that list it in `host` run it for the fleet. Every process
 * loads the same application (the same flows), so a worker finds the node's handler, policy and
 * middlewares by name. The trace stays with the process that accepted it (its owner): fetch,
 * cancel, joins, retries, dead letters and the journal are the owner's, as in one process.
 */
import { ensureError, invalidOption } from '../errors.js';
import { isName } from '../envelope/names.js';
import type { RemoteNode } from '../flow/host.js';
import type { Journal } from '../store/journal.js';
import type { Agent } from '../runtime/agent.js';
import type { DispatchLease } from '../store/store.js';
import type { Logger } from '../telemetry/logger.js';
import { openTransport } from '../transport/open.js';
import type { Transport } from '../transport/transport.js';
import { checkObject, optEnum, optInt } from '../validate-options.js';
import type { DispatchEvent } from '../flow/events.js';
import { Dispatcher, type DispatcherStats } from './dispatcher.js';
import { DEFAULT_EXPIRY_HEARTBEATS, DEFAULT_HEARTBEAT_MS, preparePresence, startPresence, watchPresence, type PresenceHandle, type PresenceSnapshot } from './presence.js';
import type { PresenceAgent, PresenceInfo } from './presence-record.js';
import type { FleetView, PresenceRegistry } from './presence-registry.js';
import { Worker, type WorkerNode, type WorkerStats } from './worker.js';

const MAX_MS = 2_147_483_647;

/** The runtime's `fleet` option. */
export interface FleetOptions {
  /** The transport the fleet shares: a connected or unconnected one, or a URL (`mqtt://…`, `nats://…`, `jetstream://…`). */
  readonly transport: Transport | string;
  /** The first segment of every fleet topic: fleets with different namespaces never meet (default `roost`). */
  readonly namespace?: string;
  /** This process in the fleet (default: the runtime's owner name, as a name). */
  readonly id?: string;
  /**
   * `owner` (default): takes tasks and owns their traces. `worker`: only runs nodes for the
   * others; it does not resume or take over traces from the journal.
   */
  readonly role?: 'owner' | 'worker';
  /** Nodes whose runs go to the fleet's workers: `flow/node`. */
  readonly remote?: readonly string[];
  /** Nodes this process runs for the fleet: `flow/node`. */
  readonly host?: readonly string[];
  /** How long a worker holds an envelope without a heartbeat before it is sent again (default 10,000 ms). */
  readonly leaseMs?: number;
  /** Envelopes of one remote node out with workers at once, from this process (default 256). */
  readonly maxInFlight?: number;
  /** Tasks a worker holds per node beyond those running before it answers `busy` (default 1,024). */
  readonly maxQueued?: number;
  /** How often this process's presence record is written (default 5,000 ms). */
  readonly heartbeatMs?: number;
  /** How long a presence record counts without a heartbeat (default 3 × `heartbeatMs`). */
  readonly presenceExpiryMs?: number;
  /**
   * Send a remote node's first delivery to the least-loaded healthy worker the registry knows
   * for it (`registry`, the default), or always to the node's worker group and let the broker
   * pick (`group`). Redeliveries always go to the group.
   */
  readonly routing?: 'registry' | 'group';
}

export interface ResolvedFleetOptions {
  readonly transport: Transport | string;
  readonly namespace: string;
  readonly id: string;
  readonly role: 'owner' | 'worker';
  readonly remote: readonly string[];
  readonly host: readonly string[];
  readonly leaseMs: number;
  readonly maxInFlight: number;
  readonly maxQueued: number;
  readonly heartbeatMs: number;
  readonly presenceExpiryMs: number;
  readonly routing: 'registry' | 'group';
}

const KEYS = ['transport', 'namespace', 'id', 'role', 'remote', 'host', 'leaseMs', 'maxInFlight', 'maxQueued', 'heartbeatMs', 'presenceExpiryMs', 'routing'];
const NODE_REF = /^[A-Za-z0-9._-]{1,64}\/[A-Za-z0-9._-]{1,64}$/;
const NAMESPACE = /^[A-Za-z0-9_-]{1,64}$/;

function nodeList(field: string, value: unknown): readonly string[] {
  if (value === undefined) return Object.freeze([]);
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string' || !NODE_REF.test(v))) {
    throw invalidOption(field, 'an array of `flow/node` names', value);
  }
  return Object.freeze([...new Set(value as string[])]);
}

/** A name for this process made from its owner name (which may hold any character). */
export function fleetId(owner: string): string {
  const id = owner.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64);
  return id.length > 0 ? id : 'roost';
}

/** Validates the `fleet` option (never mutating it). */
export function resolveFleetOptions(value: unknown, owner: string): ResolvedFleetOptions {
  const o = checkObject('fleet', value, KEYS);
  const transport = o['transport'];
  if (typeof transport !== 'string' && (typeof transport !== 'object' || transport === null || typeof (transport as Transport).publish !== 'function')) {
    throw invalidOption('fleet.transport', 'a Transport or a transport URL (mqtt://, nats://, jetstream://)', transport);
  }
  const namespace = o['namespace'] ?? 'roost';
  if (typeof namespace !== 'string' || !NAMESPACE.test(namespace)) throw invalidOption('fleet.namespace', '1 to 64 letters, digits, _ and -', namespace);
  const id = o['id'] ?? fleetId(owner);
  if (!isName(id)) throw invalidOption('fleet.id', 'a name of 1 to 64 letters, digits, . _ and -', id);
  const heartbeatMs = optInt('fleet', o, 'heartbeatMs', 10, 86_400_000 - 1, DEFAULT_HEARTBEAT_MS);
  return Object.freeze({
    transport: transport as Transport | string,
    namespace,
    id,
    role: optEnum('fleet', o, 'role', ['owner', 'worker'], 'owner'),
    remote: nodeList('fleet.remote', o['remote']),
    host: nodeList('fleet.host', o['host']),
    leaseMs: optInt('fleet', o, 'leaseMs', 50, MAX_MS, 10_000),
    maxInFlight: optInt('fleet', o, 'maxInFlight', 1, 1_000_000, 256),
    maxQueued: optInt('fleet', o, 'maxQueued', 0, 1_000_000, 1_024),
    heartbeatMs,
    presenceExpiryMs: optInt('fleet', o, 'presenceExpiryMs', heartbeatMs + 1, 86_400_000, Math.min(86_400_000, DEFAULT_EXPIRY_HEARTBEATS * heartbeatMs)),
    routing: optEnum('fleet', o, 'routing', ['registry', 'group'], 'registry'),
  });
}

/** What the fleet needs of the runtime (an interface: `runtime/` imports `fleet/`, never back). */
export interface FleetHost {
  readonly logger: Logger;
  readonly journal: Journal | null;
  readonly maxPayloadBytes: number;
  publish(event: FleetEvent): void;
  /** The handler node `node` of the flow `flow` as a worker runs it, or undefined. */
  workerNode(flow: string, node: string): WorkerNode | undefined;
  /** Whether the journal is a store the fleet shares (PostgreSQL): workers' steps are then the fleet's. */
  readonly sharedStore: boolean;
  /** The agents of the nodes that run in this process (not remote ones), and their runs now and at most: for presence. */
  localRuns(): { readonly agents: readonly Agent[]; readonly running: number; readonly capacity: number };
}

/** Events the fleet publishes on the runtime's event stream. */
export type FleetEvent = DispatchEvent;

/** What the fleet counted. */
export interface FleetStats {
  readonly id: string;
  readonly transport: string;
  readonly dispatcher: DispatcherStats | null;
  readonly worker: WorkerStats | null;
}

/** See the module comment. */
export class Fleet implements FleetView {
  readonly transport: Transport;
  private readonly ownsTransport: boolean;
  private readonly dispatcher: Dispatcher | null;
  private readonly worker: Worker | null;
  private readonly remoteUsed = new Set<string>();
  private started = false;
  private closing: Promise<void> | null = null;
  private presence: PresenceHandle | null = null;
  /** Leaving the fleet: presence says `draining`. */
  private leaving = false;
  /** The fleet's processes by their presence records (null before start). */
  registry: PresenceRegistry | null = null;

  constructor(
    readonly options: ResolvedFleetOptions,
    private readonly host: FleetHost,
  ) {
    const t = options.transport;
    this.ownsTransport = typeof t === 'string';
    this.transport = typeof t === 'string' ? openTransport(t, { clientId: `roost-${options.id}`, logger: host.logger }, 'fleet.transport') : t;
    const ns = options.namespace;
    this.dispatcher =
      options.remote.length === 0
        ? null
        : new Dispatcher({
            namespace: ns,
            id: options.id,
            transport: this.transport,
            leaseMs: options.leaseMs,
            logger: host.logger,
            publish: (e) => host.publish(e),
            journal: host.journal,
            pick: options.routing === 'group' ? null : (flow, node, extraLoad) => this.registry?.pick(`node:${flow}/${node}`, extraLoad)?.id ?? null,
          });
    this.worker =
      options.host.length === 0
        ? null
        : new Worker({
            namespace: ns,
            id: options.id,
            transport: this.transport,
            leaseMs: options.leaseMs,
            logger: host.logger,
            journal: host.journal,
            maxPayloadBytes: host.maxPayloadBytes,
            maxQueued: options.maxQueued,
          });
  }

  get id(): string {
    return this.options.id;
  }

  /** How the node `node` of `flow` runs on the fleet's workers, or null when it runs here. */
  remoteNode(flow: string, node: string, timeoutMs: number | null): RemoteNode | null {
    const ref = `${flow}/${node}`;
    if (this.dispatcher === null || !this.options.remote.includes(ref)) return null;
    this.remoteUsed.add(ref);
    return { handler: this.dispatcher.handler(flow, node, timeoutMs), concurrency: this.options.maxInFlight };
  }

  /** The runtime began to drain: presence says `draining` at once, so routers stop picking this process. */
  draining(): void {
    if (this.leaving) return;
    this.leaving = true;
    this.presence?.refresh().catch(() => {});
  }

  /** The runtime is closing and leaves its unfinished traces in the journal: workers are not told to abort them. */
  suspend(): void {
    this.dispatcher?.suspend();
  }

  /** A pending envelope of a remote node resumed from the journal had this lease. */
  resumedLease(envelopeId: string, lease: DispatchLease): void {
    this.dispatcher?.resumed(envelopeId, lease);
  }

  /**
   * Connects and subscribes: the owner topic (so answers for resumed traces arrive), then the
   * worker's topics. Every `remote` and `host` entry must name a handler node of a flow.
   */
  async start(): Promise<void> {
    if (this.started) return;
    const missing = this.options.remote.filter((r) => !this.remoteUsed.has(r));
    if (missing.length > 0) throw invalidOption('fleet.remote', 'handler nodes of flows registered before start (`flow/node`)', missing);
    if (this.worker !== null) {
      for (const ref of this.options.host) {
        const [flow, node] = ref.split('/') as [string, string];
        const found = this.host.workerNode(flow, node);
        if (found === undefined) throw invalidOption('fleet.host', 'handler nodes of flows registered before start (`flow/node`), run here (not remote)', ref);
        this.worker.host(flow, found);
      }
    }
    const presence = { namespace: this.options.namespace, id: this.options.id, heartbeatMs: this.options.heartbeatMs, expiryMs: this.options.presenceExpiryMs, logger: this.host.logger };
    // MQTT takes the last will ("unavailable") with the connection: set it before connecting.
    if (this.transport.state === 'connecting') preparePresence(this.transport, presence);
    if (this.transport.state !== 'connected') await this.transport.connect();
    // Presence is not the data path: a broker that cannot carry it (NATS without JetStream, for
    // its KV bucket) leaves the fleet working, routed by the broker's groups, and says so.
    this.registry = await watchPresence(this.transport, { namespace: this.options.namespace, logger: this.host.logger }).catch((error: unknown) => {
      this.host.logger.warn({ err: ensureError(error) }, 'fleet presence is off: the registry cannot watch this broker; tasks go to the worker groups');
      return null;
    });
    await this.dispatcher?.start();
    await this.worker?.start();
    if (this.worker !== null && !this.host.sharedStore) {
      this.host.logger.warn(
        { fleet: this.options.id },
        'this worker\'s store is not shared (PostgreSQL): its ctx.step results are its own, so a step it ran is run again by the worker that gets the task after it',
      );
    }
    // Available only once the worker's subscriptions are confirmed: a router may send to it now.
    if (this.registry !== null) {
      this.presence = await startPresence(this.transport, presence, () => this.snapshot()).catch((error: unknown) => {
        this.host.logger.warn({ err: ensureError(error) }, 'fleet presence is off: this process cannot publish its presence on this broker');
        return null;
      });
    }
    this.started = true;
  }

  /** This process as its presence record tells it. */
  private snapshot(): PresenceSnapshot {
    const worker = this.worker?.load();
    // A worker runs only its hosted nodes: the rest of its flows never run there.
    const here = this.options.role === 'worker' ? { agents: [], running: 0, capacity: 0 } : this.host.localRuns();
    // The agents this process runs: an owner's local nodes', and the nodes it hosts for the fleet.
    const agents = new Map<string, PresenceAgent>();
    for (const a of [...here.agents, ...(this.worker?.agents() ?? [])]) {
      agents.set(a.name, a.description === '' ? { name: a.name, capabilities: a.capabilities } : { name: a.name, capabilities: a.capabilities, description: a.description });
    }
    return {
      status: this.leaving ? 'draining' : 'available',
      load: here.running + (worker?.load ?? 0),
      capacity: here.capacity + (worker?.capacity ?? 0),
      agents: [...agents.values()],
      nodes: this.worker?.nodes() ?? [],
    };
  }

  /** The fleet's processes by presence (this one too), not expired; empty before start. */
  list(): PresenceInfo[] {
    return this.registry?.list() ?? [];
  }

  /**
   * A healthy, least-loaded process of the fleet with `capability` (an agent's capability,
   * `agent:<name>`, or `node:<flow>/<node>` for a node it runs for the fleet), or null.
   */
  pick(capability: string): PresenceInfo | null {
    return this.registry?.pick(capability) ?? null;
  }

  stats(): FleetStats {
    return { id: this.options.id, transport: this.transport.kind, dispatcher: this.dispatcher?.stats() ?? null, worker: this.worker?.stats() ?? null };
  }

  /**
   * Leaves the fleet: the worker stops taking tasks and lets the ones it holds finish for up to
   * `graceMs`; what is still out with workers fails; a transport opened from a URL is closed.
   */
  close(graceMs: number): Promise<void> {
    if (this.closing === null) this.leaving = true;
    this.closing ??= (async () => {
      // Draining first, so routers stop picking this process while its worker finishes.
      await this.presence?.refresh().catch(() => {});
      await this.worker?.close(graceMs);
      await this.dispatcher?.close();
      await this.presence?.close().catch(() => {});
      await this.registry?.close().catch(() => {});
      if (this.ownsTransport) await this.transport.close();
    })();
    return this.closing;
  }
}
