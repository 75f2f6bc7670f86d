/**
 * The service's configuration: every key of `roost.toml`, its type, default, range and the
 * environment variable that overrides it. One table drives loading (src/config/load.ts), the
 * printout of `roost config check` and the reference page (docs/reference/configuration.md, kept
 * in step by a test).
 */

/** What a key holds. */
export type ConfigType =
  | { readonly kind: 'string'; readonly min?: number; readonly max?: number; readonly pattern?: RegExp; readonly expected?: string }
  | { readonly kind: 'int'; readonly min: number; readonly max: number }
  | { readonly kind: 'bool' }
  | { readonly kind: 'enum'; readonly values: readonly string[] }
  | { readonly kind: 'strings'; readonly max: number; readonly itemMax: number };

/** One key of the configuration. */
export interface ConfigKey {
  /** Dotted path: `http.port`. */
  readonly path: string;
  readonly type: ConfigType;
  /** The value when neither the file nor the environment sets it (null: unset). */
  readonly default: string | number | boolean | null;
  /** The environment variable that overrides the file, if any. */
  readonly env?: string;
  /** Printed as `***` by `roost config check` (URLs: only their password). */
  readonly secret?: boolean;
  readonly doc: string;
}

const MAX_MS = 2_147_483_647;
/** A comma-separated list of `flow/node` names. */
const NODE_LIST = /^\s*[A-Za-z0-9._-]{1,64}\/[A-Za-z0-9._-]{1,64}(\s*,\s*[A-Za-z0-9._-]{1,64}\/[A-Za-z0-9._-]{1,64})*\s*$/;
const PORT = { kind: 'int', min: 0, max: 65_535 } as const;

