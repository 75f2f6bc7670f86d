/** Runtime options: what a user passes, and the validated, frozen form the runtime keeps. */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { DEFAULT_MAX_ENVELOPE_BYTES } from '../envelope/codec.js';
import { invalidOption } from '../errors.js';
import { resolveFleetOptions, type FleetOptions, type ResolvedFleetOptions } from '../fleet/fleet.js';
import { resolveProtocol2389, type Protocol2389Options, type ResolvedProtocol2389 } from '../protocol2389/options.js';
import type { Middleware } from '../flow/handler.js';
import { DEFAULT_STREAM_BUFFER } from '../flow/trace-stream.js';
import type { Store } from '../store/store.js';
import type { Logger } from '../telemetry/logger.js';
import { checkObject, optBool, optEnum, optInt, optNumber } from '../validate-options.js';
import { DEFAULT_QUARANTINE, type QuarantineOptions, type ResolvedQuarantineOptions } from './agent.js';
import { DEFAULT_DEAD_LETTER_MAX } from './dead-letters.js';

/** Caps that keep one runtime's memory and work bounded. */
export interface LimitOptions {
  /** Agents registered (default 1,000): `ROOST_ERR_RESOURCE_LIMIT` beyond. */
  readonly maxAgents?: number;
  /** Traces admitted and not finished, across flows (default 10,000): `emit` fails with `ROOST_ERR_RESOURCE_LIMIT` beyond. */
  readonly maxInFlightTraces?: number;
  /**
   * Handler runs at once, across flows (default 10,000). Each flow reserves the sum of its nodes'
   * `concurrency` when it is added; a flow that would exceed this is refused with
   * `ROOST_ERR_RESOURCE_LIMIT`, so the runtime can never run more.
   */
  readonly maxConcurrentRuns?: number;
}

/** How long finished traces' results are kept for `fetch`. */
export interface ResultOptions {
  /** Ms a result stays fetchable (default 300,000). */
  readonly ttlMs?: number;
  /** Results kept per flow (default 10,000); the oldest go first. */
  readonly max?: number;
}

/** The window in which a repeated idempotency key returns the first trace. */
export interface IdempotencyOptions {
  /** Ms a key is remembered (default 600,000). */
  readonly ttlMs?: number;
  /** Keys remembered (default 100,000); the oldest go first. */
  readonly max?: number;
}

/** What a user passes to `createRuntime`. See `docs/reference/configuration.md`. */
export interface RuntimeOptions {
  /** Largest payload (JSON, bytes) `emit` accepts (default 256 KiB). */
  readonly maxPayloadBytes?: number;
  readonly limits?: LimitOptions;
  readonly results?: ResultOptions;
  /** Dead letters kept in memory (default 10,000). */
  readonly deadLetters?: { readonly max?: number };
  /** The idempotency window, or `false` to turn it off. */
  readonly idempotency?: IdempotencyOptions | false;
  /** Default quarantine settings of every agent. */
  readonly quarantine?: QuarantineOptions;
  /** Items a trace stream buffers for a slow reader (default 256). */
  readonly streamBuffer?: number;
  /** Default graceful-drain time of `close()`, ms (default 30,000); then running traces are cancelled. */
  readonly drainTimeoutMs?: number;
  /** A pino-compatible logger, or `false` for none (default: pino on stderr, `LOG_LEVEL`). */
  readonly logger?: Logger | false;
  /**
   * Run every handler inside `logContext` (AsyncLocalStorage) so that any log line written while
   * it runs can carry its trace, tenant, flow and node (default false: it costs every promise of
   * the process a little on Node 20; `roost serve` turns it on).
   */
  readonly correlate?: boolean;
  /** Wrap every handler run (observe or transform input and output). */
  readonly middlewares?: readonly Middleware[];
  /** Random numbers for backoff jitter (tests pass a fixed one). */
  readonly random?: () => number;
  /**
   * The journal: a store URL (`memory:`, `sqlite:<path>`) or a `Store`. Default: none (in-process
   * only, at-most-once). With a durable store, `emit` resolves once the task is committed, results
   * are committed before `fetch` sees them, and `start()` resumes unfinished traces.
   */
  readonly store?: string | Store;
  /** Which events go to the journal: `state` (default: those that change a trace), `all`, or `none`. */
  readonly journalEvents?: 'state' | 'all' | 'none';
  /** This process's name as the owner of its traces (default: host, pid and a random suffix). */
  readonly owner?: string;
  /**
   * With a shared store (PostgreSQL): how long this process's owner lease lasts without renewal,
   * ms (default 15,000). It is renewed every third of that; when it lapses (the process died),
   * another process sharing the store takes over its unfinished traces.
   */
  readonly ownerLeaseMs?: number;
  /** What the journal keeps, and for how long. */
  readonly retention?: RetentionOptions;
  /** Every store operation fails with `ROOST_ERR_STORE_UNAVAILABLE` after this long, ms (default 5,000). */
  readonly storeTimeoutMs?: number;
  /** The circuit breaker around the store. */
  readonly storeBreaker?: { readonly failures?: number; readonly cooldownMs?: number };
  /**
   * Join a fleet of processes over a broker: send the runs of `remote` nodes to workers, run the
   * `host` nodes for the others (src/fleet/fleet.ts). Without it, every node runs here.
   */
  readonly fleet?: FleetOptions;
  /**
   * Speak the 2389 Agent Protocol over MQTT: expose flows as 2389 agents, and send tasks to 2389
   * agents (`runtime.protocol2389`; src/protocol2389).
   */
  readonly protocol2389?: Protocol2389Options;
}

