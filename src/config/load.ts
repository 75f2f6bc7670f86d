/**
 * Loads the service's configuration: `roost.toml` (optional), `${VAR}` and `${VAR:-default}`
 * interpolation in its strings, then the environment, which overrides the file
 * (`ROOST_HTTP_PORT`, `ROOST_STORE_URL`, `LOG_LEVEL`, … — see schema.ts). Unknown keys are
 * refused, every value is checked against its type and range, and an error names the key, the
 * value, where it came from (`roost.toml:12` or `ROOST_HTTP_PORT`) and what was expected:
 * `ROOST_ERR_CONFIG_INVALID`, before anything is opened or bound.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { TomlError, parse } from 'smol-toml';
import { RoostError, describeValue } from '../errors.js';
import { hidePassword } from '../redact.js';
import type { ResolvedAgent2389 } from '../protocol2389/options.js';
import { AGENT2389_KEYS, CONFIG_BY_PATH, CONFIG_KEYS, describeType, type ConfigKey } from './schema.js';

/** Where a value came from. */
export type ConfigSource = { readonly kind: 'default' } | { readonly kind: 'file'; readonly file: string; readonly line: number } | { readonly kind: 'env'; readonly name: string };

/** A value of the configuration. */
export type ConfigValue = string | number | boolean | null;

/** The validated configuration: every key, typed, and where each value came from. */
export interface ServiceConfig {
  /** The file read, or null when there was none. */
  readonly file: string | null;
  /** The directory `app` (and relative paths of the file) are resolved against. */
  readonly dir: string;
  readonly app: string | null;
  readonly http: {
    readonly host: string;
    readonly port: number;
    readonly healthPort: number | null;
    readonly bodyLimitBytes: number;
    readonly requestTimeoutMs: number;
    readonly waitMaxMs: number;
  };
  readonly admission: { readonly maxConcurrentTasks: number; readonly tenantRate: number; readonly tenantBurst: number };
  readonly store: { readonly url: string; readonly timeoutMs: number; readonly journalEvents: 'state' | 'all' | 'none' };
  readonly runtime: {
    readonly owner: string | null;
    readonly maxPayloadBytes: number;
    readonly maxInFlightTraces: number;
    readonly drainTimeoutMs: number;
    readonly resultsTtlMs: number;
  };
  readonly log: { readonly level: string; readonly format: 'json' | 'text'; readonly payloads: boolean; readonly correlate: boolean };
  readonly shutdown: { readonly graceMs: number };
  readonly websocket: { readonly firstFrameTimeoutMs: number; readonly pingIntervalMs: number; readonly maxBufferedBytes: number };
  readonly sse: { readonly bufferEvents: number };
  /** The fleet, or null when `fleet.transport` is unset. */
  readonly fleet: {
    readonly transport: string;
    readonly namespace: string;
    readonly id: string | null;
    readonly remote: readonly string[];
    readonly host: readonly string[];
    readonly leaseMs: number;
    readonly heartbeatMs: number;
    readonly presenceExpiryMs: number | null;
    readonly maxInFlight: number;
    readonly maxQueued: number;
    readonly routing: 'registry' | 'group';
  } | null;
  /** The 2389 Agent Protocol (`[protocol2389]`), or null when it is not asked for. */
  readonly protocol2389: { readonly broker: string; readonly healthPort: number | null; readonly healthHost: string; readonly registryExpiryMs: number } | null;
  /** Flows exposed as 2389 agents (`[[agent2389]]`). */
  readonly agents2389: readonly Agent2389Config[];
  /** Every value by dotted path, and its source (for `roost config check`). */
  readonly values: ReadonlyMap<string, { readonly value: ConfigValue; readonly source: ConfigSource }>;
}

/** How to load. */
export interface LoadConfigOptions {
  /** The file to read; default: `$ROOST_CONFIG`, else `roost.toml` in `cwd` when it exists. */
  readonly file?: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly cwd?: string;
}

