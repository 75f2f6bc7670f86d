/**
 * The HTTP and WebSocket service over a runtime (Fastify): the versioned API under `/v1`
 * (routes-tasks.ts, routes-ops.ts, websocket.ts), the probes and metrics (routes-probes.ts),
 * `/openapi.json`, one error shape, request ids, and the hooks that count every request.
 *
 *   const service = await createService(runtime, { settings, logger });
 *   const { url } = await service.listen();
 *   … service.drain(); await runtime.drain(); await service.close();
 */
import fastifyWebsocket from '@fastify/websocket';
import type { Span } from '@opentelemetry/api';
import { LogController, fastify, type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import type { Logger as PinoLogger } from 'pino';
import type { WebSocketServer } from 'ws';
import { uuidv7 } from '../envelope/uuid.js';
import { RoostError } from '../errors.js';
import type { FleetView } from '../fleet/presence-registry.js';
import type { RoostEvent } from '../flow/events.js';
import type { Runtime } from '../runtime/runtime.js';
import { Health } from '../telemetry/health.js';
import { RuntimeMetrics } from '../telemetry/metrics.js';
import type { Tracing } from '../telemetry/tracing.js';
import { Admission } from './admission.js';
import type { ServiceContext, ServiceSettings } from './context.js';
import { asRoostError, errorBody, retryAfterSeconds, statusOf } from './errors.js';
import { EventRing } from './event-ring.js';
import './fastify-types.js';
import { RequestLogger } from './request-logger.js';
import { opsRoutes } from './routes-ops.js';
import { openApi, probeRoutes } from './routes-probes.js';
import { taskRoutes } from './routes-tasks.js';
import { WS_CLOSE, websocketRoute } from './websocket.js';

/** What {@link createService} takes. */
export interface ServiceOptions {
  readonly settings: ServiceSettings;
  /** A pino logger: request lines and audit lines go to it. */
  readonly logger: PinoLogger;
  /** The API version printed in `/openapi.json` (the package's). */
  readonly version?: string;
  /** OpenTelemetry tracing (from `startTracing`): a span per request, and the traces submitted under it. */
  readonly tracing?: Tracing | null;
  /**
   * The fleet registry (`watchPresence(…)`, or anything with `list()`): `GET /v1/agents` then
   * shows the fleet beside this process's agents, and `roost_fleet_processes` counts it.
   */
  readonly fleet?: FleetView | null;
}

/** Shared JSON schemas, referenced by the routes and the OpenAPI document. */
const SCHEMAS: Record<string, Record<string, unknown>> = {
  'roost-error': {
    type: 'object',
    description: 'The shape of every error response',
    properties: {
      error: {
        type: 'object',
        properties: {
          code: { type: 'string', description: 'a stable ROOST_ERR_… code (docs/reference/errors.md)' },
          message: { type: 'string' },
          details: { type: 'object', additionalProperties: true },
          requestId: { type: 'string' },
        },
        required: ['code', 'message', 'requestId'],
      },
    },
    required: ['error'],
  },
  'roost-task': {
    type: 'object',
    description: 'A submitted task',
    properties: {
      traceId: { type: 'string' },
      flow: { type: 'string' },
      tenant: { type: 'string' },
      deduplicated: { type: 'boolean', description: 'the Idempotency-Key matched an earlier submission: this is its trace' },
      status: { type: 'string', enum: ['running', 'succeeded', 'failed', 'cancelled', 'unknown'] },
      result: { description: 'with ?wait and a trace that succeeded in time' },
      error: { type: 'object', additionalProperties: true, description: 'with ?wait and a trace that failed in time' },
      links: { type: 'object', additionalProperties: { type: 'string' } },
    },
    required: ['traceId', 'flow', 'tenant', 'deduplicated', 'status'],
  },
};

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The service of one runtime. */
export class Service {
  private closing: Promise<void> | null = null;
  private drainingValue = false;
  private healthApp: FastifyInstance | null = null;
  private readonly off: (() => void)[] = [];

  private constructor(
    readonly app: FastifyInstance,
    readonly runtime: Runtime,
    readonly health: Health,
    readonly metrics: RuntimeMetrics,
    private readonly options: ServiceOptions,
    private readonly context: ServiceContext,
    private readonly sockets: { readonly server: WebSocketServer | null },
  ) {}

  /** @internal made by {@link createService}. */
  static async create(runtime: Runtime, options: ServiceOptions): Promise<Service> {
    if (runtime.store === null) {
      throw new RoostError('ROOST_ERR_INVALID_OPTION', 'createService: the runtime needs a store (memory: will do) for traces, history and dead letters', {
        field: 'runtime.store',
        expected: 'a runtime created with a store',
      });
    }
    const settings = options.settings;
    const health = new Health(runtime);
    // The runtime's own fleet (its registry) unless another view is given.
    const fleet = options.fleet ?? runtime.fleet ?? null;
    if (fleet !== null && (typeof fleet !== 'object' || typeof fleet.list !== 'function')) {
      throw new RoostError('ROOST_ERR_INVALID_OPTION', 'createService: fleet is a registry with list() (watchPresence), or null', { field: 'fleet', expected: 'an object with a list() method, or null' });
    }
    const metrics = new RuntimeMetrics(runtime, { fleet });
    const ring = new EventRing(settings.sse.bufferEvents);
    let service: Service | null = null;
    const tracing = options.tracing ?? null;
    const spans = new WeakMap<FastifyRequest, Span>();
    const context: ServiceContext = {
      tracing,
      spanOf: (request) => spans.get(request),
      runtime,
      store: runtime.store,
      settings,
      logger: options.logger,
      metrics,
      health,
      ring,
      admission: new Admission(runtime, settings.admission),
      fleet,
      draining: () => service?.drainingValue ?? false,
    };
    const sockets: { server: WebSocketServer | null } = { server: null };
    const app = await buildApp(context, options, spans, sockets);
    service = new Service(app, runtime, health, metrics, options, context, sockets);
    service.off.push(runtime.on((event) => ring.record(event)));
    service.off.push(runtime.on((event) => audit(options.logger, event)));
    return service;
  }

  /** Starts listening (and on the health port, when set). Resolves with the addresses. */
  async listen(): Promise<{ url: string; healthUrl: string | null }> {
    const { host, port, healthPort } = this.options.settings.http;
    const url = await this.app.listen({ host, port });
    let healthUrl: string | null = null;
    if (healthPort !== null && healthPort !== port) {
      const logger: FastifyBaseLogger = this.options.logger; // as in buildApp
      const probes = fastify({ loggerInstance: logger, logController: new LogController({ disableRequestLogging: true }) });
      installErrors(probes);
      probeRoutes(probes, this.context);
      this.healthApp = probes;
      healthUrl = await probes.listen({ host, port: healthPort });
    }
    return { url: this.app.server.address() === null ? url : addressOf(this.app), healthUrl: healthUrl === null ? null : addressOf(this.healthApp!) };
  }

  /** Shutdown begins: readiness fails and new work is refused (`ROOST_ERR_DRAINING`); work in flight goes on. */
  drain(): void {
    this.drainingValue = true;
    this.health.drain();
  }

  get draining(): boolean {
    return this.drainingValue;
  }

  /** Stops listening and closes every connection (streaming clients too). Same promise on repeat. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.drain();
      for (const off of this.off.splice(0)) off();
      // Streaming clients are told why (1001, going away) rather than cut off.
      for (const client of this.sockets.server?.clients ?? []) client.close(WS_CLOSE.goingAway, 'the server is shutting down');
      for (const step of [() => this.app.close(), () => this.healthApp?.close()]) {
        try {
          await step();
        } catch (error) {
          this.options.logger.error({ err: error }, 'closing the HTTP service failed');
        }
      }
      this.metrics.close();
      this.health.close();
    })();
    return this.closing;
  }
}

/** The HTTP service of `runtime` (it needs a store). Call `listen()` to serve. */
export function createService(runtime: Runtime, options: ServiceOptions): Promise<Service> {
  return Service.create(runtime, options);
}

function addressOf(app: FastifyInstance): string {
  const address = app.server.address();
  if (address === null || typeof address === 'string') return String(address);
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}

/** Errors in the one shape, with `Retry-After` where a retry is the answer. */
function installErrors(app: FastifyInstance): void {
  app.setErrorHandler((thrown, request, reply) => {
    const error = asRoostError(thrown);
    const status = statusOf(error);
    if (status >= 500 && error.code === 'ROOST_ERR_INTERNAL') request.log.error({ err: thrown, requestId: request.id }, 'request failed');
    const retryAfter = retryAfterSeconds(error);
    if (retryAfter !== null) void reply.header('retry-after', String(retryAfter));
    return reply.code(status).send(errorBody(error, request.id));
  });
  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send(errorBody(new RoostError('ROOST_ERR_NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`, { field: 'path' }), request.id)),
  );
}

async function buildApp(ctx: ServiceContext, options: ServiceOptions, spans: WeakMap<FastifyRequest, Span>, sockets: { server: WebSocketServer | null }): Promise<FastifyInstance> {
  const { http } = ctx.settings;
  // Typed as Fastify's base logger so the instance is the plain FastifyInstance the routes take.
  const logger: FastifyBaseLogger = options.logger;
  const app = fastify({
    loggerInstance: logger,
    // One line per request of our own (onResponse, at debug), not Fastify's two at info.
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: (parent, bindings, childOptions) => new RequestLogger(parent, bindings, childOptions),
    bodyLimit: http.bodyLimitBytes,
    requestTimeout: http.requestTimeoutMs,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : uuidv7();
    },
    ajv: { customOptions: { allErrors: false, coerceTypes: 'array', useDefaults: true, removeAdditional: false } },
  });
  for (const [id, schema] of Object.entries(SCHEMAS)) app.addSchema({ $id: id, ...schema });
  installErrors(app);
  const routes: { method: string; url: string; schema: Record<string, unknown> | undefined }[] = [];
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) routes.push({ method, url: route.url, schema: route.schema as Record<string, unknown> | undefined });
  });
  const tracing = ctx.tracing;
  app.addHook('onRequest', (request, reply, done) => {
    void reply.header('x-request-id', request.id);
    if (tracing !== null) spans.set(request, tracing.startRequest(request.method, request.routeOptions.url ?? 'unmatched', request.url.split('?')[0]!, request.headers));
    done();
  });
  if (tracing !== null) {
    const end = (request: FastifyRequest, status: number): void => {
      const span = spans.get(request);
      if (span === undefined) return;
      spans.delete(request);
      tracing.endRequest(span, status);
    };
    app.addHook('onRequestAbort', (request, done) => {
      end(request, 499); // the client went away first
      done();
    });
    app.addHook('onResponse', (request, reply, done) => {
      end(request, reply.statusCode);
      done();
    });
  }
  app.addHook('onResponse', (request, reply, done) => {
    const route = request.routeOptions.url ?? 'unmatched';
    ctx.metrics.httpRequests.inc([request.method, route, String(reply.statusCode)]);
    ctx.metrics.httpDuration.observe([request.method, route], reply.elapsedTime / 1000);
    request.log.debug({ method: request.method, route, status: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10, tenant: request.headers['x-roost-tenant'] }, 'request');
    done();
  });
  taskRoutes(app, ctx);
  opsRoutes(app, ctx);
  // The WebSocket plugin wraps every route of its scope and adds hooks to it: a scope of its own
  // keeps that off the other routes' path.
  await app.register(async (scope) => {
    await scope.register(fastifyWebsocket, { options: { maxPayload: http.bodyLimitBytes } });
    sockets.server = scope.websocketServer;
    websocketRoute(scope, ctx);
  });
  probeRoutes(app, ctx);
  const version = options.version ?? '0';
  const components = Object.fromEntries(Object.entries(SCHEMAS).map(([id, s]) => [id, s]));
  app.get('/openapi.json', { schema: { summary: 'This document', tags: ['probes'] } }, () => openApi(routes, components, version));
  return app;
}

