/** The `protocol2389` runtime option: checked, with its defaults, and frozen. */
import { invalidOption } from '../errors.js';
import { NAME_PATTERN } from '../envelope/names.js';
import type { TransportTlsOptions } from '../transport/base.js';
import { checkObject, optEnum, optInt } from '../validate-options.js';
import { DEFAULT_MAX_DEPTH, isAgentId } from './wire.js';

/** A flow exposed as a 2389 agent. */
export interface Agent2389Options {
  /** The agent id (`[A-Za-z0-9._-]`, 1 to 64): its topics are `/control/agents/{id}/…`. */
  readonly id: string;
  /** The flow each task starts a trace of. */
  readonly flow: string;
  /** Told in the status message (routers pick agents by them). */
  readonly capabilities?: readonly string[];
  readonly description?: string;
  /** The deepest `next` chain taken (default 16); deeper: `pipeline_depth_exceeded`. */
  readonly maxDepth?: number;
  /** Seconds between status heartbeats (default 5). */
  readonly heartbeatS?: number;
  /** The MQTT 5 message expiry of the status messages, seconds (default 3600). */
  readonly statusExpiryS?: number;
  /** The tenant the traces run under (default `default`). */
  readonly tenant?: string;
  /**
   * What the flow gets as its payload: `task` (default) the task's `{task_id, conversation_id,
   * topic, instruction, input, context?, routing_trace?}`; `input` the task's `input` alone, so a
   * flow written for that input is exposed unchanged (the instruction is then in the
   * `a2389-instruction` header when it fits one).
   */
  readonly payload?: 'task' | 'input';
}

/** The 2389 Agent Protocol over MQTT (src/protocol2389). */
export interface Protocol2389Options {
  /** The broker: `mqtt://host:port` or `mqtts://…`; credentials may be in it. */
  readonly broker: string;
  readonly tls?: TransportTlsOptions;
  /** Flows exposed as 2389 agents (none: this process only sends tasks to 2389 agents). */
  readonly agents?: readonly Agent2389Options[];
  /** How long a 2389 agent counts as available without a status message, ms (default 15,000). */
  readonly registryExpiryMs?: number;
  /** The 2389-shaped health server (`/health`, `/ready`, `/live`, `/metrics`); off when absent. */
  readonly health?: { readonly port: number; readonly host?: string };
  /** How long the first connection may take, ms (default 5,000). */
  readonly connectTimeoutMs?: number;
  /** MQTT keepalive, seconds (default 30: the broker sends the last will after 1.5 × this of silence). */
  readonly keepaliveSeconds?: number;
}

export interface ResolvedAgent2389 {
  readonly id: string;
  readonly flow: string;
  readonly capabilities: readonly string[];
  readonly description: string;
  readonly maxDepth: number;
  readonly heartbeatS: number;
  readonly statusExpiryS: number;
  readonly tenant: string;
  readonly payload: 'task' | 'input';
}

export interface ResolvedProtocol2389 {
  readonly broker: string;
  readonly tls: TransportTlsOptions | undefined;
  readonly agents: readonly ResolvedAgent2389[];
  readonly registryExpiryMs: number;
  readonly health: { readonly port: number; readonly host: string } | null;
  readonly connectTimeoutMs: number;
  readonly keepaliveSeconds: number;
}

const NAME = new RegExp(NAME_PATTERN);

function optString(field: string, obj: Record<string, unknown>, key: string, max: number, fallback: string): string {
  const value = obj[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || value.length > max) throw invalidOption(`${field}.${key}`, `a string of at most ${max} characters`, value);
  return value;
}

export function resolveProtocol2389(raw: unknown): ResolvedProtocol2389 {
  const field = 'protocol2389';
  const o = checkObject(field, raw, ['broker', 'tls', 'agents', 'registryExpiryMs', 'health', 'connectTimeoutMs', 'keepaliveSeconds']);
  const broker = o['broker'];
  if (typeof broker !== 'string' || !/^mqtts?:\/\//.test(broker) || !URL.canParse(broker)) {
    throw invalidOption(`${field}.broker`, 'an MQTT broker URL (mqtt://host:port or mqtts://host:port)', broker);
  }
  const tls = o['tls'] === undefined ? undefined : (checkObject(`${field}.tls`, o['tls'], ['caFile', 'certFile', 'keyFile']) as TransportTlsOptions);
  const agentsRaw = o['agents'] ?? [];
  if (!Array.isArray(agentsRaw)) throw invalidOption(`${field}.agents`, 'an array of agents', agentsRaw);
  const seen = new Set<string>();
  const agents = agentsRaw.map((a: unknown, i: number): ResolvedAgent2389 => {
    const f = `${field}.agents[${i}]`;
    const ao = checkObject(f, a, ['id', 'flow', 'capabilities', 'description', 'maxDepth', 'heartbeatS', 'statusExpiryS', 'tenant', 'payload']);
    if (!isAgentId(ao['id'])) throw invalidOption(`${f}.id`, 'an agent id of 1 to 64 letters, digits, . _ and -', ao['id']);
    if (seen.has(ao['id'])) throw invalidOption(`${f}.id`, 'an id no other agent of this process has', ao['id']);
    seen.add(ao['id']);
    if (typeof ao['flow'] !== 'string' || !NAME.test(ao['flow'])) throw invalidOption(`${f}.flow`, 'the name of a flow', ao['flow']);
    const caps = ao['capabilities'] ?? [];
    if (!Array.isArray(caps) || caps.some((c) => typeof c !== 'string' || c === '' || c.length > 128) || caps.length > 64) {
      throw invalidOption(`${f}.capabilities`, 'an array of at most 64 non-empty strings of up to 128 characters', caps);
    }
    const tenant = optString(f, ao, 'tenant', 64, 'default');
    if (!NAME.test(tenant)) throw invalidOption(`${f}.tenant`, 'a tenant name', tenant);
    return Object.freeze({
      id: ao['id'],
      flow: ao['flow'],
      capabilities: Object.freeze([...(caps as string[])]),
      description: optString(f, ao, 'description', 1024, ''),
      maxDepth: optInt(f, ao, 'maxDepth', 0, 1024, DEFAULT_MAX_DEPTH),
      heartbeatS: optInt(f, ao, 'heartbeatS', 1, 3600, 5),
      statusExpiryS: optInt(f, ao, 'statusExpiryS', 1, 4_294_967_295, 3600),
      tenant,
      payload: optEnum(f, ao, 'payload', ['task', 'input'] as const, 'task'),
    });
  });
  let health: ResolvedProtocol2389['health'] = null;
  if (o['health'] !== undefined) {
    const h = checkObject(`${field}.health`, o['health'], ['port', 'host']);
    const port = optInt(`${field}.health`, h, 'port', 0, 65_535, -1);
    if (port < 0) throw invalidOption(`${field}.health.port`, 'a port from 0 to 65535', h['port']);
    health = Object.freeze({ port, host: optString(`${field}.health`, h, 'host', 255, '127.0.0.1') });
  }
  return Object.freeze({
    broker,
    tls,
    agents: Object.freeze(agents),
    registryExpiryMs: optInt(field, o, 'registryExpiryMs', 100, 86_400_000, 15_000),
    health,
    connectTimeoutMs: optInt(field, o, 'connectTimeoutMs', 100, 600_000, 5_000),
    keepaliveSeconds: optInt(field, o, 'keepaliveSeconds', 0, 65_535, 30),
  });
}