/** The file a load reads: the option, `$ROOST_CONFIG`, else `./roost.toml` when it exists (null: none). */
export function configFile(options: LoadConfigOptions = {}): string | null {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const named = options.file ?? nonEmpty(env['ROOST_CONFIG']);
  if (named !== undefined) return resolve(cwd, named);
  const local = resolve(cwd, 'roost.toml');
  return existsSync(local) ? local : null;
}

/** Loads and checks the configuration (see the module comment). */
export function loadConfig(options: LoadConfigOptions = {}): ServiceConfig {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const file = configFile(options);
  const values = new Map<string, { value: ConfigValue; source: ConfigSource }>();
  let agents2389: Agent2389Config[] = [];
  for (const key of CONFIG_KEYS) values.set(key.path, { value: key.default, source: { kind: 'default' } });

  if (file !== null) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      throw configError(`${file}: cannot be read (${(error as Error).message})`, { field: 'config', expected: 'a readable TOML file', received: file });
    }
    let parsed: Record<string, unknown>;
    try {
      parsed = parse(text);
    } catch (error) {
      const where = error instanceof TomlError ? `${file}:${error.line}` : file;
      throw configError(`${where}: not valid TOML: ${(error as Error).message.split('\n')[0]}`, { field: 'config', expected: 'a TOML document', received: where });
    }
    const lines = keyLines(text);
    if (parsed['agent2389'] !== undefined) {
      agents2389 = agentTables(parsed['agent2389'], file, lines, env);
      delete parsed['agent2389'];
    }
    for (const [path, raw] of flatten(parsed)) {
      const source: ConfigSource = { kind: 'file', file, line: lines.get(path) ?? 0 };
      const key = CONFIG_BY_PATH.get(path);
      if (key === undefined) {
        const table = path.includes('.') ? path.slice(0, path.lastIndexOf('.')) : '';
        const known = CONFIG_KEYS.filter((k) => (k.path.includes('.') ? k.path.slice(0, k.path.lastIndexOf('.')) : '') === table).map((k) => k.path);
        throw configError(`${where(source)}: ${path}: unknown key${known.length > 0 ? ` (known here: ${known.join(', ')})` : ''}`, {
          field: path,
          expected: 'a known key',
          received: describeValue(raw),
        });
      }
      const value = typeof raw === 'string' ? interpolate(raw, env, key, source) : raw;
      values.set(path, { value: check(key, value, source), source });
    }
  }

  for (const key of CONFIG_KEYS) {
    if (key.env === undefined) continue;
    const raw = nonEmpty(env[key.env]);
    if (raw === undefined) continue;
    const source: ConfigSource = { kind: 'env', name: key.env };
    values.set(key.path, { value: check(key, raw, source), source });
  }

  const v = (path: string): ConfigValue => values.get(path)!.value;
  const str = (path: string): string => v(path) as string;
  const int = (path: string): number => v(path) as number;
  return Object.freeze({
    file,
    dir: file === null ? cwd : dirname(file),
    app: v('app') as string | null,
    http: Object.freeze({
      host: str('http.host'),
      port: int('http.port'),
      healthPort: v('http.health_port') as number | null,
      bodyLimitBytes: int('http.body_limit_bytes'),
      requestTimeoutMs: int('http.request_timeout_ms'),
      waitMaxMs: int('http.wait_max_ms'),
    }),
    admission: Object.freeze({
      maxConcurrentTasks: int('admission.max_concurrent_tasks'),
      tenantRate: int('admission.tenant_rate'),
      tenantBurst: int('admission.tenant_burst'),
    }),
    store: Object.freeze({ url: str('store.url'), timeoutMs: int('store.timeout_ms'), journalEvents: str('store.journal_events') as 'state' | 'all' | 'none' }),
    runtime: Object.freeze({
      owner: v('runtime.owner') as string | null,
      maxPayloadBytes: int('runtime.max_payload_bytes'),
      maxInFlightTraces: int('runtime.max_in_flight_traces'),
      drainTimeoutMs: int('runtime.drain_timeout_ms'),
      resultsTtlMs: int('runtime.results_ttl_ms'),
    }),
    log: Object.freeze({
      level: str('log.level'),
      format: str('log.format') as 'json' | 'text',
      payloads: v('log.payloads') as boolean,
      correlate: v('log.correlate') as boolean,
    }),
    shutdown: Object.freeze({ graceMs: int('shutdown.grace_ms') }),
    websocket: Object.freeze({
      firstFrameTimeoutMs: int('websocket.first_frame_timeout_ms'),
      pingIntervalMs: int('websocket.ping_interval_ms'),
      maxBufferedBytes: int('websocket.max_buffered_bytes'),
    }),
    sse: Object.freeze({ bufferEvents: int('sse.buffer_events') }),
    fleet:
      v('fleet.transport') === null
        ? null
        : Object.freeze({
            transport: str('fleet.transport'),
            namespace: str('fleet.namespace'),
            id: v('fleet.id') as string | null,
            remote: nodeList(v('fleet.remote')),
            host: nodeList(v('fleet.host')),
            leaseMs: int('fleet.lease_ms'),
            heartbeatMs: int('fleet.heartbeat_ms'),
            presenceExpiryMs: v('fleet.presence_expiry_ms') as number | null,
            maxInFlight: int('fleet.max_in_flight'),
            maxQueued: int('fleet.max_queued'),
            routing: str('fleet.routing') as 'registry' | 'group',
          }),
    protocol2389: protocol2389Config(v, agents2389),
    agents2389: Object.freeze(agents2389),
    values,
  });
}

