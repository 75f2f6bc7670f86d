/**
 * `roost agents`: the fleet as its presence tells it. With a transport (`--transport URL`, else
 * `$ROOST_FLEET_TRANSPORT`) it watches the namespace's presence records (`--namespace`, default
 * `roost`) for `--wait-ms` (default 1,000: the records the broker keeps, retained MQTT messages
 * and KV entries, arrive at once), then prints a table, or JSON with `--json`. With `--url` it asks
 * a running server's `GET /v1/agents` for its registry's view instead.
 *
 * Exit 0 when it could look (an empty fleet too), 1 when the broker or server cannot be reached
 * or the server has no registry, 2 on bad usage.
 */
import { randomUUID } from 'node:crypto';
import { ensureError, isRoostError } from '../errors.js';
import { watchPresence, type PresenceInfo } from '../fleet/presence.js';
import { openTransport } from '../transport/open.js';
import { shownUrl, type Transport } from '../transport/transport.js';

/** The default `--namespace`. */
export const DEFAULT_FLEET_NAMESPACE = 'roost';
/** The default `--wait-ms`. */
export const DEFAULT_AGENTS_WAIT_MS = 1_000;

/** The arguments of `roost agents`. */
export interface AgentsArgs {
  readonly transport?: string | undefined;
  readonly namespace?: string | undefined;
  readonly url?: string | undefined;
  readonly json: boolean;
  readonly waitMs?: string | undefined;
}

/** Where it reads and writes. */
export interface AgentsIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  out(line: string): void;
  err(line: string): void;
}

/** Runs `roost agents`; resolves with the exit code. */
export async function agentsCommand(args: AgentsArgs, io: AgentsIo): Promise<number> {
  const waitMs = args.waitMs === undefined ? DEFAULT_AGENTS_WAIT_MS : Number(args.waitMs);
  if (!Number.isInteger(waitMs) || waitMs < 0 || waitMs > 600_000) {
    io.err(`--wait-ms: expected an integer of milliseconds from 0 to 600000, got ${args.waitMs}`);
    return 2;
  }
  const namespace = args.namespace ?? DEFAULT_FLEET_NAMESPACE;
  let fleet: PresenceInfo[];
  let source: string;
  if (args.url !== undefined) {
    if (args.transport !== undefined) {
      io.err('agents: --url (ask a server) and --transport (watch the broker) are alternatives: give one');
      return 2;
    }
    source = args.url.replace(/\/+$/, '');
    const got = await fromServer(source, io);
    if (typeof got === 'number') return got;
    fleet = got;
  } else {
    const url = args.transport ?? (io.env['ROOST_FLEET_TRANSPORT'] === '' ? undefined : io.env['ROOST_FLEET_TRANSPORT']);
    if (url === undefined) {
      io.err('agents: name the fleet\'s transport with --transport URL (or $ROOST_FLEET_TRANSPORT), or a server with --url');
      return 2;
    }
    source = shownUrl(url);
    const got = await fromTransport(url, namespace, waitMs, io);
    if (typeof got === 'number') return got;
    fleet = got;
  }
  if (args.json) {
    io.out(JSON.stringify({ namespace: args.url === undefined ? namespace : null, fleet }, null, 2));
    return 0;
  }
  if (fleet.length === 0) {
    io.out(args.url === undefined ? `no processes in namespace ${namespace} on ${source} (watched ${waitMs} ms)` : `no processes in the fleet of ${source}`);
    return 0;
  }
  for (const line of table(fleet, Date.now())) io.out(line);
  return 0;
}

/** The fleet as a server's registry has it, or an exit code. */
async function fromServer(url: string, io: AgentsIo): Promise<PresenceInfo[] | number> {
  let res: Response;
  try {
    res = await fetch(`${url}/v1/agents`);
  } catch (error) {
    io.err(`agents: cannot reach ${url}: ${ensureError(error).message}`);
    return 1;
  }
  const text = await res.text();
  let body: { fleet?: unknown; error?: { code?: string; message?: string } };
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    io.err(`agents: ${url}/v1/agents answered ${res.status} with no JSON`);
    return 1;
  }
  if (!res.ok) {
    io.err(`agents: ${url}/v1/agents answered ${res.status}: ${body.error?.code ?? ''} ${body.error?.message ?? ''}`.trimEnd());
    return 1;
  }
  if (!Array.isArray(body.fleet)) {
    io.err(`agents: the server at ${url} has no fleet registry (it shows only its own agents: GET /v1/agents)`);
    return 1;
  }
  return body.fleet as PresenceInfo[];
}

/** The fleet as the namespace's presence records tell it after `waitMs`, or an exit code. */
async function fromTransport(url: string, namespace: string, waitMs: number, io: AgentsIo): Promise<PresenceInfo[] | number> {
  let transport: Transport;
  try {
    transport = openTransport(url, { clientId: `roost-agents-${randomUUID().slice(0, 8)}` }, '--transport');
  } catch (error) {
    io.err(message(error));
    return 2;
  }
  try {
    await transport.connect();
    const registry = await watchPresence(transport, { namespace });
    await new Promise((r) => setTimeout(r, waitMs));
    const fleet = registry.list();
    const { malformed } = registry.stats();
    if (malformed > 0) io.err(`agents: ignored ${malformed} malformed presence record(s) in namespace ${namespace}`);
    await registry.close();
    return fleet;
  } catch (error) {
    io.err(message(error));
    return isRoostError(error, 'ROOST_ERR_INVALID_OPTION') ? 2 : 1;
  } finally {
    await transport.close().catch(() => {});
  }
}

function message(error: unknown): string {
  const e = ensureError(error);
  return `agents: ${isRoostError(e) ? `${e.code}: ` : ''}${e.message}`;
}

/** The fleet as a table: id, status, load/capacity, agents with their capabilities, nodes, last seen. */
export function table(fleet: readonly PresenceInfo[], now: number): string[] {
  const rows = [
    ['ID', 'STATUS', 'LOAD', 'AGENTS', 'NODES', 'LAST SEEN'],
    ...fleet.map((p) => [
      p.id,
      p.status,
      `${p.load}/${p.capacity === 0 ? '?' : p.capacity}`,
      p.agents.length === 0 ? '-' : p.agents.map((a) => (a.capabilities.length === 0 ? a.name : `${a.name}[${a.capabilities.join(',')}]`)).join(' '),
      p.nodes.length === 0 ? '-' : p.nodes.join(' '),
      `${(Math.max(0, now - p.ts) / 1000).toFixed(1)}s ago`,
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '));
}
