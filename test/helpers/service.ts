/** A Roost HTTP service on 127.0.0.1 and a free port, over a runtime the test sets up. */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { loadConfig, type ServiceConfig } from '../../src/config/load.js';
import type { FleetView } from '../../src/fleet/presence.js';
import { createRuntime, type Runtime, type RuntimeOptions } from '../../src/index.js';
import { createService, type Service } from '../../src/service/server.js';
import type { Tracing } from '../../src/telemetry/tracing.js';

/** Log lines written by the service, as parsed JSON objects. */
export interface Captured {
  readonly lines: Record<string, unknown>[];
}

export interface Running {
  readonly url: string;
  readonly runtime: Runtime;
  readonly service: Service;
  readonly logs: Captured;
  close(): Promise<void>;
}

/** The service's settings: the defaults, with `env` as environment variables (ROOST_…). */
export function settings(env: Record<string, string> = {}): ServiceConfig {
  return loadConfig({ env: { ROOST_HTTP_PORT: '0', ...env }, cwd: '/nonexistent-roost-test-dir' });
}

/** Starts a runtime (memory: store unless given) with `setup` adding its flows, and the service over it. */
export async function startService(
  setup: (rt: Runtime) => void,
  options: { env?: Record<string, string>; runtime?: RuntimeOptions; tracing?: Tracing; fleet?: FleetView } = {},
): Promise<Running> {
  const config = settings(options.env);
  const runtime = createRuntime({ logger: false, store: 'memory:', correlate: true, ...options.runtime });
  setup(runtime);
  await runtime.start();
  const logs: Captured = { lines: [] };
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') logs.lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const logger = pino({ level: 'debug' }, sink);
  const service = await createService(runtime, { settings: config, logger, version: 'test', tracing: options.tracing ?? null, fleet: options.fleet ?? null });
  const { url } = await service.listen();
  service.health.started();
  return {
    url,
    runtime,
    service,
    logs,
    async close() {
      await service.close();
      await runtime.close();
    },
  };
}

/** `fetch` with a JSON body and headers; resolves with the status, headers and parsed JSON (or text). */
export async function call(
  url: string,
  method: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; json: Record<string, unknown>; text: string }> {
  const init: RequestInit = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // not JSON (metrics text, an empty 204)
  }
  return { status: res.status, headers: res.headers, json, text };
}