/** `[protocol2389]`, or null when neither it nor `[[agent2389]]` asks for the protocol. */
function protocol2389Config(v: (path: string) => ConfigValue, agents: readonly Agent2389Config[]): ServiceConfig['protocol2389'] {
  let broker = v('protocol2389.broker') as string | null;
  const healthPort = v('protocol2389.health_port') as number | null;
  if (broker === null && agents.length === 0 && healthPort === null) return null;
  if (broker === null) {
    const fleet = v('fleet.transport');
    if (typeof fleet === 'string' && /^mqtts?:\/\//.test(fleet)) broker = fleet;
    else {
      throw configError('protocol2389.broker: [[agent2389]] and protocol2389.health_port need the broker the 2389 agents meet on (set [protocol2389] broker or ROOST_2389_BROKER; an MQTT fleet.transport is used when it is unset), got nothing', {
        field: 'protocol2389.broker',
        expected: 'an MQTT broker URL: mqtt://host:port or mqtts://host:port',
        received: 'nothing',
      });
    }
  }
  return Object.freeze({ broker, healthPort, healthHost: v('protocol2389.health_host') as string, registryExpiryMs: v('protocol2389.registry_expiry_ms') as number });
}

/** A comma-separated list of `flow/node` names (checked already), as an array. */
export function nodeList(value: ConfigValue): readonly string[] {
  if (typeof value !== 'string') return Object.freeze([]);
  return Object.freeze(value.split(',').map((s) => s.trim()).filter((s) => s !== ''));
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value; // an empty variable counts as unset
}

/** `roost.toml:12`, `ROOST_HTTP_PORT`, or `the default`. */
export function where(source: ConfigSource): string {
  if (source.kind === 'file') return source.line > 0 ? `${source.file}:${source.line}` : source.file;
  if (source.kind === 'env') return source.name;
  return 'the default';
}

function configError(message: string, fields: { field: string; expected: string; received: string }): RoostError {
  return new RoostError('ROOST_ERR_CONFIG_INVALID', message, fields);
}

/** `${VAR}` and `${VAR:-default}` in a file's string, from the environment. */
function interpolate(text: string, env: Readonly<Record<string, string | undefined>>, key: ConfigKey, source: ConfigSource): string {
  return text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_match, name: string, fallback: string | undefined) => {
    const value = nonEmpty(env[name]);
    if (value !== undefined) return value;
    if (fallback !== undefined) return fallback;
    throw configError(`${where(source)}: ${key.path}: \${${name}} is not set (give it a value, or a default: \${${name}:-…})`, {
      field: key.path,
      expected: `the environment variable ${name}`,
      received: 'unset',
    });
  });
}

