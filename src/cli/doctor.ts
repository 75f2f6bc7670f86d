/**
 * `roost doctor`: checks what a deployment needs and says what to fix. Each check prints one
 * line, `ok`, `warn` or `FAIL`, with a fix under a failure:
 *
 * - config: the configuration loads (file, interpolation, environment) and every value is valid;
 * - app: the application module loads and adds its flows (on a throw-away in-memory runtime);
 * - store: the journal is reachable and writable (a key written and read back);
 * - ports: the HTTP (and health) ports are free on the configured host;
 * - fleet: with `[fleet]`, its broker accepts a connection;
 * - 2389: with `[protocol2389]` or `[[agent2389]]`, its broker accepts a connection and every
 *   agent's flow is one the app adds;
 * - tracing: whether the `OTEL_*` variables turn tracing on, and where spans go.
 *
 * Exit 0 when nothing failed, 1 otherwise.
 */
import { createServer } from 'node:net';
import { hostname } from 'node:os';
import { loadConfig, type ServiceConfig } from '../config/load.js';
import { ensureError, isRoostError } from '../errors.js';
import { hidePassword } from '../redact.js';
import { createRuntime } from '../runtime/runtime.js';
import { openStore } from '../store/open.js';
import { openTransport } from '../transport/open.js';
import { tracingExporter } from '../telemetry/tracing.js';
import { appPath, loadApp } from './app.js';

/** One finding. */
export interface Finding {
  readonly check: string;
  readonly status: 'ok' | 'warn' | 'FAIL';
  readonly message: string;
  readonly fix?: string;
}

/** Where doctor reads and writes. */
export interface DoctorIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  out(line: string): void;
}

const STORE_CHECK_MS = 10_000;

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function checkApp(config: ServiceConfig, flows: string[] = []): Promise<Finding> {
  if (config.app === null) return { check: 'app', status: 'FAIL', message: 'no application module is configured', fix: 'set `app = "path/to/app.ts"` in roost.toml, or ROOST_APP' };
  const file = appPath(config.app, config.dir);
  const runtime = createRuntime({ logger: false });
  try {
    await loadApp(file, runtime);
    flows.push(...runtime.flowNames());
    return { check: 'app', status: 'ok', message: `${config.app}: flows ${runtime.flowNames().join(', ')}` };
  } catch (error) {
    const e = ensureError(error);
    return { check: 'app', status: 'FAIL', message: `${isRoostError(e) ? `${e.code}: ` : ''}${e.message}`, fix: 'the module must export a function (default, or `setup`) that adds flows to the runtime it receives' };
  } finally {
    await runtime.close();
  }
}

async function checkStore(config: ServiceConfig): Promise<Finding> {
  const url = config.store.url;
  const shown = hidePassword(url);
  const fix = url.startsWith('sqlite:')
    ? "the file's directory must exist or be creatable, and be writable by this user"
    : url.startsWith('postgres')
      ? "check that the server runs and answers at that address, and that the URL's user, password and database are right"
      : 'use memory:, sqlite:<path> or postgres://…';
  let store;
  try {
    store = openStore(url, { postgres: { statementTimeoutMs: config.store.timeoutMs } }, 'store.url');
  } catch (error) {
    return { check: 'store', status: 'FAIL', message: `${shown}: ${ensureError(error).message}`, fix };
  }
  try {
    // One key for every doctor run (not one per host and process, which would pile up); a
    // compare-and-set lost to another run at the same moment is tried again.
    const key = 'roost:doctor';
    await withTimeout(
      (async () => {
        for (let tries = 1; ; tries++) {
          const current = await store.getValue(key);
          const version = await store.putValue(key, { at: Date.now(), host: hostname(), pid: process.pid }, current?.version ?? 0);
          if (version === null) {
            if (tries < 5) continue;
            throw new Error('a write was not applied five times (other writers?)');
          }
          const back = await store.getValue(key);
          if (back === undefined || back.version < version) throw new Error('a written key did not read back');
          return;
        }
      })(),
      // Each store operation may take store.timeout_ms: the check as a whole gets room for several.
      Math.max(STORE_CHECK_MS, 4 * config.store.timeoutMs),
      'the journal',
    );
    if (!store.durable) return { check: 'store', status: 'warn', message: `${shown}: works, but keeps nothing across a restart`, fix: 'use sqlite:<path> or postgres://… to keep accepted work' };
    return { check: 'store', status: 'ok', message: `${shown}: reachable and writable` };
  } catch (error) {
    return { check: 'store', status: 'FAIL', message: `${shown}: ${ensureError(error).message}`, fix };
  } finally {
    await store.close().catch(() => {});
  }
}

function portFree(host: string, port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(null)));
  });
}

/** With a fleet: its broker accepts a connection (connect, then close). */
async function checkFleet(config: ServiceConfig): Promise<Finding | null> {
  const fleet = config.fleet;
  if (fleet === null) return null;
  const shown = hidePassword(fleet.transport);
  let transport;
  try {
    transport = openTransport(fleet.transport, { clientId: `roost-doctor-${process.pid}` }, 'fleet.transport');
    await withTimeout(transport.connect(), STORE_CHECK_MS, `the broker at ${shown}`);
    return { check: 'fleet', status: 'ok', message: `${shown}: connected (namespace ${fleet.namespace}; remote: ${fleet.remote.join(', ') || 'none'}; host: ${fleet.host.join(', ') || 'none'})` };
  } catch (error) {
    const e = ensureError(error);
    return { check: 'fleet', status: 'FAIL', message: `${shown}: ${isRoostError(e) ? `${e.code}: ` : ''}${e.message}`, fix: 'start the broker (see the README\'s development section), or fix [fleet] transport / ROOST_FLEET_TRANSPORT' };
  } finally {
    await transport?.close().catch(() => {});
  }
}

