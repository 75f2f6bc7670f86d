/**
 * `roost monitor`: watches an MQTT broker live and prints its 2389 Agent Protocol traffic —
 * statuses, task envelopes, responses, errors and progress — from Roost agents and foreign ones
 * alike (it relies on the wire format only; reading a message is monitor-format.ts).
 *
 * - One MQTT 5 connection, a clean session, client id `roost-monitor-<random>`, QoS 1
 *   subscriptions chosen by `--mode` and narrowed by `--agent-id` / `--conversation-id` where the
 *   topic allows; what the topic cannot narrow (an input's conversation is in its payload) is
 *   filtered here. After the first connect it reconnects by itself (the session is clean, so the
 *   subscriptions are made again and the retained statuses arrive again, marked `retained`).
 * - It runs until SIGINT or SIGTERM (the `signal` of its io), `--count` printed messages or
 *   `--duration-ms`, then disconnects and exits 0. Exit 1 when the broker cannot be reached or
 *   refuses a subscription, 2 on bad usage.
 * - `--conversation-id`: a status names no conversation, so statuses are not watched then (and
 *   `--mode availability` with it is bad usage); progress passes when its payload names that
 *   conversation.
 * - The password (`--password`, else `$MQTT_PASSWORD`) is never printed; a URL is shown without it.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { ensureError } from '../errors.js';
import { hidePassword } from '../redact.js';
import { classify, formatCompact, formatJson, formatPretty, passes, type MonitorFilters, type MonitorMessage } from './monitor-format.js';
import { firstConnect } from '../transport/mqtt.js';

/** What `--mode` watches. */
export const MONITOR_MODES = ['all', 'availability', 'conversations', 'inputs', 'progress'] as const;
/** How `--format` prints. */
export const MONITOR_FORMATS = ['pretty', 'compact', 'json'] as const;
export type MonitorMode = (typeof MONITOR_MODES)[number];
export type MonitorFormat = (typeof MONITOR_FORMATS)[number];

/** The broker when neither `--broker`, `--broker-host`/`--broker-port` nor `$ROOST_2389_BROKER` names one. */
export const DEFAULT_MONITOR_BROKER = 'mqtt://localhost:1883';
/** How long the first connect may take before the monitor gives up (exit 1). */
export const MONITOR_CONNECT_TIMEOUT_MS = 5_000;
/** The reconnect period once connected: a monitor keeps watching through a broker restart. */
const RECONNECT_MS = 1_000;
/**
 * The largest packet the monitor accepts (told to the broker at connect). Above the 2389 cap of
 * 256 KiB on purpose, so an oversized message is still seen (and shown as invalid), but bounded:
 * one message never takes more memory than this.
 */
const MAX_PACKET_BYTES = 16 * 1024 * 1024;
/** How long a clean disconnect may take before the socket is dropped. */
const DISCONNECT_GRACE_MS = 2_000;
/** 2389 agent ids. */
const AGENT_ID = /^[A-Za-z0-9._-]+$/;

/** The arguments of `roost monitor`, as given on the command line. */
export interface MonitorArgs {
  readonly mode?: string | undefined;
  readonly format?: string | undefined;
  readonly agentId?: string | undefined;
  readonly conversationId?: string | undefined;
  readonly broker?: string | undefined;
  readonly brokerHost?: string | undefined;
  readonly brokerPort?: string | undefined;
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  readonly tls?: boolean | undefined;
  readonly ca?: string | undefined;
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
  readonly durationMs?: string | undefined;
  readonly count?: string | undefined;
}

/** Where it reads and writes, and what stops it. */
export interface MonitorIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  out(line: string): void;
  err(line: string): void;
  /** Aborted on SIGINT / SIGTERM: the monitor disconnects and resolves 0. */
  readonly signal?: AbortSignal;
}