/** The value checked against the key's type; strings (from variables) are read as numbers and booleans. */
function check(key: ConfigKey, value: unknown, source: ConfigSource): ConfigValue {
  const type = key.type;
  const bad = (): RoostError => {
    const expected = describeType(type);
    return configError(`${where(source)}: ${key.path}: expected ${expected}, got ${describeValue(key.secret === true ? '***' : value)}`, {
      field: key.path,
      expected,
      received: key.secret === true ? '***' : describeValue(value),
    });
  };
  switch (type.kind) {
    case 'string': {
      if (typeof value !== 'string') throw bad();
      if ((type.min !== undefined && value.length < type.min) || (type.max !== undefined && value.length > type.max)) throw bad();
      if (type.pattern !== undefined && !type.pattern.test(value)) throw bad();
      return value;
    }
    case 'int': {
      const n = typeof value === 'string' && /^-?\d+$/.test(value.trim()) ? Number(value.trim()) : typeof value === 'bigint' ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < type.min || n > type.max) throw bad();
      return n;
    }
    case 'bool': {
      if (typeof value === 'boolean') return value;
      if (value === 'true' || value === '1') return true;
      if (value === 'false' || value === '0') return false;
      throw bad();
    }
    case 'enum': {
      if (typeof value !== 'string' || !type.values.includes(value)) throw bad();
      return value;
    }
    case 'strings':
      throw bad(); // only in [[agent2389]] tables (checkStrings)
  }
}

/** An array of strings (`capabilities`), checked against its type. */
function checkStrings(key: ConfigKey, path: string, value: unknown, source: ConfigSource): readonly string[] {
  const type = key.type;
  const ok = type.kind === 'strings' && Array.isArray(value) && value.length <= type.max && value.every((v) => typeof v === 'string' && v !== '' && v.length <= type.itemMax);
  if (!ok) {
    const expected = describeType(type);
    throw configError(`${where(source)}: ${path}: expected ${expected}, got ${describeValue(value)}`, { field: path, expected, received: describeValue(value) });
  }
  return Object.freeze([...(value as string[])]);
}

/** One `[[agent2389]]` table, as the loader returns it: the runtime's agent options, resolved. */
export type Agent2389Config = ResolvedAgent2389;

/** The `[[agent2389]]` tables of a file: each key checked, unknown keys and missing required ones refused. */
function agentTables(raw: unknown, file: string, lines: Map<string, number>, env: Readonly<Record<string, string | undefined>>): Agent2389Config[] {
  const at = (line: number): ConfigSource => ({ kind: 'file', file, line });
  if (!Array.isArray(raw) || raw.some((t) => typeof t !== 'object' || t === null || Array.isArray(t))) {
    throw configError(`${where(at(lines.get('agent2389') ?? 0))}: agent2389: expected tables ([[agent2389]]), got ${describeValue(raw)}`, { field: 'agent2389', expected: 'an array of tables, [[agent2389]]', received: describeValue(raw) });
  }
  const seen = new Set<string>();
  return (raw as Record<string, unknown>[]).map((table, i) => {
    const source = at(lines.get(`agent2389[${i}]`) ?? 0);
    const values = new Map<string, unknown>();
    for (const [k, v] of Object.entries(table)) {
      const path = `agent2389[${i}].${k}`;
      const keySource = at(lines.get(path) ?? lines.get(`agent2389[${i}]`) ?? 0);
      const key = AGENT2389_KEYS.find((x) => x.path === k);
      if (key === undefined) {
        throw configError(`${where(keySource)}: ${path}: unknown key (known here: ${AGENT2389_KEYS.map((x) => x.path).join(', ')})`, { field: path, expected: 'a known key', received: describeValue(v) });
      }
      const named = { ...key, path };
      values.set(k, key.type.kind === 'strings' ? checkStrings(named, path, v, keySource) : check(named, typeof v === 'string' ? interpolate(v, env, named, keySource) : v, keySource));
    }
    for (const required of ['id', 'flow']) {
      if (!values.has(required)) {
        throw configError(`${where(source)}: agent2389[${i}].${required}: required, got nothing`, { field: `agent2389[${i}].${required}`, expected: describeType(AGENT2389_KEYS.find((x) => x.path === required)!.type), received: 'nothing' });
      }
    }
    const id = values.get('id') as string;
    if (seen.has(id)) throw configError(`${where(source)}: agent2389[${i}].id: ${id} is the id of another [[agent2389]] already`, { field: `agent2389[${i}].id`, expected: 'an id of its own', received: id });
    seen.add(id);
    const get = <T>(k: string): T => (values.has(k) ? values.get(k) : AGENT2389_KEYS.find((x) => x.path === k)!.default) as T;
    return Object.freeze({
      id,
      flow: values.get('flow') as string,
      capabilities: (values.get('capabilities') as readonly string[] | undefined) ?? Object.freeze([]),
      description: get<string>('description'),
      maxDepth: get<number>('max_depth'),
      heartbeatS: get<number>('heartbeat_s'),
      statusExpiryS: get<number>('status_expiry_s'),
      tenant: get<string>('tenant'),
      payload: get<'task' | 'input'>('payload'),
    });
  });
}

