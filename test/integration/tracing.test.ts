/**
 * OpenTelemetry over the real path: the service exports its spans over OTLP/HTTP (JSON) to a
 * collector the `OTEL_*` variables name (here, one in the test), and the spans nest as the docs
 * say: the caller's traceparent → the HTTP request → the trace → each node run, with the
 * envelopes carrying the trace span's traceparent. Off unless configured.
 */
import { createServer, type Server } from 'node:http';
import { trace } from '@opentelemetry/api';
import { afterEach, describe, expect, it } from 'vitest';
import { node, type Envelope } from '../../src/index.js';
import { resourceAttributes, startTracing, tracingExporter, type Tracing } from '../../src/telemetry/tracing.js';
import { eventually } from '../helpers/runtime.js';
import { call, startService, type Running } from '../helpers/service.js';

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: { key: string; value: Record<string, unknown> }[];
  status?: { code?: number };
}

/** An OTLP/HTTP collector: every span posted to /v1/traces. */
async function collector(): Promise<{ url: string; spans: OtlpSpan[]; resources: Record<string, unknown>[]; server: Server }> {
  const spans: OtlpSpan[] = [];
  const resources: Record<string, unknown>[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString('utf8')));
    req.on('end', () => {
      if (req.url === '/v1/traces') {
        const doc = JSON.parse(body) as { resourceSpans: { resource?: { attributes: OtlpSpan['attributes'] }; scopeSpans: { spans: OtlpSpan[] }[] }[] };
        for (const rs of doc.resourceSpans) {
          resources.push(Object.fromEntries((rs.resource?.attributes ?? []).map((a) => [a.key, Object.values(a.value)[0]])));
          for (const ss of rs.scopeSpans) spans.push(...ss.spans);
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, spans, resources, server };
}

const attr = (span: OtlpSpan, key: string): unknown => {
  const v = span.attributes.find((a) => a.key === key)?.value;
  return v === undefined ? undefined : Object.values(v)[0];
};

const saved = { ...process.env };
let running: Running | undefined;
let tracing: Tracing | null = null;
let server: Server | undefined;
afterEach(async () => {
  await running?.close();
  await tracing?.shutdown();
  trace.disable();
  server?.close();
  running = undefined;
  tracing = null;
  process.env = { ...saved };
});

describe('tracing', () => {
  it('is off unless the OTEL_* variables ask for it', () => {
    expect(tracingExporter({})).toBeNull();
    expect(tracingExporter({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })).toBe('otlp');
    expect(tracingExporter({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' })).toBe('otlp');
    expect(tracingExporter({ OTEL_TRACES_EXPORTER: 'console' })).toBe('console');
    expect(tracingExporter({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_SDK_DISABLED: 'true' })).toBeNull();
    expect(tracingExporter({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_TRACES_EXPORTER: 'none' })).toBeNull();
    expect(startTracing({})).toBeNull();
  });

  it('reads OTEL_RESOURCE_ATTRIBUTES as the specification writes them', () => {
    expect(resourceAttributes('deployment.environment=prod, team=a%2Cb,broken,=x')).toEqual({ 'deployment.environment': 'prod', team: 'a,b' });
    expect(resourceAttributes(undefined)).toEqual({});
  });

  it('exports a span per HTTP request, per trace and per node run, nested under the caller’s traceparent', async () => {
    const otlp = await collector();
    server = otlp.server;
    process.env['OTEL_EXPORTER_OTLP_ENDPOINT'] = otlp.url;
    process.env['OTEL_BSP_SCHEDULE_DELAY'] = '50';
    process.env['OTEL_RESOURCE_ATTRIBUTES'] = 'deployment.environment=test';
    const t = startTracing(process.env, { name: 'roost-test', version: 'test' });
    expect(t).not.toBeNull();
    tracing = t;
    const seen: Record<string, string> = {};
    running = await startService(
      (rt) => {
        rt.on(t!.onEvent);
        const first = node('first', (env: Envelope<number>) => {
          seen['first'] = env.headers['traceparent'] ?? '';
          return env.payload + 1;
        });
        const second = node('second', (env: Envelope<number>) => {
          seen['second'] = env.headers['traceparent'] ?? '';
          seen['active'] = trace.getActiveSpan()?.spanContext().spanId ?? '';
          return env.payload * 2;
        });
        rt.flow({ name: 'math', edges: [first.to(second), second.to()] });
      },
      { tracing: t!, runtime: { middlewares: [t!.middleware] } },
    );
    const callerTrace = '4bf92f3577b34da6a3ce929d0e0e4736';
    const callerSpan = '00f067aa0ba902b7';
    const r = await call(`${running.url}/v1/flows/math/tasks?wait=5000`, 'POST', { input: 1 }, { traceparent: `00-${callerTrace}-${callerSpan}-01` });
    expect(r.status).toBe(200);
    expect(r.json['result']).toBe(4);

    const spans = await eventually(
      () => Promise.resolve(otlp.spans),
      (s) => s.filter((x) => x.name.startsWith('roost.node')).length === 2 && s.some((x) => x.name.startsWith('roost.trace')) && s.some((x) => x.name.startsWith('POST')),
      10_000,
      'the spans to be exported',
    );
    const http = spans.find((s) => s.name === 'POST /v1/flows/:flow/tasks')!;
    const traceSpan = spans.find((s) => s.name === 'roost.trace math')!;
    const nodes = spans.filter((s) => s.name.startsWith('roost.node'));
    expect(otlp.resources[0]).toMatchObject({ 'service.name': 'roost-test', 'service.version': 'test', 'deployment.environment': 'test' });
    // One trace, the caller's.
    for (const s of [http, traceSpan, ...nodes]) expect(s.traceId).toBe(callerTrace);
    expect(http.parentSpanId).toBe(callerSpan);
    expect(http.kind).toBe(2); // SERVER
    expect(attr(http, 'http.response.status_code')).toBe(200);
    expect(traceSpan.parentSpanId).toBe(http.spanId);
    expect(attr(traceSpan, 'roost.trace_id')).toBe(r.json['traceId']);
    expect(attr(traceSpan, 'roost.outcome')).toBe('succeeded');
    for (const n of nodes) expect(n.parentSpanId).toBe(traceSpan.spanId);
    expect(nodes.map((n) => attr(n, 'roost.node')).sort()).toEqual(['first', 'second']);
    // The envelopes carry the trace span's context; the handler runs with its node's span active.
    expect(seen['first']).toBe(`00-${callerTrace}-${traceSpan.spanId}-01`);
    expect(seen['second']).toBe(seen['first']);
    expect(seen['active']).toBe(nodes.find((n) => attr(n, 'roost.node') === 'second')!.spanId);
    expect(t!.openTraces).toBe(0);
  });

  it('marks a failed node run and its trace as errors; a deduplicated submission ends its span at once', async () => {
    const otlp = await collector();
    server = otlp.server;
    process.env['OTEL_EXPORTER_OTLP_ENDPOINT'] = otlp.url;
    process.env['OTEL_BSP_SCHEDULE_DELAY'] = '50';
    const t = startTracing(process.env)!;
    tracing = t;
    running = await startService(
      (rt) => {
        rt.on(t.onEvent);
        rt.flow({
          name: 'bad',
          edges: [
            node('boom', () => {
              throw Object.assign(new Error('broken'), { retryable: false });
            }).to(),
          ],
        });
      },
      { tracing: t, runtime: { middlewares: [t.middleware] } },
    );
    const first = await call(`${running.url}/v1/flows/bad/tasks?wait=5000`, 'POST', { input: 1 }, { 'idempotency-key': 'k1' });
    expect(first.json['status']).toBe('failed');
    const again = await call(`${running.url}/v1/flows/bad/tasks`, 'POST', { input: 1 }, { 'idempotency-key': 'k1' });
    expect(again.json['deduplicated']).toBe(true);
    const spans = await eventually(
      () => Promise.resolve(otlp.spans),
      (s) => s.filter((x) => x.name === 'roost.trace bad').length === 2 && s.some((x) => x.name === 'roost.node boom'),
      10_000,
      'the spans',
    );
    const boom = spans.find((s) => s.name === 'roost.node boom')!;
    expect(boom.status?.code).toBe(2); // ERROR
    const [failed, dedup] = [spans.find((s) => s.name === 'roost.trace bad' && attr(s, 'roost.outcome') === 'failed'), spans.find((s) => s.name === 'roost.trace bad' && attr(s, 'roost.deduplicated') === true)];
    expect(failed?.status?.code).toBe(2);
    expect(attr(dedup!, 'roost.first_trace_id')).toBe(first.json['traceId']);
    expect(t.openTraces).toBe(0);
  });
});
