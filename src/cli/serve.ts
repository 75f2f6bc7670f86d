/**
 * `roost serve`: the long-lived service. In order: the configuration is loaded and checked
 * (an error exits 2 before anything is opened or bound), the logger and tracing start, the
 * runtime opens its journal, the application module adds its agents and flows, the HTTP API
 * binds, and the runtime starts (resuming the journal's unfinished traces); then `/health/startup`
 * passes.
 *
 * SIGTERM or SIGINT: readiness turns 503 and new work is refused, the work in flight drains for
 * up to `shutdown.grace_ms` (what is still running then is left in the journal, to resume on the
 * next start), the journal is flushed, the HTTP server closes, and the process exits 0. A second
 * signal exits at once (1): the journal still holds every accepted task, so the next start
 * resumes them.
 */
import type { FleetOptions } from '../fleet/fleet.js';
import type { Protocol2389Options } from '../protocol2389/options.js';
import { createRuntime, type Runtime } from '../runtime/runtime.js';
import { loadConfig, where, type ServiceConfig } from '../config/load.js';
import { ensureError, isRoostError } from '../errors.js';
import { hidePassword } from '../redact.js';
import { createService, type Service } from '../service/server.js';
import { serviceLogger } from '../telemetry/logger.js';
import { startTracing, type Tracing } from '../telemetry/tracing.js';
import { appPath, loadApp } from './app.js';
import type { Logger as PinoLogger } from 'pino';

/** Where `serve` reads and writes. */
export interface ServeIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  /** A line for people on stderr (errors before the logger exists). */
  err(line: string): void;
}

/** Exit codes. */
export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

/** The configuration, or the exit code and message of why it is not valid. */
export function loadOrExplain(file: string | undefined, io: ServeIo): ServiceConfig | null {
  try {
    return loadConfig({ ...(file === undefined ? {} : { file }), env: io.env, cwd: io.cwd });
  } catch (error) {
    if (!isRoostError(error, 'ROOST_ERR_CONFIG_INVALID')) throw error;
    io.err(`${error.code}: ${error.message}`);
    return null;
  }
}

/** What `roost worker` runs: the nodes it hosts for the fleet (default: the configuration's `fleet.host`). */
export interface WorkerRole {
  readonly nodes: readonly string[] | null;
}

/** The runtime's `fleet` option from the configuration (null: no fleet). */
export function fleetOptions(config: ServiceConfig, worker: WorkerRole | null): FleetOptions | null {
  const f = config.fleet;
  if (f === null) return null;
  return {
    transport: f.transport,
    namespace: f.namespace,
    ...(f.id === null ? {} : { id: f.id }),
    role: worker === null ? 'owner' : 'worker',
    remote: worker === null ? f.remote : [],
    host: worker?.nodes ?? f.host,
    leaseMs: f.leaseMs,
    heartbeatMs: f.heartbeatMs,
    ...(f.presenceExpiryMs === null ? {} : { presenceExpiryMs: f.presenceExpiryMs }),
    maxInFlight: f.maxInFlight,
    maxQueued: f.maxQueued,
    routing: f.routing,
  };
}

/** The runtime's `protocol2389` option from `[protocol2389]` and `[[agent2389]]` (null: not asked for). */
export function protocol2389Options(config: ServiceConfig): Protocol2389Options | null {
  const p = config.protocol2389;
  if (p === null) return null;
  return {
    broker: p.broker,
    registryExpiryMs: p.registryExpiryMs,
    ...(p.healthPort === null ? {} : { health: { port: p.healthPort, host: p.healthHost } }),
    agents: config.agents2389, // the loader's tables are the resolved agent options already
  };
}

/** Options of the runtime `roost serve` (or `roost worker`) runs, from the configuration. */
export function runtimeOptions(config: ServiceConfig, logger: PinoLogger, tracing: Tracing | null, worker: WorkerRole | null = null): Parameters<typeof createRuntime>[0] {
  const fleet = fleetOptions(config, worker);
  const protocol2389 = protocol2389Options(config);
  return {
    ...(fleet === null ? {} : { fleet }),
    ...(protocol2389 === null ? {} : { protocol2389 }),
    store: config.store.url,
    storeTimeoutMs: config.store.timeoutMs,
    journalEvents: config.store.journalEvents,
    ...(config.runtime.owner === null ? {} : { owner: config.runtime.owner }),
    maxPayloadBytes: config.runtime.maxPayloadBytes,
    limits: { maxInFlightTraces: config.runtime.maxInFlightTraces },
    drainTimeoutMs: config.runtime.drainTimeoutMs,
    results: { ttlMs: config.runtime.resultsTtlMs },
    logger,
    correlate: config.log.correlate,
    middlewares: tracing === null ? [] : [tracing.middleware],
  };
}

/**
 * Runs the service until a signal stops it; resolves with the exit code. With `worker`, it is
 * `roost worker`: the same process (the app, the journal, the HTTP API for probes, metrics and
 * listings), but in the fleet's worker role: it runs the hosted nodes for the owners of their
 * traces and takes no tasks of its own.
 */
