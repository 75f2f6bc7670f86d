/**
 * Tasks and traces over HTTP: submit a task to a flow, read, list and cancel traces, a trace's
 * history, and its events as Server-Sent Events. Every query is scoped by the request's tenant;
 * another tenant's trace is not found.
 */
import type { FastifyInstance } from 'fastify';
import { UUIDV7_PATTERN } from '../envelope/uuid.js';
import { NAME_PATTERN } from '../envelope/names.js';
import { traceHistory } from '../store/history.js';
import { tenantOf, tenantTrace, traceView, type ServiceContext } from './context.js';
import type { NumberedEvent } from './event-ring.js';
import { admitTask, emitTask, taskFingerprint, type SubmitOptions } from './submit.js';
import { watchTrace, type TraceEnd } from './watch.js';

const traceIdParam = { type: 'object', required: ['traceId'], properties: { traceId: { type: 'string', pattern: UUIDV7_PATTERN } } } as const;
const flowParam = { type: 'object', required: ['flow'], properties: { flow: { type: 'string', pattern: NAME_PATTERN } } } as const;
const errorRef = { $ref: 'roost-error#' } as const;

/** The body of a task submission. */
interface SubmitBody {
  readonly input?: unknown;
  readonly deadline?: number;
  readonly timeoutMs?: number;
  readonly headers?: Record<string, string>;
  readonly traceId?: string;
}