/** Pruning of the journal and its size cap. */
export interface RetentionOptions {
  /** Finished traces (with their events and steps) are pruned this long after they ended, ms (default 7 days). */
  readonly finishedMs?: number;
  /** How often pruning runs, ms (default 60,000; it also runs on start). */
  readonly intervalMs?: number;
  /** Refuse new work with `ROOST_ERR_STORE_FULL` while the journal holds more than this many bytes (SQLite; default: no cap). */
  readonly maxStoreBytes?: number;
}

/** {@link RuntimeOptions} validated, with defaults, frozen. */
export interface ResolvedRuntimeOptions {
  readonly maxPayloadBytes: number;
  readonly limits: Required<LimitOptions>;
  readonly results: Required<ResultOptions>;
  readonly deadLetters: { readonly max: number };
  readonly idempotency: Required<IdempotencyOptions> | false;
  readonly quarantine: ResolvedQuarantineOptions;
  readonly streamBuffer: number;
  readonly drainTimeoutMs: number;
  readonly logger: Logger | false | undefined;
  readonly correlate: boolean;
  readonly middlewares: readonly Middleware[];
  readonly random: () => number;
  readonly store: string | Store | null;
  readonly journalEvents: 'state' | 'all' | 'none';
  readonly owner: string;
  readonly ownerLeaseMs: number;
  readonly retention: { readonly finishedMs: number; readonly intervalMs: number; readonly maxStoreBytes: number | null };
  readonly storeTimeoutMs: number;
  readonly storeBreaker: { readonly failures: number; readonly cooldownMs: number };
  readonly fleet: ResolvedFleetOptions | null;
  readonly protocol2389: ResolvedProtocol2389 | null;
}

const MAX_MS = 2_147_483_647;
const TOP_KEYS = [
  'maxPayloadBytes',
  'limits',
  'results',
  'deadLetters',
  'idempotency',
  'quarantine',
  'streamBuffer',
  'drainTimeoutMs',
  'logger',
  'correlate',
  'middlewares',
  'random',
  'store',
  'journalEvents',
  'owner',
  'ownerLeaseMs',
  'retention',
  'storeTimeoutMs',
  'storeBreaker',
  'fleet',
  'protocol2389',
];

/** Validates quarantine options on top of `base`. */
export function resolveQuarantine(field: string, value: unknown, base: ResolvedQuarantineOptions = DEFAULT_QUARANTINE): ResolvedQuarantineOptions {
  const q = checkObject(field, value, ['windowMs', 'minRuns', 'failureRatio', 'maxAbandoned', 'mode']);
  return Object.freeze({
    windowMs: optInt(field, q, 'windowMs', 10, MAX_MS, base.windowMs),
    minRuns: optInt(field, q, 'minRuns', 1, 1_000_000, base.minRuns),
    failureRatio: optNumber(field, q, 'failureRatio', 0, 1, base.failureRatio),
    maxAbandoned: optInt(field, q, 'maxAbandoned', 0, 1_000_000, base.maxAbandoned),
    mode: optEnum(field, q, 'mode', ['reject', 'park'], base.mode),
  });
}