/** The validated arguments. */
export interface ResolvedMonitorOptions {
  readonly mode: MonitorMode;
  readonly format: MonitorFormat;
  readonly filters: MonitorFilters;
  /** The broker URL (credentials in it are kept; show it with `hidePassword`). */
  readonly url: string;
  readonly username: string | undefined;
  readonly password: string | undefined;
  readonly tls: { readonly ca?: string; readonly cert?: string; readonly key?: string } | null;
  readonly durationMs: number | null;
  readonly count: number | null;
}

/** Bad usage: exit 2 with this message. */
class MonitorUsageError extends Error {}

const usage = (message: string): never => {
  throw new MonitorUsageError(message);
};

function oneOf<T extends string>(flag: string, value: string | undefined, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  return usage(`${flag}: expected one of ${allowed.join(', ')}, got ${JSON.stringify(value)}`);
}

function positiveInt(flag: string, value: string | undefined, max: number): number | null {
  if (value === undefined) return null;
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1 || n > max) usage(`${flag}: expected an integer from 1 to ${max}, got ${JSON.stringify(value)}`);
  return n;
}

/** Validates the arguments (and reads the TLS files); throws a usage error naming the flag. */
export function resolveMonitorOptions(args: MonitorArgs, env: Readonly<Record<string, string | undefined>>): ResolvedMonitorOptions {
  const mode = oneOf('--mode', args.mode, MONITOR_MODES, 'all');
  const format = oneOf('--format', args.format, MONITOR_FORMATS, 'pretty');
  if (args.agentId !== undefined && !AGENT_ID.test(args.agentId)) usage(`--agent-id: expected a 2389 agent id ([A-Za-z0-9._-]+), got ${JSON.stringify(args.agentId)}`);
  const cid = args.conversationId;
  if (cid !== undefined && (cid === '' || /[+#]/.test(cid) || cid.includes('\u0000') || cid.startsWith('/') || cid.endsWith('/') || cid.includes('//'))) {
    usage(`--conversation-id: expected a conversation id (no MQTT wildcards + or #, no empty topic levels), got ${JSON.stringify(cid)}`);
  }
  if (cid !== undefined && mode === 'availability') usage('--conversation-id: statuses name no conversation, so --mode availability shows nothing with it (use --agent-id)');
  const tls = args.tls === true;
  let url: string;
  if (args.broker !== undefined) {
    if (args.brokerHost !== undefined || args.brokerPort !== undefined) usage('--broker and --broker-host/--broker-port are alternatives: give one');
    url = args.broker;
  } else if (args.brokerHost !== undefined || args.brokerPort !== undefined) {
    const host = args.brokerHost ?? 'localhost';
    if (host === '' || /[\s/@?#]/.test(host)) usage(`--broker-host: expected a host name or address, got ${JSON.stringify(host)}`);
    const port = positiveInt('--broker-port', args.brokerPort, 65_535) ?? (tls ? 8883 : 1883);
    url = `${tls ? 'mqtts' : 'mqtt'}://${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`;
  } else {
    const fromEnv = env['ROOST_2389_BROKER'];
    url = fromEnv !== undefined && fromEnv !== '' ? fromEnv : tls ? 'mqtts://localhost:8883' : DEFAULT_MONITOR_BROKER;
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return usage(`--broker: expected an mqtt:// or mqtts:// URL, got ${JSON.stringify(hidePassword(url))}`);
  }
  if (parsed.protocol !== 'mqtt:' && parsed.protocol !== 'mqtts:') usage(`--broker: expected an mqtt:// or mqtts:// URL, got ${JSON.stringify(hidePassword(url))}`);
  const secure = parsed.protocol === 'mqtts:';
  if (tls && !secure) usage(`--tls: the broker URL ${hidePassword(url)} is not TLS: use mqtts://`);
  const files: { ca?: string; cert?: string; key?: string } = {};
  for (const [flag, value, into] of [['--ca', args.ca, 'ca'], ['--cert', args.cert, 'cert'], ['--key', args.key, 'key']] as const) {
    if (value === undefined) continue;
    if (!secure) usage(`${flag}: TLS is off (give --tls, or an mqtts:// broker URL)`);
    try {
      files[into] = readFileSync(value, 'utf8');
    } catch (error) {
      usage(`${flag}: cannot read ${value} (${ensureError(error).message})`);
    }
  }
  if ((files.cert === undefined) !== (files.key === undefined)) usage('--cert and --key go together (a client certificate and its key)');
  const username = args.username ?? nonEmpty(env['MQTT_USERNAME']);
  const password = args.password ?? nonEmpty(env['MQTT_PASSWORD']);
  return Object.freeze({
    mode,
    format,
    filters: Object.freeze({ ...(args.agentId === undefined ? {} : { agentId: args.agentId }), ...(cid === undefined ? {} : { conversationId: cid }) }),
    url,
    username,
    password,
    tls: secure ? Object.freeze(files) : null,
    durationMs: positiveInt('--duration-ms', args.durationMs, 2_147_483_647),
    count: positiveInt('--count', args.count, Number.MAX_SAFE_INTEGER),
  });
}

const nonEmpty = (v: string | undefined): string | undefined => (v === undefined || v === '' ? undefined : v);

/**
 * The subscriptions of a mode, narrowed by the filters where the topic can say it. Progress is
 * one `…/progress/#`: in MQTT that matches `…/progress` itself too, and a second, overlapping
 * filter would have the broker deliver such a message twice.
 */
export function monitorSubscriptions(mode: MonitorMode, filters: MonitorFilters): string[] {
  const agent = filters.agentId ?? '+';
  const cid = filters.conversationId;
  const out: string[] = [];
  if ((mode === 'all' || mode === 'availability') && cid === undefined) out.push(`/control/agents/${agent}/status`);
  if (mode === 'all' || mode === 'inputs') out.push(`/control/agents/${agent}/input`);
  if (mode === 'all' || mode === 'conversations') {
    // A conversation id with '/' in it spans levels: the agent is the last level, so only both
    // together make an exact topic; otherwise the filter below does the rest.
    out.push(cid === undefined ? '/conversations/#' : filters.agentId === undefined ? `/conversations/${cid}/#` : `/conversations/${cid}/${filters.agentId}`);
  }
  if (mode === 'all' || mode === 'progress') out.push(`/control/agents/${agent}/progress/#`);
  return out;
}

/** host:port of a broker URL, for messages. */
function hostPort(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port === '' ? (u.protocol === 'mqtts:' ? 8883 : 1883) : u.port}`;
  } catch {
    return hidePassword(url);
  }
}

/** Why a first connect failed, in words, with what to check. */
function connectProblem(error: Error, url: string, tls: boolean): string {
  const code = (error as NodeJS.ErrnoException).code;
  const where = hostPort(url);
  const reason = error.message !== '' ? error.message : (code ?? error.name);
  if (code === 'ECONNREFUSED') return `nothing accepts connections at ${where} (${reason})`;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `the host of ${where} is not known (${reason})`;
  if (/not authori[sz]ed|bad user ?name or password/i.test(reason)) return `the broker at ${where} refused the credentials (${reason}): check --username and --password ($MQTT_USERNAME, $MQTT_PASSWORD)`;
  if (tls && /certificate|self.signed|SSL|TLS|handshake|alert/i.test(`${reason} ${code ?? ''}`)) {
    return `TLS to ${where} failed (${reason}): check --ca, and --cert/--key if the broker requires a client certificate`;
  }
  return `${where}: ${reason}`;
}

/** Runs `roost monitor`; resolves with the exit code. */
export async function monitorCommand(args: MonitorArgs, io: MonitorIo): Promise<number> {
  let options: ResolvedMonitorOptions;
  try {
    options = resolveMonitorOptions(args, io.env);
  } catch (error) {
    if (error instanceof MonitorUsageError) {
      io.err(`monitor: ${error.message}`);
      return 2;
    }
    throw error;
  }
  if (io.signal?.aborted === true) return 0;
  const shown = hidePassword(options.url);
  const filters = monitorSubscriptions(options.mode, options.filters);
  const clientOptions: IClientOptions = {
    protocolVersion: 5,
    clean: true,
    clientId: `roost-monitor-${randomUUID().slice(0, 12)}`,
    connectTimeout: MONITOR_CONNECT_TIMEOUT_MS,
    reconnectPeriod: 0, // the first connect fails for good; after it, RECONNECT_MS
    properties: { maximumPacketSize: MAX_PACKET_BYTES },
    ...(options.username === undefined ? {} : { username: options.username }),
    ...(options.password === undefined ? {} : { password: options.password }),
    ...(options.tls === null ? {} : { ...options.tls, rejectUnauthorized: true }),
  };
  const client = mqtt.connect(options.url, clientOptions);
  // Until the connect settles, errors go to firstConnect; a listener keeps a late one from throwing.
  client.on('error', () => {});
  const aborted = new Promise<void>((resolve) => io.signal?.addEventListener('abort', () => resolve(), { once: true }));
  try {
    const connected = firstConnect(client, MONITOR_CONNECT_TIMEOUT_MS + 1_000);
    const first = await Promise.race([connected.then(() => 'connected' as const), aborted.then(() => 'aborted' as const)]);
    connected.catch(() => {});
    if (first === 'aborted') {
      client.end(true);
      return 0;
    }
  } catch (error) {
    client.end(true);
    io.err(`monitor: cannot connect to ${shown}: ${connectProblem(ensureError(error), options.url, options.tls !== null)}`);
    return 1;
  }

  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  void aborted.then(() => stop());
  let printed = 0;
  let done = false;
  const print = (m: MonitorMessage): void => {
    if (options.format === 'json') io.out(formatJson(m));
    else if (options.format === 'compact') io.out(formatCompact(m));
    else for (const line of formatPretty(m)) io.out(line);
  };
  client.on('message', (topic, payload, packet) => {
    if (done) return;
    const m = classify(topic, payload, { receivedAt: Date.now(), retained: packet.retain, expirySeconds: packet.properties?.messageExpiryInterval });
    if (!passes(m, options.filters)) return;
    print(m);
    if (options.count !== null && ++printed >= options.count) stop();
  });

  try {
    const results = await Promise.allSettled(filters.map((filter) => client.subscribeAsync(filter, { qos: 1 })));
    const refused = results.findIndex((r) => r.status === 'rejected');
    if (refused >= 0) {
      const reason = ensureError((results[refused] as PromiseRejectedResult).reason).message;
      io.err(`monitor: the broker at ${hostPort(options.url)} refused the subscription to ${filters[refused]}: ${reason}`);
      return 1;
    }
    io.err(
      `monitor: watching ${shown} (mode ${options.mode}${options.filters.agentId === undefined ? '' : `, agent ${options.filters.agentId}`}${
        options.filters.conversationId === undefined ? '' : `, conversation ${options.filters.conversationId}`
      }): ${filters.join(' ')}`,
    );
    // From here on a lost connection is retried; say so once per outage.
    client.options.reconnectPeriod = RECONNECT_MS;
    let down = false;
    client.on('close', () => {
      if (done || down) return;
      down = true;
      io.err(`monitor: the connection to ${hostPort(options.url)} was lost; reconnecting every ${RECONNECT_MS} ms`);
    });
    client.on('connect', () => {
      if (!down) return;
      down = false;
      io.err(`monitor: reconnected to ${shown}`);
    });
    const timer = options.durationMs === null ? null : setTimeout(stop, options.durationMs);
    await stopped;
    if (timer !== null) clearTimeout(timer);
    return 0;
  } finally {
    done = true;
    await disconnect(client);
  }
}

/** A clean DISCONNECT, or the socket dropped when that takes longer than the grace. */
async function disconnect(client: MqttClient): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), DISCONNECT_GRACE_MS)));
  const ended = client.endAsync().then(
    () => 'ended' as const,
    () => 'late' as const,
  );
  if ((await Promise.race([ended, late])) === 'late') client.end(true);
  clearTimeout(timer);
}