/** Every key, in the order `roost config check` prints them. */
export const CONFIG_KEYS: readonly ConfigKey[] = [
  {
    path: 'app',
    type: { kind: 'string', min: 1, max: 4096, expected: 'a path to a module (.js, .mjs or .ts) exporting a function of the runtime' },
    default: null,
    env: 'ROOST_APP',
    doc: 'the application: a module whose default export (or `setup` export) receives the runtime and adds its agents and flows. Relative to the config file. TypeScript is loaded through tsx',
  },
  { path: 'http.host', type: { kind: 'string', min: 1, max: 255 }, default: '127.0.0.1', env: 'ROOST_HTTP_HOST', doc: 'the address the HTTP API listens on (`0.0.0.0` for every interface)' },
  { path: 'http.port', type: PORT, default: 8080, env: 'ROOST_HTTP_PORT', doc: 'the port of the HTTP API (0: any free port, printed at start)' },
  {
    path: 'http.health_port',
    type: PORT,
    default: null,
    env: 'ROOST_HEALTH_PORT',
    doc: 'serve the health probes (and `/metrics`) on a port of their own, too; unset: only on `http.port`',
  },
  { path: 'http.body_limit_bytes', type: { kind: 'int', min: 1_024, max: 64 * 1024 * 1024 }, default: 1_048_576, env: 'ROOST_HTTP_BODY_LIMIT_BYTES', doc: 'largest request body; more is refused with 413' },
  { path: 'http.request_timeout_ms', type: { kind: 'int', min: 1_000, max: MAX_MS }, default: 60_000, doc: 'a request that takes longer is cut off by the server' },
  { path: 'http.wait_max_ms', type: { kind: 'int', min: 0, max: 600_000 }, default: 30_000, doc: 'longest `?wait=` a task submission may ask for' },
  {
    path: 'admission.max_concurrent_tasks',
    type: { kind: 'int', min: 1, max: 1_000_000 },
    default: 1_000,
    env: 'ROOST_MAX_CONCURRENT_TASKS',
    doc: 'traces in flight in this process, across tenants (submitted through the API, resumed from the journal or emitted by the application), at which a new API submission is refused with 429 and `Retry-After`: the soft limit below `runtime.max_in_flight_traces`, the hard one of the runtime',
  },
  { path: 'admission.tenant_rate', type: { kind: 'int', min: 0, max: 1_000_000 }, default: 0, env: 'ROOST_TENANT_RATE', doc: 'task submissions per second per tenant (a token bucket; 0: no rate limit); over it, 429 and `Retry-After`' },
  { path: 'admission.tenant_burst', type: { kind: 'int', min: 1, max: 1_000_000 }, default: 100, env: 'ROOST_TENANT_BURST', doc: 'the token bucket of each tenant: submissions it may make at once' },
  {
    path: 'store.url',
    type: { kind: 'string', min: 1, max: 4096, expected: 'memory:, sqlite:<path> or postgres://…' },
    default: 'sqlite:.roost/roost.db',
    env: 'ROOST_STORE_URL',
    secret: true,
    doc: 'the journal (a relative `sqlite:` path is relative to the working directory; `memory:` keeps nothing across restarts and at most 10,000 finished traces, `memory:?max_finished_traces=N`)',
  },
  { path: 'store.timeout_ms', type: { kind: 'int', min: 10, max: MAX_MS }, default: 5_000, env: 'ROOST_STORE_TIMEOUT_MS', doc: 'every store operation fails after this long (the runtime option `storeTimeoutMs`)' },
  { path: 'store.journal_events', type: { kind: 'enum', values: ['state', 'all', 'none'] }, default: 'state', doc: 'which events the journal keeps (the runtime option `journalEvents`)' },
  { path: 'runtime.owner', type: { kind: 'string', min: 1, max: 200 }, default: null, env: 'ROOST_OWNER', doc: 'this process as the owner of its traces (a stable name, such as a pod name; default: host, pid and a random suffix)' },
  { path: 'runtime.max_payload_bytes', type: { kind: 'int', min: 1, max: 64 * 1024 * 1024 }, default: 262_144, doc: 'largest task payload (the runtime option `maxPayloadBytes`)' },
  { path: 'runtime.max_in_flight_traces', type: { kind: 'int', min: 1, max: 10_000_000 }, default: 10_000, doc: 'traces in flight across flows (`limits.maxInFlightTraces`)' },
  { path: 'runtime.drain_timeout_ms', type: { kind: 'int', min: 0, max: MAX_MS }, default: 30_000, doc: 'graceful drain of `close()` (`drainTimeoutMs`)' },
  { path: 'runtime.results_ttl_ms', type: { kind: 'int', min: 1, max: MAX_MS }, default: 300_000, doc: 'how long a finished trace stays in memory for `fetch` (`results.ttlMs`)' },
  { path: 'log.level', type: { kind: 'enum', values: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] }, default: 'info', env: 'LOG_LEVEL', doc: 'the least severe level written' },
  { path: 'log.format', type: { kind: 'enum', values: ['json', 'text'] }, default: 'json', env: 'LOG_FORMAT', doc: '`json` lines for machines, `text` for people' },
  { path: 'log.payloads', type: { kind: 'bool' }, default: false, env: 'LOG_PAYLOADS', doc: 'write task payloads and results into log lines (off: they are left out)' },
  {
    path: 'log.correlate',
    type: { kind: 'bool' },
    default: true,
    env: 'LOG_CORRELATE',
    doc: 'every line written while a handler runs carries `traceId`, `tenant`, `flow` and `node` (through AsyncLocalStorage; on Node 20 this costs every promise a little)',
  },
  { path: 'shutdown.grace_ms', type: { kind: 'int', min: 0, max: MAX_MS }, default: 30_000, env: 'ROOST_SHUTDOWN_GRACE_MS', doc: 'on SIGTERM or SIGINT, how long work in flight may drain before it is cut off (a second signal cuts it off at once)' },
  { path: 'websocket.first_frame_timeout_ms', type: { kind: 'int', min: 100, max: MAX_MS }, default: 15_000, doc: 'a WebSocket client must send its first frame within this long' },
  { path: 'websocket.ping_interval_ms', type: { kind: 'int', min: 100, max: MAX_MS }, default: 15_000, doc: 'the server pings every client this often; one that has not answered the last ping is closed' },
  { path: 'websocket.max_buffered_bytes', type: { kind: 'int', min: 1_024, max: 1024 * 1024 * 1024 }, default: 1_048_576, doc: 'a client whose unsent frames exceed this is too slow: it is closed (code 1013)' },
  {
    path: 'fleet.transport',
    type: { kind: 'string', min: 1, max: 4096, pattern: /^(mqtts?|nats|tls|jetstreams?):\/\//, expected: 'a broker URL: mqtt://, mqtts://, nats://, tls://, jetstream:// or jetstreams://' },
    default: null,
    env: 'ROOST_FLEET_TRANSPORT',
    secret: true,
    doc: 'join a fleet of processes over this broker (unset: no fleet, every node runs here); credentials may be in the URL',
  },
  { path: 'fleet.namespace', type: { kind: 'string', pattern: /^[A-Za-z0-9_-]{1,64}$/, expected: '1 to 64 letters, digits, _ and -' }, default: 'roost', env: 'ROOST_FLEET_NAMESPACE', doc: 'the first segment of every fleet topic: fleets in different namespaces never meet on one broker' },
  { path: 'fleet.id', type: { kind: 'string', pattern: /^[A-Za-z0-9._-]{1,64}$/, expected: 'a name of 1 to 64 letters, digits, . _ and -' }, default: null, env: 'ROOST_FLEET_ID', doc: 'this process in the fleet (default: `runtime.owner` made a name)' },
  {
    path: 'fleet.remote',
    type: { kind: 'string', max: 65_536, pattern: NODE_LIST, expected: 'comma-separated `flow/node` names' },
    default: null,
    env: 'ROOST_FLEET_REMOTE',
    doc: 'nodes whose runs this process sends to the fleet\'s workers (`roost serve`)',
  },
  {
    path: 'fleet.host',
    type: { kind: 'string', max: 65_536, pattern: NODE_LIST, expected: 'comma-separated `flow/node` names' },
    default: null,
    env: 'ROOST_FLEET_HOST',
    doc: 'nodes this process runs for the fleet (`roost worker`, or `roost serve` for both; `roost worker --nodes` overrides it)',
  },
  { path: 'fleet.lease_ms', type: { kind: 'int', min: 50, max: MAX_MS }, default: 10_000, env: 'ROOST_FLEET_LEASE_MS', doc: 'how long a worker holds a task without a heartbeat before the owner sends it again (workers beat every third of it)' },
  { path: 'fleet.heartbeat_ms', type: { kind: 'int', min: 10, max: 86_399_999 }, default: 5_000, env: 'ROOST_FLEET_HEARTBEAT_MS', doc: 'how often this process writes its presence record (who it is, its agents, load and status)' },
  {
    path: 'fleet.presence_expiry_ms',
    type: { kind: 'int', min: 11, max: 86_400_000 },
    default: null,
    env: 'ROOST_FLEET_PRESENCE_EXPIRY_MS',
    doc: 'how long a presence record counts without a heartbeat (unset: 3 × `fleet.heartbeat_ms`); a process silent for longer drops out of the registry',
  },
  { path: 'fleet.max_in_flight', type: { kind: 'int', min: 1, max: 1_000_000 }, default: 256, env: 'ROOST_FLEET_MAX_IN_FLIGHT', doc: 'envelopes of one remote node out with workers at once, from this process' },
  { path: 'fleet.max_queued', type: { kind: 'int', min: 0, max: 1_000_000 }, default: 1_024, env: 'ROOST_FLEET_MAX_QUEUED', doc: 'tasks a worker holds per node beyond those running; past it, it answers `busy` and the owner sends the task elsewhere' },
  {
    path: 'fleet.routing',
    type: { kind: 'enum', values: ['registry', 'group'] },
    default: 'registry',
    env: 'ROOST_FLEET_ROUTING',
    doc: "`registry`: a remote node's first delivery goes to the least-loaded healthy worker presence shows for it; `group`: the broker picks a member of the node's worker group",
  },
  {
    path: 'protocol2389.broker',
    type: { kind: 'string', min: 1, max: 4096, pattern: /^mqtts?:\/\/[^\s]+$/, expected: 'an MQTT broker URL: mqtt://host:port or mqtts://host:port' },
    default: null,
    env: 'ROOST_2389_BROKER',
    secret: true,
    doc: 'the broker the 2389 Agent Protocol runs on (unset: `fleet.transport` when it is an MQTT URL); credentials may be in the URL',
  },
  { path: 'protocol2389.health_port', type: PORT, default: null, env: 'ROOST_2389_HEALTH_PORT', doc: 'serve the 2389-shaped `/health`, `/ready`, `/live` and JSON `/metrics` on this port (8080 is the 2389 convention; unset: off)' },
  { path: 'protocol2389.health_host', type: { kind: 'string', min: 1, max: 255 }, default: '127.0.0.1', env: 'ROOST_2389_HEALTH_HOST', doc: 'the address the 2389 health server listens on' },
  { path: 'protocol2389.registry_expiry_ms', type: { kind: 'int', min: 100, max: 86_400_000 }, default: 15_000, doc: 'a 2389 agent counts as gone from the registry this long after its last status message' },
  {
    path: 'sse.buffer_events',
    type: { kind: 'int', min: 16, max: 10_000_000 },
    default: 65_536,
    doc: 'the most recent trace events kept (across traces) for streaming clients that connect late or reconnect (`Last-Event-ID`); older ones are in the history',
  },
];

