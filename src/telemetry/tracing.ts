/**
 * OpenTelemetry tracing of the service: a span per HTTP request, per trace and per node run,
 * exported over OTLP (HTTP, JSON) as the standard `OTEL_*` variables say. Off unless one of them
 * asks for it (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
 * `OTEL_TRACES_EXPORTER=otlp|console`); `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`
 * keep it off.
 *
 * How the spans nest: a request's span continues the caller's W3C `traceparent`; a trace
 * submitted by that request gets a span under it, and the envelopes of the trace carry that
 * span's `traceparent` in their headers; each node run is a span under its trace's (or, for a
 * trace this process did not start, under the envelope's `traceparent`). The handler runs with
 * the node's span active, so the handler's own instrumented calls nest under it.
 */
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context as otelContext,
  defaultTextMapGetter,
  defaultTextMapSetter,
  trace,
  type Context,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { BatchSpanProcessor, ConsoleSpanExporter, NodeTracerProvider, SimpleSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-node';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { Envelope } from '../envelope/envelope.js';
import { ensureError, isRoostError } from '../errors.js';
import type { RoostEvent } from '../flow/events.js';
import type { HandlerContext, Middleware } from '../flow/handler.js';

/** The header a W3C trace context travels in (HTTP requests, envelope headers). */
export const TRACEPARENT = 'traceparent';

/** Whether the `OTEL_*` variables of `env` ask for traces, and to which exporter. */
export function tracingExporter(env: Readonly<Record<string, string | undefined>>): 'otlp' | 'console' | null {
  if ((env['OTEL_SDK_DISABLED'] ?? '').toLowerCase() === 'true') return null;
  const named = (env['OTEL_TRACES_EXPORTER'] ?? '').split(',')[0]!.trim().toLowerCase();
  if (named === 'none') return null;
  if (named === 'console') return 'console';
  if (named === 'otlp') return 'otlp';
  const endpoint = env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] ?? env['OTEL_EXPORTER_OTLP_ENDPOINT'] ?? '';
  return endpoint.trim() === '' ? null : 'otlp';
}

/** The tracing of one process: see the module comment. Made by {@link startTracing}. */
export class Tracing {
  private readonly propagator = new W3CTraceContextPropagator();
  /** The span of each trace this process is running, by trace id (ended when the trace ends). */
  private readonly traces = new Map<string, Span>();

  /** @internal see {@link startTracing}. */
  constructor(
    readonly tracer: Tracer,
    private readonly provider: NodeTracerProvider | null,
  ) {}