/** The SSE frame of one event. */
function sseFrame(id: string | null, event: string, data: unknown): string {
  return `${id === null ? '' : `id: ${id}\n`}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** Registers the routes (see the module comment). */
export function taskRoutes(app: FastifyInstance, ctx: ServiceContext): void {
  const { runtime, store } = ctx;

  app.get('/v1/flows', { schema: { summary: 'The flows this service runs', tags: ['tasks'] } }, () => ({
    flows: runtime.flowNames().map((name) => ({ name, nodes: runtime.getFlow(name)!.nodeNames() })),
  }));

  app.post<{ Params: { flow: string }; Body: SubmitBody; Querystring: { wait?: number } }>(
    '/v1/flows/:flow/tasks',
    {
      schema: {
        summary: 'Submit a task to a flow',
        description:
          'Starts a trace of the flow with `input` as its payload: 202 with the trace id. With an `Idempotency-Key` header, the same key and the same body return the first trace (200, `deduplicated: true`); the same key with another body is 409 `ROOST_ERR_IDEMPOTENCY_CONFLICT`. `?wait=<ms>` waits up to that long for the end: 200 with the result (or the error) when it came in time.',
        tags: ['tasks'],
        params: flowParam,
        querystring: { type: 'object', additionalProperties: false, properties: { wait: { type: 'integer', minimum: 0, maximum: ctx.settings.http.waitMaxMs } } },
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            input: { description: 'the payload (any JSON)' },
            deadline: { type: 'integer', minimum: 0, description: 'absolute deadline, epoch ms' },
            timeoutMs: { type: 'integer', minimum: 1, maximum: 2_147_483_647, description: 'deadline relative to now (ignored with deadline)' },
            headers: { type: 'object', maxProperties: 64, additionalProperties: { type: 'string', maxLength: 8192 }, description: 'envelope headers' },
            traceId: { type: 'string', pattern: UUIDV7_PATTERN, description: 'the trace id to use (default: a new one)' },
          },
        },
        response: { 200: { $ref: 'roost-task#' }, 202: { $ref: 'roost-task#' }, '4xx': errorRef, '5xx': errorRef },
      },
    },
    async (request, reply) => {
      const tenant = tenantOf(request);
      const flow = admitTask(ctx, request.params.flow, tenant);
      const body = request.body ?? {};
      const headers: Record<string, string> = { ...(body.headers ?? {}) };
      const traceparent = request.headers['traceparent'];
      if (typeof traceparent === 'string' && headers['traceparent'] === undefined) headers['traceparent'] = traceparent;
      const options: SubmitOptions = { tenant, headers };
      if (body.deadline !== undefined) options.deadline = body.deadline;
      else if (body.timeoutMs !== undefined) options.deadline = Date.now() + body.timeoutMs;
      if (body.traceId !== undefined) options.traceId = body.traceId;
      const key = request.headers['idempotency-key'];
      if (typeof key === 'string' && key !== '') {
        options.idempotencyKey = key;
        options.idempotencyFingerprint = taskFingerprint(body.input);
      }
      const { traceId, deduplicated } = await emitTask(ctx, flow, body.input ?? null, options, ctx.spanOf(request));
      if (ctx.settings.log.payloads) request.log.info({ flow: flow.name, traceId, tenant, input: body.input }, 'task submitted');
      const wait = request.query.wait ?? 0;
      const end = wait > 0 ? await waitForEnd(ctx, flow.name, traceId, wait) : null;
      const view: Record<string, unknown> = { traceId, flow: flow.name, tenant, deduplicated, status: end?.status ?? 'running' };
      if (end !== null) {
        if (end.status === 'succeeded') view['result'] = end.result;
        else if (end.error !== undefined && end.error !== null) view['error'] = end.error;
      }
      view['links'] = { self: `/v1/traces/${traceId}`, events: `/v1/traces/${traceId}/events`, history: `/v1/traces/${traceId}/history` };
      return reply.code(end !== null || deduplicated ? 200 : 202).send(view);
    },
  );

  app.get<{ Querystring: { flow?: string; status?: 'running' | 'succeeded' | 'failed' | 'cancelled'; since?: number; until?: number; limit?: number; cursor?: string } }>(
    '/v1/traces',
    {
      schema: {
        summary: "List the tenant's traces, newest first",
        tags: ['traces'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            flow: { type: 'string', pattern: NAME_PATTERN },
            status: { type: 'string', enum: ['running', 'succeeded', 'failed', 'cancelled'] },
            since: { type: 'integer', minimum: 0, description: 'accepted at or after (epoch ms)' },
            until: { type: 'integer', minimum: 0, description: 'accepted before (epoch ms)' },
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
            cursor: { type: 'string', maxLength: 512, description: 'the `next` of the previous page' },
          },
        },
        response: { '4xx': errorRef, '5xx': errorRef },
      },
    },
    async (request) => {
      const tenant = tenantOf(request);
      const q = request.query;
      const page = await store.listTraces({
        tenant,
        ...(q.flow === undefined ? {} : { flow: q.flow }),
        ...(q.status === undefined ? {} : { status: q.status }),
        ...(q.since === undefined ? {} : { since: q.since }),
        ...(q.until === undefined ? {} : { until: q.until }),
        ...(q.limit === undefined ? {} : { limit: q.limit }),
        ...(q.cursor === undefined ? {} : { cursor: q.cursor }),
      });
      return { traces: page.traces.map(traceView), next: page.next };
    },
  );

  app.get<{ Params: { traceId: string } }>(
    '/v1/traces/:traceId',
    { schema: { summary: 'A trace: status, result or error, timings', tags: ['traces'], params: traceIdParam, response: { '4xx': errorRef, '5xx': errorRef } } },
    async (request) => traceView(await tenantTrace(ctx, request.params.traceId, tenantOf(request))),
  );

  app.post<{ Params: { traceId: string } }>(
    '/v1/traces/:traceId/cancel',
    {
      schema: {
        summary: 'Cancel a trace: its queued envelopes are dropped and its running handlers aborted',
        tags: ['traces'],
        params: traceIdParam,
        response: { '4xx': errorRef, '5xx': errorRef },
      },
    },
    async (request) => {
      const trace = await tenantTrace(ctx, request.params.traceId, tenantOf(request));
      const flow = runtime.getFlow(trace.flow);
      const cancelled = flow === undefined ? false : await flow.cancel(trace.traceId);
      if (cancelled) request.log.info({ audit: 'trace_cancel', traceId: trace.traceId, flow: trace.flow, tenant: trace.tenant }, 'cancelled a trace on request');
      return { traceId: trace.traceId, cancelled, status: cancelled ? 'cancelled' : trace.status };
    },
  );

  app.get<{ Params: { traceId: string } }>(
    '/v1/traces/:traceId/history',
    {
      schema: {
        summary: "A trace's journaled events, in order",
        tags: ['traces'],
        params: traceIdParam,
        response: { '4xx': errorRef, '5xx': errorRef },
      },
    },
    async (request) => {
      const trace = await tenantTrace(ctx, request.params.traceId, tenantOf(request));
      const events = await traceHistory(store, trace.traceId);
      return { traceId: trace.traceId, events: events.map((e) => ({ seq: e.seq, type: e.type, ts: e.ts, event: e.event })) };
    },
  );

  app.get<{ Params: { traceId: string }; Querystring: { lastEventId?: number } }>(
    '/v1/traces/:traceId/events',
    {
      schema: {
        summary: "A trace's events as Server-Sent Events",
        description:
          'The events of the trace still buffered (sse.buffer_events, across traces), then the live ones, then an `end` event with the status and the result or error; then the stream closes. Each event has an `id`: reconnect with `Last-Event-ID` (or `?lastEventId=`) to get only what came after it; a `gap` event says when some were lost.',
        tags: ['traces'],
        params: traceIdParam,
        querystring: { type: 'object', additionalProperties: false, properties: { lastEventId: { type: 'integer', minimum: 0 } } },
      },
    },
    async (request, reply) => {
      const trace = await tenantTrace(ctx, request.params.traceId, tenantOf(request));
      const header = request.headers['last-event-id'];
      const fromHeader = typeof header === 'string' && /^\d+$/.test(header) ? Number(header) : undefined;
      const after = fromHeader ?? request.query.lastEventId ?? 0;
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
        'x-request-id': request.id,
      });
      ctx.metrics.streamClients.inc({ kind: 'sse' });
      let open = true;
      // Set once the watch exists; the watch can call back (replaying the ring) before that.
      let stop: (() => void) | null = null;
      const close = (destroy = false): void => {
        if (!open) return;
        open = false;
        clearInterval(heartbeat);
        stop?.();
        ctx.metrics.streamClients.dec({ kind: 'sse' });
        if (destroy) res.destroy();
        else res.end();
      };
      const write = (frame: string): void => {
        if (!open) return;
        res.write(frame);
        // A reader this far behind would make the server hold its events without bound: drop it.
        if (res.writableLength > ctx.settings.websocket.maxBufferedBytes) close(true);
      };
      const heartbeat = setInterval(() => write(': keep-alive\n\n'), 15_000);
      heartbeat.unref();
      const stopWatch = watchTrace(ctx.ring, runtime, store, trace.flow, trace.traceId, after, {
        event: (e: NumberedEvent) => write(sseFrame(String(e.seq), e.event.type, e.event)),
        gap: (from, to) => write(sseFrame(null, 'gap', { from, to, history: `/v1/traces/${trace.traceId}/history` })),
        end: (end: TraceEnd) => {
          write(sseFrame(null, 'end', end));
          close();
        },
      });
      if (open) stop = stopWatch;
      else stopWatch(); // closed while the ring was replayed
      request.raw.on('close', () => close());
    },
  );
}

/** The end of a trace within `ms`, or null when it is still running then. */
export function waitForEnd(ctx: ServiceContext, flow: string, traceId: string, ms: number): Promise<TraceEnd | null> {
  return new Promise((resolve) => {
    let done = false;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      stop();
      resolve(null);
    }, ms);
    // From the live events only: the submission's own events are all still in the ring.
    const stop = watchTrace(ctx.ring, ctx.runtime, ctx.store, flow, traceId, ctx.ring.nextSeq - 1, {
      event: () => {},
      gap: () => {},
      end: (end) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        // The answer carries the result: the runtime need not hold it for a fetch nobody makes
        // here (later readers get it from the journal).
        ctx.runtime.getFlow(flow)?.dropResult(traceId);
        resolve(end);
      },
    });
  });
}
