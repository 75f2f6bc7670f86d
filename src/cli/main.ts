#!/usr/bin/env node
/**
 * The `roost` command: the service (serve.ts), its configuration and checks (doctor.ts), task
 * submission to a running server (submit.ts), the fleet's presence (agents.ts), a live view of
 * 2389 Agent Protocol traffic (monitor.ts), envelope checks and the journal commands (journal.ts).
 *
 *   roost serve [--config roost.toml]
 *   roost worker [--config roost.toml] [--nodes flow/node,…]
 *   roost config check | roost doctor
 *   roost submit <flow> [json|@file|-] [--wait]
 *   roost agents [--transport URL] [--namespace NS] [--json] [--wait-ms N] | [--url URL]
 *   roost monitor [--mode M] [--format F] [--agent-id ID] [--conversation-id CID] [--broker URL] …
 *   roost version
 *   roost validate [file|-] [--max-bytes N]   one envelope per line (or one JSON document)
 *   roost trace|replay|dlq|backup|prune …     see journal.ts (--store URL)
 *
 * Exit codes: 0 done (all valid, the trace succeeded), 1 failed (some invalid, not found, a
 * failed trace), 2 bad usage (an invalid configuration too).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { agentsCommand } from './agents.js';
import { decodeEnvelope } from '../envelope/codec.js';
import { ensureError, isRoostError } from '../errors.js';
import { describeConfig, loadConfig, nodeList } from '../config/load.js';
import { doctor } from './doctor.js';
import { UsageError, journalCommand } from './journal.js';
import { monitorCommand } from './monitor.js';
import { loadOrExplain, serve } from './serve.js';
import { submit } from './submit.js';
import { roostVersion } from '../version.js';

const USAGE = `usage: roost <command>

commands:
  serve [--config FILE]            run the service: the configured app, the HTTP API, the journal
  worker [--nodes flow/node,…]     run nodes for the fleet ([fleet] in the config): no tasks of its own
  config check [--config FILE]     print the resolved configuration (secrets hidden); exit 2 if invalid
  doctor [--config FILE]           check what serve needs (config, app, store, ports) and say what to fix
  submit <flow> [json|@file|-]     submit a task to a running server (--url, --tenant, --key, --wait)
  agents [--transport URL]         the fleet by presence: id, status, load, agents, nodes, last seen
         [--namespace NS] [--json] (default: the configuration's [fleet] transport and namespace; --wait-ms N
         [--wait-ms N] [--url URL] to listen, default 1000; --url asks a running server instead)
  monitor                          watch 2389 Agent Protocol traffic on an MQTT broker live, until Ctrl-C:
         [--mode M] [--format F]   M all|availability|conversations|inputs|progress, F pretty|compact|json
         [--agent-id ID]           only that agent's messages; [--conversation-id CID] only that conversation's
         [--broker URL]            default $ROOST_2389_BROKER, else mqtt://localhost:1883; or --broker-host H
                                   --broker-port P; --username U, --password P (or $MQTT_PASSWORD); --tls,
                                   --ca FILE, --cert FILE --key FILE; stop by itself: --count N, --duration-ms N
  version                          print the version
  validate [file|-] [--max-bytes N] check envelopes (one JSON per line, or one document)
  trace <trace-id>                 a trace's journaled history as a timeline
  dlq list [--flow F] [--limit N]  dead letters, newest first
  dlq show|replay|delete <id>      one dead letter: print it, have its runtime replay it, remove it
  replay <dead-letter-id>          the same as dlq replay
  backup <file>                    an online copy of an SQLite journal (PostgreSQL: prints the pg_dump to run)
  prune [--older-than 7d]          delete finished traces older than that

the configuration: --config, else $ROOST_CONFIG, else ./roost.toml when it exists; the environment
overrides it (docs/reference/configuration.md)
journal commands take --store URL (default: the configuration's store.url: $ROOST_STORE_URL, else roost.toml, else sqlite:.roost/roost.db)
`;

const version = roostVersion;

/** Checks each envelope of `text`; returns the lines to print and whether all were valid. */
export function validateText(text: string, maxBytes?: number): { lines: string[]; ok: boolean } {
  const trimmed = text.trim();
  const docs = trimmed.startsWith('{') && !trimmed.includes('\n{') ? [trimmed] : trimmed.split('\n').filter((l) => l.trim() !== '');
  const lines: string[] = [];
  let ok = true;
  for (const [i, doc] of docs.entries()) {
    try {
      const env = decodeEnvelope(doc, maxBytes === undefined ? {} : { maxBytes });
      lines.push(`${i + 1}: ok ${env.kind} ${env.id} trace ${env.traceId} ${env.from} -> ${env.to}`);
    } catch (error) {
      ok = false;
      lines.push(isRoostError(error) ? `${i + 1}: ${error.code} ${error.message}` : `${i + 1}: ${ensureError(error).message}`);
    }
  }
  return { lines, ok };
}

