/**
 * What probes and scrapers call: the health checks (`/health`, `/health/live`, `/health/ready`,
 * `/health/startup`, with `/live` and `/ready` as aliases), the Prometheus metrics (`/metrics`,
 * and `/metrics.json`), and the OpenAPI description of the API (`/openapi.json`). These are not
 * versioned and take no tenant.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { HealthReport } from '../telemetry/health.js';
import type { ServiceContext } from './context.js';

function send(reply: FastifyReply, report: HealthReport): FastifyReply {
  return reply.code(report.status === 'fail' ? 503 : 200).send(report);
}

/** Health and metrics routes; on the API port, and on `http.health_port` when set. */
export function probeRoutes(app: FastifyInstance, ctx: ServiceContext): void {
  const { health, metrics } = ctx;
  const tags = ['probes'];
  app.get('/health', { schema: { summary: 'Every component check, an overall status and a score in [0, 1]', tags } }, async (_request, reply) => send(reply, await health.full()));
  for (const path of ['/health/live', '/live']) {
    app.get(path, { schema: { summary: 'Liveness: the event loop answers and has not stalled for long', tags } }, (_request, reply) => {
      const check = health.live();
      return send(reply, { status: check.status === 'fail' ? 'fail' : 'pass', score: check.status === 'fail' ? 0 : 1, checks: [check] });
    });
  }
  for (const path of ['/health/ready', '/ready']) {
    app.get(path, { schema: { summary: 'Readiness: started, not draining, the journal writable', tags } }, async (_request, reply) => send(reply, await health.ready()));
  }
  app.get('/health/startup', { schema: { summary: 'Startup: initialisation (application, runtime, resume) is done', tags } }, (_request, reply) => {
    const check = health.startup();
    return send(reply, { status: check.status, score: check.status === 'pass' ? 1 : 0, checks: [check] });
  });
  app.get('/metrics', { schema: { summary: 'Prometheus metrics (text exposition format)', tags } }, async (_request, reply) =>
    reply.type(metrics.contentType).send(await metrics.text()),
  );
  app.get('/metrics.json', { schema: { summary: 'The same metrics as JSON', tags } }, async () => metrics.json());
}

interface CollectedRoute {
  readonly method: string;
  readonly url: string;
  readonly schema: Record<string, unknown> | undefined;
}

/** Turns Fastify's `$ref: 'roost-error#'` into OpenAPI component references, all the way down. */
function refs(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(refs);
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (k === '$ref' && typeof v === 'string' && v.endsWith('#')) out[k] = `#/components/schemas/${v.slice(0, -1)}`;
    else out[k] = refs(v);
  }
  return out;
}

/** The OpenAPI 3.1 document of the routes registered, built from their schemas. */
export function openApi(routes: readonly CollectedRoute[], components: Record<string, unknown>, version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    if (r.url === '/openapi.json' || r.method === 'HEAD') continue;
    const s = r.schema ?? {};
    const path = r.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
    const parameters: unknown[] = [];
    for (const [where, key] of [['path', 'params'], ['query', 'querystring']] as const) {
      const obj = s[key] as { properties?: Record<string, unknown>; required?: string[] } | undefined;
      for (const [name, schema] of Object.entries(obj?.properties ?? {})) {
        parameters.push({ name, in: where, required: where === 'path' || (obj?.required ?? []).includes(name), schema: refs(schema) });
      }
    }
    const responses: Record<string, unknown> = {};
    for (const [code, schema] of Object.entries((s['response'] as Record<string, unknown> | undefined) ?? {})) {
      responses[code.toUpperCase()] = { description: code, content: { 'application/json': { schema: refs(schema) } } };
    }
    if (Object.keys(responses).length === 0) responses['200'] = { description: 'OK' };
    (paths[path] ??= {})[r.method.toLowerCase()] = {
      summary: s['summary'],
      ...(s['description'] === undefined ? {} : { description: s['description'] }),
      ...(s['tags'] === undefined ? {} : { tags: s['tags'] }),
      ...(parameters.length === 0 ? {} : { parameters }),
      ...(s['body'] === undefined ? {} : { requestBody: { required: false, content: { 'application/json': { schema: refs(s['body']) } } } }),
      responses,
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Roost HTTP API',
      version,
      description:
        'Tasks, traces, dead letters, agents, health and metrics of a Roost service. The tenant of a request is the `X-Roost-Tenant` header (default `default`); every error has the shape `{ error: { code, message, details?, requestId } }`.',
    },
    paths,
    components: { schemas: components },
  };
}