/** Dotted paths of the leaves of a parsed document (a table is never a leaf). */
function flatten(doc: Record<string, unknown>, prefix = ''): [string, unknown][] {
  const out: [string, unknown][] = [];
  for (const [k, v] of Object.entries(doc)) {
    const path = prefix === '' ? k : `${prefix}.${k}`;
    if (typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date)) out.push(...flatten(v as Record<string, unknown>, path));
    else out.push([path, v]);
  }
  return out;
}

/**
 * The line of each `key = value` of a TOML text, by dotted path: `[table]` headers, bare,
 * quoted and dotted keys. Only for error messages; a key this misses is reported by file alone.
 */
function keyLines(text: string): Map<string, number> {
  const lines = new Map<string, number>();
  const arrays = new Map<string, number>();
  let table = '';
  const unquote = (part: string): string => part.trim().replace(/^"(.*)"$|^'(.*)'$/, '$1$2');
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const header = /^\[\[?\s*([^\]]+?)\s*\]\]?/.exec(line);
    if (header !== null) {
      table = header[1]!.split('.').map(unquote).join('.');
      if (line.startsWith('[[')) {
        // An array of tables: `[[agent2389]]` number n is `agent2389[n]`.
        const n = arrays.get(table) ?? 0;
        arrays.set(table, n + 1);
        if (!lines.has(table)) lines.set(table, i + 1);
        table = `${table}[${n}]`;
        lines.set(table, i + 1);
      }
      return;
    }
    const assign = /^((?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*=/.exec(line);
    if (assign === null) return;
    const key = assign[1]!.split('.').map(unquote).join('.');
    const path = table === '' ? key : `${table}.${key}`;
    if (!lines.has(path)) lines.set(path, i + 1);
  });
  return lines;
}

/** A value as `roost config check` prints it: secrets hidden (a URL keeps all but its password). */
export function shownValue(key: ConfigKey, value: ConfigValue): string {
  if (value === null) return '(unset)';
  if (key.secret !== true || typeof value !== 'string') return typeof value === 'string' ? JSON.stringify(value) : String(value);
  // A URL keeps all but its password; any other secret is hidden whole.
  return URL.canParse(value) ? JSON.stringify(hidePassword(value)) : '"***"';
}

/** The resolved configuration as lines of `key = value  # source`, secrets hidden. */
export function describeConfig(config: ServiceConfig): string[] {
  const lines = [`# ${config.file === null ? 'no configuration file: defaults and the environment' : config.file}`];
  for (const key of CONFIG_KEYS) {
    const entry = config.values.get(key.path)!;
    lines.push(`${key.path} = ${shownValue(key, entry.value)}  # ${where(entry.source)}`);
  }
  config.agents2389.forEach((a, i) => {
    lines.push(
      `agent2389[${i}] = ${JSON.stringify({ id: a.id, flow: a.flow, capabilities: a.capabilities, description: a.description, max_depth: a.maxDepth, heartbeat_s: a.heartbeatS, status_expiry_s: a.statusExpiryS, tenant: a.tenant })}  # ${config.file ?? 'the file'}`,
    );
  });
  return lines;
}