const JOURNAL_COMMANDS = new Set(['trace', 'replay', 'dlq', 'backup', 'prune']);

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'max-bytes': { type: 'string' },
        store: { type: 'string' },
        flow: { type: 'string' },
        limit: { type: 'string' },
        'older-than': { type: 'string' },
        config: { type: 'string', short: 'c' },
        url: { type: 'string' },
        tenant: { type: 'string' },
        key: { type: 'string' },
        wait: { type: 'boolean', short: 'w' },
        nodes: { type: 'string' },
        transport: { type: 'string' },
        namespace: { type: 'string' },
        json: { type: 'boolean' },
        'wait-ms': { type: 'string' },
        mode: { type: 'string' },
        format: { type: 'string' },
        'agent-id': { type: 'string' },
        'conversation-id': { type: 'string' },
        broker: { type: 'string' },
        'broker-host': { type: 'string' },
        'broker-port': { type: 'string' },
        username: { type: 'string' },
        password: { type: 'string' },
        tls: { type: 'boolean' },
        ca: { type: 'string' },
        cert: { type: 'string' },
        'duration-ms': { type: 'string' },
        count: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    process.stderr.write(`${ensureError(error).message}\n${USAGE}`);
    return 2;
  }
  const [command, ...rest] = parsed.positionals;
  if (parsed.values.help || command === undefined) {
    process.stdout.write(USAGE);
    return command === undefined && !parsed.values.help ? 2 : 0;
  }
  if (command === 'version') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const v = parsed.values;
  const io = { env: process.env, cwd: process.cwd(), out: (line: string) => process.stdout.write(`${line}\n`), err: (line: string) => process.stderr.write(`${line}\n`) };
  const config = v.config === undefined ? {} : { config: v.config };
  if (command === 'serve') return serve({ ...config, version: version() }, io);
  if (command === 'worker') {
    const nodes = v.nodes === undefined ? null : nodeList(v.nodes);
    if (v.nodes !== undefined && (nodes!.length === 0 || nodes!.some((n) => !/^[A-Za-z0-9._-]{1,64}\/[A-Za-z0-9._-]{1,64}$/.test(n)))) {
      process.stderr.write(`--nodes: expected comma-separated flow/node names, got ${JSON.stringify(v.nodes)}\n`);
      return 2;
    }
    return serve({ ...config, version: version(), worker: { nodes } }, io);
  }
  if (command === 'doctor') return doctor(config, io);
  if (command === 'config') {
    if (rest[0] !== 'check') {
      process.stderr.write(`config: expected \`roost config check\`\n${USAGE}`);
      return 2;
    }
    const loaded = loadOrExplain(v.config, io);
    if (loaded === null) return 2;
    for (const line of describeConfig(loaded)) io.out(line);
    return 0;
  }
  if (command === 'submit') {
    try {
      return await submit(
        { flow: rest[0], input: rest[1], wait: v.wait === true, url: v.url, tenant: v.tenant, idempotencyKey: v.key, config: v.config },
        { ...io, stdin: () => readFileSync(0, 'utf8') },
      );
    } catch (error) {
      if (error instanceof UsageError) {
        process.stderr.write(`${error.message}\n`);
        return 2;
      }
      throw error;
    }
  }
  if (command === 'agents') {
    if (rest.length > 0) {
      process.stderr.write(`agents: takes no arguments (got ${rest.join(' ')})\n${USAGE}`);
      return 2;
    }
    // Without --transport or --url: the configuration's [fleet] (roost.toml, $ROOST_FLEET_TRANSPORT).
    let fleet = null;
    if (v.transport === undefined && v.url === undefined) {
      const loaded = loadOrExplain(v.config, io);
      if (loaded === null) return 2;
      fleet = loaded.fleet;
    }
    return agentsCommand(
      { transport: v.transport ?? fleet?.transport, namespace: v.namespace ?? fleet?.namespace, url: v.url, json: v.json === true, waitMs: v['wait-ms'] },
      io,
    );
  }
  if (command === 'monitor') {
    if (rest.length > 0) {
      process.stderr.write(`monitor: takes no arguments (got ${rest.join(' ')})\n${USAGE}`);
      return 2;
    }
    // SIGINT / SIGTERM end the watch: the monitor disconnects and exits 0.
    const stop = new AbortController();
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => stop.abort());
    return monitorCommand(
      {
        mode: v.mode,
        format: v.format,
        agentId: v['agent-id'],
        conversationId: v['conversation-id'],
        broker: v.broker,
        brokerHost: v['broker-host'],
        brokerPort: v['broker-port'],
        username: v.username,
        password: v.password,
        tls: v.tls,
        ca: v.ca,
        cert: v.cert,
        key: v.key,
        durationMs: v['duration-ms'],
        count: v.count,
      },
      { ...io, signal: stop.signal },
    );
  }
  if (command === 'validate') {
    const source = rest[0] ?? '-';
    const rawMax = parsed.values['max-bytes'];
    const maxBytes = rawMax === undefined ? undefined : Number(rawMax);
    if (maxBytes !== undefined && (!Number.isInteger(maxBytes) || maxBytes < 1)) {
      process.stderr.write(`--max-bytes: expected an integer from 1 and up, got ${rawMax}\n`);
      return 2;
    }
    let text: string;
    try {
      text = readFileSync(source === '-' ? 0 : source, 'utf8');
    } catch (error) {
      process.stderr.write(`cannot read ${source}: ${ensureError(error).message}\n`);
      return 2;
    }
    const { lines, ok } = validateText(text, maxBytes);
    process.stdout.write(lines.join('\n') + (lines.length > 0 ? '\n' : ''));
    return ok ? 0 : 1;
  }
  if (JOURNAL_COMMANDS.has(command)) {
    // The store: --store, else the configuration's store.url ($ROOST_STORE_URL, roost.toml, the default).
    let store = v.store;
    if (store === undefined) {
      try {
        store = loadConfig({ ...(v.config === undefined ? {} : { file: v.config }) }).store.url;
      } catch (error) {
        process.stderr.write(`${isRoostError(error) ? `${error.code}: ` : ''}${ensureError(error).message}\n`);
        return 2;
      }
    }
    try {
      return await journalCommand(
        command,
        rest,
        {
          store,
          ...(v.flow === undefined ? {} : { flow: v.flow }),
          ...(v.limit === undefined ? {} : { limit: v.limit }),
          ...(v['older-than'] === undefined ? {} : { olderThan: v['older-than'] }),
        },
        { out: (line) => process.stdout.write(`${line}\n`) },
      );
    } catch (error) {
      if (error instanceof UsageError) {
        process.stderr.write(`${error.message}\n${USAGE}`);
        return 2;
      }
      const e = ensureError(error);
      process.stderr.write(`${isRoostError(e) ? `${e.code}: ` : ''}${e.message}\n`);
      return 1;
    }
  }
  process.stderr.write(`unknown command: ${command}\n${USAGE}`);
  return 2;
}

// A reader that went away (`roost config check | head`) is not an error of ours: stop quietly.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw error;
  });
}

const code = await main(process.argv.slice(2));
// serve, worker, agents and monitor have closed what they opened; anything left (a library's
// timer, a broker client's reconnect) must not keep the process up.
if (['serve', 'worker', 'agents', 'monitor'].includes(process.argv[2] ?? '')) process.exit(code);
process.exitCode = code;