/** Audit lines for what an operator (or a breaker) changed: quarantines, restores, replays. */
function audit(logger: PinoLogger, event: RoostEvent): void {
  switch (event.type) {
    case 'agent_quarantined':
      logger.warn({ audit: 'agent_quarantined', agent: event.agent, reason: event.reason, runs: event.runs, failures: event.failures, abandoned: event.abandoned }, 'agent quarantined');
      return;
    case 'agent_restored':
      logger.info({ audit: 'agent_restored', agent: event.agent }, 'agent restored');
      return;
    case 'dead_letter_replayed':
      logger.info({ audit: 'dead_letter_replayed', deadLetterId: event.deadLetterId, flow: event.flow, node: event.node, tenant: event.tenant, traceId: event.replayTraceId }, 'dead letter replayed');
      return;
    case 'dead_letter_deleted':
      logger.info({ audit: 'dead_letter_deleted', deadLetterId: event.deadLetterId, flow: event.flow, tenant: event.tenant }, 'dead letter deleted');
      return;
    case 'store_breaker_open':
      logger.error({ audit: 'store_breaker_open', failures: event.failures, error: event.error }, 'journal unavailable: breaker open');
      return;
    case 'store_breaker_closed':
      logger.info({ audit: 'store_breaker_closed' }, 'journal available again: breaker closed');
      return;
    default:
      return;
  }
}