  /** The context a carrier of headers (an HTTP request's, an envelope's) continues. */
  extract(headers: Readonly<Record<string, string | string[] | undefined>>): Context {
    return this.propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter);
  }

  /** The `traceparent` of `span`. */
  traceparentOf(span: Span): string | undefined {
    const carrier: Record<string, string> = {};
    this.propagator.inject(trace.setSpan(ROOT_CONTEXT, span), carrier, defaultTextMapSetter);
    return carrier[TRACEPARENT];
  }

  /** Starts the span of an HTTP request (ended by {@link endRequest}). */
  startRequest(method: string, route: string, path: string, headers: Readonly<Record<string, string | string[] | undefined>>): Span {
    return this.tracer.startSpan(
      `${method} ${route}`,
      { kind: SpanKind.SERVER, attributes: { 'http.request.method': method, 'http.route': route, 'url.path': path } },
      this.extract(headers),
    );
  }

  endRequest(span: Span, status: number): void {
    span.setAttribute('http.response.status_code', status);
    if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    span.end();
  }

  /**
   * Starts the span of a trace about to be emitted as `traceId` (under `parent`, the submitting
   * request's span). Put `traceparent` in the envelope headers, then call `settle` with what the
   * emit did: an emit that failed, or that was answered with an earlier trace (an idempotency
   * key), started nothing, so its span ends there; else it ends with the trace.
   */
  beginTrace(
    parent: Span | undefined,
    flow: string,
    tenant: string,
    traceId: string,
  ): { readonly traceparent: string | undefined; settle(outcome: { readonly traceId: string; readonly deduplicated: boolean } | { readonly error: unknown }): void } {
    const span = this.tracer.startSpan(
      `roost.trace ${flow}`,
      { kind: SpanKind.INTERNAL, attributes: { 'roost.flow': flow, 'roost.tenant': tenant, 'roost.trace_id': traceId } },
      parent === undefined ? ROOT_CONTEXT : trace.setSpan(ROOT_CONTEXT, parent),
    );
    // A trace id that is running already (the emit will be refused) keeps its own span.
    const registered = !this.traces.has(traceId);
    if (registered) this.traces.set(traceId, span);
    return {
      traceparent: this.traceparentOf(span),
      settle: (outcome) => {
        if ('error' in outcome) fail(span, outcome.error);
        else if (outcome.deduplicated || outcome.traceId !== traceId) {
          span.setAttribute('roost.deduplicated', true);
          span.setAttribute('roost.first_trace_id', outcome.traceId);
        } else if (registered) return; // running: ended by its trace's end event
        if (registered && this.traces.get(traceId) === span) this.traces.delete(traceId);
        span.end();
      },
    };
  }

  /** Ends trace spans as their traces end, and starts one for a trace begun elsewhere (resume, replay, an in-process emit). */
  readonly onEvent = (event: RoostEvent): void => {
    switch (event.type) {
      case 'trace_start': {
        if (this.traces.has(event.traceId)) return;
        const span = this.tracer.startSpan(
          `roost.trace ${event.flow}`,
          { kind: SpanKind.INTERNAL, attributes: { 'roost.flow': event.flow, 'roost.tenant': event.tenant, 'roost.trace_id': event.traceId } },
          ROOT_CONTEXT,
        );
        this.traces.set(event.traceId, span);
        return;
      }
      case 'trace_success':
      case 'trace_failed':
      case 'trace_cancel_finish': {
        const span = this.traces.get(event.traceId);
        if (span === undefined) return;
        this.traces.delete(event.traceId);
        span.setAttribute('roost.outcome', event.type === 'trace_success' ? 'succeeded' : event.type === 'trace_failed' ? 'failed' : 'cancelled');
        if (event.error !== null) {
          span.setAttribute('roost.error_code', event.error.code);
          span.setStatus({ code: SpanStatusCode.ERROR, message: event.error.message });
        }
        span.end();
        return;
      }
      default:
        return;
    }
  };

  /** A span per handler run, under its trace's span (or the envelope's `traceparent`), active while the handler runs. */
  readonly middleware: Middleware = (envelope: Envelope, ctx: HandlerContext, next: (envelope: Envelope) => Promise<unknown>) => {
    const traceSpan = this.traces.get(ctx.traceId);
    const parent = traceSpan !== undefined ? trace.setSpan(ROOT_CONTEXT, traceSpan) : this.extract(envelope.headers);
    const span = this.tracer.startSpan(
      `roost.node ${ctx.node}`,
      {
        kind: SpanKind.INTERNAL,
        attributes: { 'roost.flow': ctx.flow, 'roost.node': ctx.node, 'roost.tenant': ctx.tenant, 'roost.trace_id': ctx.traceId, 'roost.envelope_id': envelope.id, 'roost.attempt': ctx.attempt },
      },
      parent,
    );
    const failed = (thrown: unknown): never => {
      fail(span, thrown);
      span.end();
      throw thrown;
    };
    let running: Promise<unknown>;
    try {
      running = otelContext.with(trace.setSpan(parent, span), () => next(envelope));
    } catch (thrown) {
      return failed(thrown); // a handler that throws before it returns a promise
    }
    return running.then((value) => {
      span.end();
      return value;
    }, failed);
  };

  /** Ends the spans of traces still running (they go on after a restart, under a new span) and flushes the exporter. */
  async shutdown(): Promise<void> {
    for (const span of this.traces.values()) {
      span.setAttribute('roost.outcome', 'unfinished');
      span.end();
    }
    this.traces.clear();
    await this.provider?.shutdown();
  }

  /** Trace spans open now (tests). */
  get openTraces(): number {
    return this.traces.size;
  }
}

function fail(span: Span, thrown: unknown): void {
  const error = ensureError(thrown);
  span.recordException(error);
  if (isRoostError(error)) span.setAttribute('roost.error_code', error.code);
  span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
}

/**
 * Starts tracing as the `OTEL_*` variables of `env` say, or returns null when they do not ask
 * for it. Registers the provider globally (the OpenTelemetry API, the AsyncLocalStorage context
 * manager, the W3C propagator) so that libraries the handlers use join the same traces. The
 * exporter reads its own settings (`OTEL_EXPORTER_OTLP_*`: endpoint, headers, timeout) from the
 * process environment.
 */
export function startTracing(
  env: Readonly<Record<string, string | undefined>> = process.env,
  service: { readonly name?: string; readonly version?: string } = {},
): Tracing | null {
  const exporter = tracingExporter(env);
  if (exporter === null) return null;
  const spanProcessors: SpanProcessor[] =
    exporter === 'console' ? [new SimpleSpanProcessor(new ConsoleSpanExporter())] : [new BatchSpanProcessor(new OTLPTraceExporter())];
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({
      ...resourceAttributes(env['OTEL_RESOURCE_ATTRIBUTES']),
      'service.name': env['OTEL_SERVICE_NAME'] ?? service.name ?? 'roost',
      ...(service.version === undefined ? {} : { 'service.version': service.version }),
    }),
    spanProcessors,
  });
  provider.register();
  return new Tracing(provider.getTracer('roost', service.version), provider);
}

/**
 * `OTEL_RESOURCE_ATTRIBUTES` (`key=value,key=value`, values percent-encoded) as attributes; an
 * entry without `=` or with an empty key is skipped, as the specification says.
 */
export function resourceAttributes(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (text ?? '').split(',')) {
    const at = pair.indexOf('=');
    if (at <= 0) continue;
    const key = pair.slice(0, at).trim();
    if (key === '') continue;
    let value = pair.slice(at + 1).trim();
    try {
      value = decodeURIComponent(value);
    } catch {
      // not valid percent-encoding: keep the text as it was written
    }
    out[key] = value;
  }
  return out;
}