/**
 * The keys of each `[[agent2389]]` table (a flow exposed as a 2389 agent), by their path inside
 * it. The tables form an array, so these are not in {@link CONFIG_KEYS}; no environment variable
 * sets them.
 */
export const AGENT2389_KEYS: readonly ConfigKey[] = [
  { path: 'id', type: { kind: 'string', pattern: /^[A-Za-z0-9._-]{1,64}$/, expected: 'an agent id of 1 to 64 letters, digits, . _ and -' }, default: null, doc: 'the agent id (required): its topics are `/control/agents/{id}/input` and `/status`' },
  { path: 'flow', type: { kind: 'string', pattern: /^[A-Za-z0-9._-]{1,64}$/, expected: 'the name of a flow of the app' }, default: null, doc: 'the flow each task starts a trace of (required)' },
  { path: 'capabilities', type: { kind: 'strings', max: 64, itemMax: 128 }, default: null, doc: 'told in the status message; routers pick agents by them' },
  { path: 'description', type: { kind: 'string', max: 1024 }, default: '', doc: 'told in the status message' },
  { path: 'max_depth', type: { kind: 'int', min: 0, max: 1024 }, default: 16, doc: 'the deepest `next` chain taken; deeper is answered with `pipeline_depth_exceeded`' },
  { path: 'heartbeat_s', type: { kind: 'int', min: 1, max: 3600 }, default: 5, doc: 'seconds between republishing the `available` status' },
  { path: 'status_expiry_s', type: { kind: 'int', min: 1, max: 4_294_967_295 }, default: 3600, doc: 'the MQTT 5 message expiry of the status messages' },
  { path: 'tenant', type: { kind: 'string', pattern: /^[A-Za-z0-9._-]{1,64}$/, expected: 'a tenant name' }, default: 'default', doc: 'the tenant the traces run under' },
  { path: 'payload', type: { kind: 'enum', values: ['task', 'input'] }, default: 'task', doc: "what the flow gets: `task` the task's `{task_id, conversation_id, topic, instruction, input, context?, routing_trace?}`, `input` its `input` alone (a flow written for that input, exposed unchanged)" },
];

/** The keys by path. */
export const CONFIG_BY_PATH: ReadonlyMap<string, ConfigKey> = new Map(CONFIG_KEYS.map((k) => [k.path, k]));

/** What a key's value must be, in words (for errors and the docs). */
export function describeType(type: ConfigType): string {
  switch (type.kind) {
    case 'string':
      return type.expected ?? (type.max === undefined ? 'a string' : `a string of ${type.min ?? 0} to ${type.max} characters`);
    case 'int':
      return `an integer from ${type.min} to ${type.max}`;
    case 'bool':
      return 'true or false';
    case 'enum':
      return `one of ${type.values.join(', ')}`;
    case 'strings':
      return `an array of at most ${type.max} non-empty strings of up to ${type.itemMax} characters`;
  }
}