export async function serve(args: { readonly config?: string; readonly version: string; readonly worker?: WorkerRole }, io: ServeIo): Promise<number> {
  const config = loadOrExplain(args.config, io);
  if (config === null) return EXIT.usage;
  if (config.app === null) {
    io.err(`ROOST_ERR_CONFIG_INVALID: app: expected a path to the application module (set \`app\` in roost.toml or ROOST_APP), got nothing`);
    return EXIT.usage;
  }
  const worker = args.worker ?? null;
  if (worker !== null) {
    if (config.fleet === null) {
      io.err('ROOST_ERR_CONFIG_INVALID: fleet.transport: a worker needs the fleet\'s broker (set [fleet] transport in roost.toml or ROOST_FLEET_TRANSPORT), got nothing');
      return EXIT.usage;
    }
    if ((worker.nodes ?? config.fleet.host).length === 0) {
      io.err('ROOST_ERR_CONFIG_INVALID: fleet.host: a worker needs the nodes it runs (--nodes flow/node,… or [fleet] host), got none');
      return EXIT.usage;
    }
  }
  const logger = serviceLogger({ level: config.log.level, format: config.log.format, correlate: config.log.correlate });
  const fromEnv = [...config.values.entries()].filter(([, v]) => v.source.kind === 'env').map(([path, v]) => `${path} (${where(v.source)})`);
  logger.info({ audit: 'config_loaded', file: config.file, fromEnvironment: fromEnv, version: args.version }, 'configuration loaded');

  const tracing = startTracing(io.env, { name: 'roost', version: args.version });
  let runtime: Runtime;
  try {
    runtime = createRuntime(runtimeOptions(config, logger, tracing, worker));
  } catch (error) {
    const e = ensureError(error);
    if (isRoostError(e, 'ROOST_ERR_INVALID_OPTION')) {
      // The configuration's values passed their own checks but not together (fleet.presence_expiry_ms ≤ heartbeat_ms, say).
      io.err(`ROOST_ERR_CONFIG_INVALID: ${e.field ?? 'config'}: ${e.message}`);
      await tracing?.shutdown();
      return EXIT.usage;
    }
    logger.fatal({ err: e, store: hidePassword(config.store.url) }, `cannot open the journal: ${e.message}`);
    await tracing?.shutdown();
    return EXIT.failed;
  }
  if (tracing !== null) runtime.on(tracing.onEvent);

  let service: Service | null = null;
  const stopEverything = async (): Promise<void> => {
    await runtime.close();
    await service?.close();
    await tracing?.shutdown();
  };
  try {
    await loadApp(appPath(config.app, config.dir), runtime);
    service = await createService(runtime, { settings: config, logger, version: args.version, tracing });
    const { url, healthUrl } = await service.listen();
    await runtime.start();
    service.health.started();
    const fleet = runtime.fleet === null ? undefined : { id: runtime.fleet.id, role: runtime.fleet.options.role, remote: runtime.fleet.options.remote, host: runtime.fleet.options.host };
    logger.info(
      {
        url,
        healthUrl,
        flows: runtime.flowNames(),
        store: runtime.store?.durable === true ? 'durable' : 'memory',
        owner: runtime.owner,
        fleet,
        agents2389: runtime.protocol2389?.options.agents.map((a) => a.id),
        health2389Port: runtime.protocol2389?.healthPort ?? undefined,
      },
      worker === null ? `roost serving on ${url}` : `roost worker ${runtime.fleet!.id} running ${runtime.fleet!.options.host.join(', ')}; probes on ${url}`,
    );
  } catch (error) {
    const e = ensureError(error);
    if (isRoostError(e, 'ROOST_ERR_APP_INVALID')) io.err(`${e.code}: ${e.message}`);
    logger.fatal({ err: e }, `roost could not start: ${e.message}`);
    await stopEverything();
    return isRoostError(e, 'ROOST_ERR_APP_INVALID') ? EXIT.usage : EXIT.failed;
  }

  return new Promise<number>((resolveExit) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (stopping) {
        logger.warn({ audit: 'shutdown_forced', signal }, 'second signal: exiting now; unfinished work resumes from the journal on the next start');
        process.exit(EXIT.failed);
      }
      stopping = true;
      const graceMs = config.shutdown.graceMs;
      const inFlight = runtime.inFlightTraces;
      logger.info({ audit: 'shutdown_begin', signal, graceMs, inFlight }, `${signal}: draining (up to ${graceMs} ms)`);
      service.drain();
      const started = Date.now();
      void (async () => {
        let code: number = EXIT.ok;
        try {
          await runtime.drain({ timeoutMs: graceMs });
        } catch (error) {
          logger.error({ err: ensureError(error) }, 'drain failed');
          code = EXIT.failed;
        }
        const left = runtime.cutOffTraces;
        await stopEverything();
        logger.info(
          { audit: 'shutdown_complete', signal, ms: Date.now() - started, unfinished: left },
          left === 0 ? 'stopped: every task in flight finished' : `stopped: ${left} unfinished traces stay in the journal and resume on the next start`,
        );
        resolveExit(code);
      })();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    process.on('unhandledRejection', (reason) => {
      // A handler's stray promise must not bring the service down; it is a bug to fix, so say so.
      logger.error({ err: ensureError(reason) }, 'unhandled promise rejection (a promise nobody awaited failed)');
    });
  });
}
