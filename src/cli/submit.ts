/**
 * `roost submit <flow> [json|@file|-]`: submits a task to a running server (`--url`, else
 * `$ROOST_URL`, else the configured `http.host` and `http.port`). Without `--wait` it prints the
 * accepted task (JSON) and exits 0. With `--wait` it follows the trace's events (Server-Sent
 * Events), printing each as it happens on stderr, then prints the result (JSON) on stdout:
 * exit 0 when the trace succeeded, 1 when it failed or was cancelled.
 *
 * Exit 2 on bad usage: no flow, input that is not JSON, or a request the server refused as bad
 * (an unknown flow, a body it rejects). Exit 1 when the server cannot be reached or cannot take
 * the task now (429, 503).
 */
import { readFileSync } from 'node:fs';
import { loadConfig } from '../config/load.js';
import { ensureError } from '../errors.js';
import { UsageError } from './journal.js';

/** Where submit reads and writes. */
export interface SubmitIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  out(line: string): void;
  err(line: string): void;
  /** The whole of standard input (for `-`). */
  stdin(): string;
}

/** The arguments of `roost submit`. */
export interface SubmitArgs {
  readonly flow?: string | undefined;
  readonly input?: string | undefined;
  readonly wait: boolean;
  readonly url?: string | undefined;
  readonly tenant?: string | undefined;
  readonly idempotencyKey?: string | undefined;
  readonly config?: string | undefined;
}

/** The server `submit` talks to (see the module comment). */
export function serverUrl(args: SubmitArgs, io: Pick<SubmitIo, 'env' | 'cwd'>): string {
  const given = args.url ?? (io.env['ROOST_URL'] === '' ? undefined : io.env['ROOST_URL']);
  if (given !== undefined) return given.replace(/\/+$/, '');
  try {
    const config = loadConfig({ ...(args.config === undefined ? {} : { file: args.config }), env: io.env, cwd: io.cwd });
    const host = config.http.host === '0.0.0.0' || config.http.host === '::' ? '127.0.0.1' : config.http.host;
    return `http://${host.includes(':') ? `[${host}]` : host}:${config.http.port}`;
  } catch {
    return 'http://127.0.0.1:8080';
  }
}

/** The task's input from the argument: JSON text, `@file` or `-` (stdin); absent: null. */
export function readInput(arg: string | undefined, io: Pick<SubmitIo, 'stdin'>): unknown {
  if (arg === undefined) return null;
  let text: string;
  let from: string;
  if (arg === '-') {
    text = io.stdin();
    from = 'standard input';
  } else if (arg.startsWith('@')) {
    from = arg.slice(1);
    try {
      text = readFileSync(from, 'utf8');
    } catch (error) {
      throw new UsageError(`input: cannot read ${from}: ${ensureError(error).message}`);
    }
  } else {
    text = arg;
    from = 'the argument';
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new UsageError(`input: expected JSON in ${from}: ${ensureError(error).message} (a string is written with quotes: '"hello"')`);
  }
}

/** One event as a line for people. */
export function eventLine(event: Record<string, unknown>): string {
  const parts: string[] = [new Date(typeof event['ts'] === 'number' ? event['ts'] : Date.now()).toISOString().slice(11, 23), String(event['type'])];
  if (typeof event['node'] === 'string') parts.push(event['node']);
  if (typeof event['attempt'] === 'number' && event['attempt'] > 1) parts.push(`attempt ${event['attempt']}`);
  if (typeof event['latencyMs'] === 'number') parts.push(`${event['latencyMs'].toFixed(1)} ms`);
  if (typeof event['elapsedMs'] === 'number' && String(event['type']).startsWith('trace_') && event['type'] !== 'trace_start') parts.push(`after ${event['elapsedMs']} ms`);
  if (typeof event['delayMs'] === 'number') parts.push(`retry in ${event['delayMs']} ms`);
  const error = event['error'] as { code?: string; message?: string } | null | undefined;
  if (error !== null && error !== undefined) parts.push(`${error.code ?? ''}: ${error.message ?? ''}`);
  return parts.join('  ');
}

interface SseFrame {
  readonly event: string;
  readonly data: string;
}

/** Reads Server-Sent Events from `body` until it ends, calling `onFrame` for each. */
async function readSse(body: ReadableStream<Uint8Array>, onFrame: (frame: SseFrame) => void): Promise<void> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let cut: number;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length > 0) onFrame({ event, data: data.join('\n') });
    }
  }
}

/** Runs `roost submit`; resolves with the exit code. */
export async function submit(args: SubmitArgs, io: SubmitIo): Promise<number> {
  if (args.flow === undefined || args.flow === '') throw new UsageError('submit: expected a flow name: roost submit <flow> [json|@file|-] [--wait]');
  const input = readInput(args.input, io);
  const base = serverUrl(args, io);
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (args.tenant !== undefined) headers['x-roost-tenant'] = args.tenant;
  if (args.idempotencyKey !== undefined) headers['idempotency-key'] = args.idempotencyKey;
  let response: Response;
  try {
    response = await fetch(`${base}/v1/flows/${encodeURIComponent(args.flow)}/tasks`, { method: 'POST', headers, body: JSON.stringify({ input }) });
  } catch (error) {
    const cause = (ensureError(error).cause as Error | undefined)?.message ?? ensureError(error).message;
    io.err(`cannot reach the server at ${base}: ${cause} (is roost serve running? --url or ROOST_URL name another)`);
    return 1;
  }
  const text = await response.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    io.err(`${base} answered ${response.status} with something that is not JSON: ${text.slice(0, 200)}`);
    return 1;
  }
  if (!response.ok) {
    const error = (body['error'] ?? {}) as { code?: string; message?: string };
    io.err(`${error.code ?? `HTTP ${response.status}`}: ${error.message ?? text}`);
    const retryLater = response.status === 429 || response.status >= 500;
    return retryLater ? 1 : 2;
  }
  if (!args.wait) {
    io.out(JSON.stringify(body));
    return 0;
  }
  const traceId = String(body['traceId']);
  const events = await fetch(`${base}/v1/traces/${traceId}/events`, { headers: args.tenant === undefined ? {} : { 'x-roost-tenant': args.tenant } }).catch((error: unknown) => ensureError(error));
  if (events instanceof Error || !events.ok || events.body === null) {
    io.err(`trace ${traceId} was accepted, but its events cannot be followed: ${events instanceof Error ? events.message : `HTTP ${events.status}`}`);
    return 1;
  }
  let end: { status?: string; result?: unknown; error?: { code?: string; message?: string } | null } | null = null;
  io.err(`trace ${traceId} (${args.flow})`);
  await readSse(events.body, (frame) => {
    let data: Record<string, unknown>;
    try {
      data = JSON.parse(frame.data) as Record<string, unknown>;
    } catch {
      return;
    }
    if (frame.event === 'end') end = data;
    else if (frame.event === 'gap') io.err(`(events ${String(data['from'])} to ${String(data['to'])} are no longer buffered: see ${String(data['history'])})`);
    else io.err(eventLine(data));
  });
  const finished = end as { status?: string; result?: unknown; error?: { code?: string; message?: string } | null } | null;
  if (finished === null) {
    io.err(`the event stream of trace ${traceId} ended before the trace did (the server stopped?)`);
    return 1;
  }
  if (finished.status === 'succeeded') {
    io.out(JSON.stringify(finished.result ?? null));
    return 0;
  }
  io.err(`trace ${finished.status ?? 'ended'}: ${finished.error?.code ?? ''} ${finished.error?.message ?? ''}`.trim());
  return 1;
}