/** With the 2389 protocol: its broker accepts a connection, and each agent runs a flow the app has. */
async function checkProtocol2389(config: ServiceConfig, flows: readonly string[] | null): Promise<Finding[]> {
  const p = config.protocol2389;
  if (p === null) return [];
  const out: Finding[] = [];
  const shown = hidePassword(p.broker);
  let transport;
  try {
    transport = openTransport(p.broker, { clientId: `roost-doctor-2389-${process.pid}` }, 'protocol2389.broker');
    await withTimeout(transport.connect(), STORE_CHECK_MS, `the broker at ${shown}`);
    out.push({ check: '2389', status: 'ok', message: `${shown}: connected (agents: ${config.agents2389.map((a) => a.id).join(', ') || 'none'})` });
  } catch (error) {
    const e = ensureError(error);
    out.push({ check: '2389', status: 'FAIL', message: `${shown}: ${isRoostError(e) ? `${e.code}: ` : ''}${e.message}`, fix: 'start the broker, or fix [protocol2389] broker / ROOST_2389_BROKER' });
  } finally {
    await transport?.close().catch(() => {});
  }
  if (flows !== null) {
    config.agents2389.forEach((a, i) => {
      if (!flows.includes(a.flow)) {
        out.push({ check: '2389', status: 'FAIL', message: `agent2389[${i}] (${a.id}): the app has no flow ${JSON.stringify(a.flow)} (it has ${flows.join(', ') || 'none'})`, fix: `set agent2389[${i}].flow to one of the app's flows` });
      }
    });
  }
  return out;
}

async function checkPorts(config: ServiceConfig): Promise<Finding[]> {
  const out: Finding[] = [];
  const { host, port, healthPort } = config.http;
  for (const [name, value, env] of [
    ['http.port', port, 'ROOST_HTTP_PORT'],
    ['http.health_port', healthPort, 'ROOST_HEALTH_PORT'],
    ['protocol2389.health_port', config.protocol2389?.healthPort ?? null, 'ROOST_2389_HEALTH_PORT'],
  ] as const) {
    if (value === null) continue;
    if (value === 0) {
      out.push({ check: 'ports', status: 'ok', message: `${name} = 0: any free port` });
      continue;
    }
    const problem = await portFree(host, value);
    out.push(
      problem === null
        ? { check: 'ports', status: 'ok', message: `${host}:${value} (${name}) is free` }
        : {
            check: 'ports',
            status: 'FAIL',
            message: `${host}:${value} (${name}) cannot be bound: ${problem}`,
            fix: problem === 'EADDRINUSE' ? `stop what listens there, or set ${name} (${env}) to another port` : `check ${'http.host'} and ${name}`,
          },
    );
  }
  return out;
}

function checkTracing(env: Readonly<Record<string, string | undefined>>): Finding {
  const exporter = tracingExporter(env);
  if (exporter === null) return { check: 'tracing', status: 'ok', message: 'off (set OTEL_EXPORTER_OTLP_ENDPOINT to export spans)' };
  if (exporter === 'console') return { check: 'tracing', status: 'ok', message: 'on: spans are printed (OTEL_TRACES_EXPORTER=console)' };
  const endpoint = env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] ?? env['OTEL_EXPORTER_OTLP_ENDPOINT'] ?? 'http://localhost:4318 (the default)';
  return { check: 'tracing', status: 'ok', message: `on: spans go to ${endpoint} over OTLP/HTTP` };
}

/** Every finding, in order (see the module comment). */
export async function diagnose(args: { readonly config?: string }, io: Pick<DoctorIo, 'env' | 'cwd'>): Promise<Finding[]> {
  let config: ServiceConfig;
  try {
    config = loadConfig({ ...(args.config === undefined ? {} : { file: args.config }), env: io.env, cwd: io.cwd });
  } catch (error) {
    const e = ensureError(error);
    return [{ check: 'config', status: 'FAIL', message: `${isRoostError(e) ? `${e.code}: ` : ''}${e.message}`, fix: 'correct the key named above (docs/reference/configuration.md lists every key)' }];
  }
  const findings: Finding[] = [{ check: 'config', status: 'ok', message: `${config.file ?? 'no roost.toml: defaults and the environment'}: valid` }];
  const flows: string[] = [];
  const app = await checkApp(config, flows);
  findings.push(app);
  findings.push(await checkStore(config));
  const fleet = await checkFleet(config);
  if (fleet !== null) findings.push(fleet);
  findings.push(...(await checkProtocol2389(config, app.status === 'ok' ? flows : null)));
  findings.push(...(await checkPorts(config)));
  findings.push(checkTracing(io.env));
  return findings;
}

/** Prints the findings; resolves with the exit code. */
export async function doctor(args: { readonly config?: string }, io: DoctorIo): Promise<number> {
  const findings = await diagnose(args, io);
  for (const f of findings) {
    io.out(`${f.status.padEnd(4)}  ${f.check.padEnd(7)}  ${f.message}`);
    if (f.fix !== undefined && f.status !== 'ok') io.out(`${' '.repeat(15)}fix: ${f.fix}`);
  }
  const failed = findings.filter((f) => f.status === 'FAIL').length;
  io.out(failed === 0 ? 'everything roost serve needs is in place' : `${failed} problem${failed === 1 ? '' : 's'} to fix before roost serve can run`);
  return failed === 0 ? 0 : 1;
}