/** Validates `options` (never mutating them) and returns the frozen, resolved form. */
export function resolveRuntimeOptions(options: unknown): ResolvedRuntimeOptions {
  const o = checkObject('options', options ?? {}, TOP_KEYS);
  const limits = checkObject('limits', o['limits'], ['maxAgents', 'maxInFlightTraces', 'maxConcurrentRuns']);
  const results = checkObject('results', o['results'], ['ttlMs', 'max']);
  const dead = checkObject('deadLetters', o['deadLetters'], ['max']);
  let idempotency: Required<IdempotencyOptions> | false = false;
  if (o['idempotency'] !== false) {
    const i = checkObject('idempotency', o['idempotency'], ['ttlMs', 'max']);
    idempotency = Object.freeze({ ttlMs: optInt('idempotency', i, 'ttlMs', 1, MAX_MS, 600_000), max: optInt('idempotency', i, 'max', 1, 10_000_000, 100_000) });
  }
  const logger = o['logger'];
  if (logger !== undefined && logger !== false && (typeof logger !== 'object' || logger === null || typeof (logger as Logger).child !== 'function')) {
    throw invalidOption('logger', 'a pino-compatible logger or false', logger);
  }
  const middlewares = o['middlewares'] ?? [];
  if (!Array.isArray(middlewares) || middlewares.some((m) => typeof m !== 'function')) throw invalidOption('middlewares', 'an array of functions', middlewares);
  const random = o['random'] ?? Math.random;
  if (typeof random !== 'function') throw invalidOption('random', 'a function returning numbers in [0, 1)', random);
  const store = o['store'] ?? null;
  if (store !== null && typeof store !== 'string' && (typeof store !== 'object' || typeof (store as Store).commit !== 'function')) {
    throw invalidOption('store', 'a store URL (memory:, sqlite:<path>, postgres://…) or a Store', store);
  }
  const retention = checkObject('retention', o['retention'], ['finishedMs', 'intervalMs', 'maxStoreBytes']);
  const breaker = checkObject('storeBreaker', o['storeBreaker'], ['failures', 'cooldownMs']);
  const owner = o['owner'] ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  if (typeof owner !== 'string' || owner.length < 1 || owner.length > 200) throw invalidOption('owner', 'a string of 1 to 200 characters', owner);
  return Object.freeze({
    maxPayloadBytes: optInt('', o, 'maxPayloadBytes', 1, 64 * 1024 * 1024, DEFAULT_MAX_ENVELOPE_BYTES),
    limits: Object.freeze({
      maxAgents: optInt('limits', limits, 'maxAgents', 1, 1_000_000, 1_000),
      maxInFlightTraces: optInt('limits', limits, 'maxInFlightTraces', 1, 100_000_000, 10_000),
      maxConcurrentRuns: optInt('limits', limits, 'maxConcurrentRuns', 1, 100_000_000, 10_000),
    }),
    results: Object.freeze({ ttlMs: optInt('results', results, 'ttlMs', 1, MAX_MS, 300_000), max: optInt('results', results, 'max', 1, 10_000_000, 10_000) }),
    deadLetters: Object.freeze({ max: optInt('deadLetters', dead, 'max', 1, 10_000_000, DEFAULT_DEAD_LETTER_MAX) }),
    idempotency,
    quarantine: resolveQuarantine('quarantine', o['quarantine']),
    streamBuffer: optInt('', o, 'streamBuffer', 1, 1_000_000, DEFAULT_STREAM_BUFFER),
    drainTimeoutMs: optInt('', o, 'drainTimeoutMs', 0, MAX_MS, 30_000),
    logger: logger as Logger | false | undefined,
    correlate: optBool('', o, 'correlate', false),
    middlewares: Object.freeze([...(middlewares as Middleware[])]),
    random: random as () => number,
    store: store as string | Store | null,
    journalEvents: optEnum('', o, 'journalEvents', ['state', 'all', 'none'], 'state'),
    owner,
    ownerLeaseMs: optInt('', o, 'ownerLeaseMs', 30, MAX_MS, 15_000),
    retention: Object.freeze({
      finishedMs: optInt('retention', retention, 'finishedMs', 1, Number.MAX_SAFE_INTEGER, 7 * 24 * 3600 * 1000),
      intervalMs: optInt('retention', retention, 'intervalMs', 10, MAX_MS, 60_000),
      maxStoreBytes: retention['maxStoreBytes'] === undefined ? null : optInt('retention', retention, 'maxStoreBytes', 4096, Number.MAX_SAFE_INTEGER, 0),
    }),
    storeTimeoutMs: optInt('', o, 'storeTimeoutMs', 10, MAX_MS, 5_000),
    storeBreaker: Object.freeze({
      failures: optInt('storeBreaker', breaker, 'failures', 1, 1_000_000, 5),
      cooldownMs: optInt('storeBreaker', breaker, 'cooldownMs', 1, MAX_MS, 5_000),
    }),
    fleet: o['fleet'] === undefined ? null : resolveFleetOptions(o['fleet'], owner),
    protocol2389: o['protocol2389'] === undefined ? null : resolveProtocol2389(o['protocol2389']),
  });
}

