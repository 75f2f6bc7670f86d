/**
 * A task submission, over HTTP or the WebSocket: the checks both share (not draining, the flow
 * exists, the tenant is admitted) and the emit, under a trace span when tracing is on (the
 * envelopes then carry that span's `traceparent`).
 */
import { createHash } from 'node:crypto';
import type { Span } from '@opentelemetry/api';
import { uuidv7 } from '../envelope/uuid.js';
import { RoostError } from '../errors.js';
import type { EmitOptions, Flow } from '../flow/flow.js';
import { TRACEPARENT } from '../telemetry/tracing.js';
import type { ServiceContext } from './context.js';
import { notFound } from './errors.js';

/** Emit options the submit paths fill in. */
export type SubmitOptions = { -readonly [K in keyof EmitOptions]: EmitOptions[K] };

/**
 * The fingerprint an idempotency key is checked against: a digest of the task's input, the same
 * over HTTP and the WebSocket (the key is already scoped by flow and tenant). A retry that sends
 * another deadline or other headers is a repeat; another input is a conflict.
 */
export function taskFingerprint(input: unknown): string {
  return createHash('sha256').update(JSON.stringify(input ?? null)).digest('base64url').slice(0, 32);
}

/** The flow a submission names, once the service takes work and the tenant is admitted. */
export function admitTask(ctx: ServiceContext, flowName: string, tenant: string): Flow {
  if (ctx.draining()) throw new RoostError('ROOST_ERR_DRAINING', 'the service is shutting down: it takes no new work', { details: { retryAfterMs: 1_000 } });
  const flow = ctx.runtime.getFlow(flowName);
  if (flow === undefined) throw notFound('flow', flowName, 'flow');
  ctx.admission.admit(tenant);
  return flow;
}

/** Emits the task (see the module comment); `parent` is the span of the request that submits it. */
export async function emitTask(
  ctx: ServiceContext,
  flow: Flow,
  input: unknown,
  options: SubmitOptions,
  parent: Span | undefined,
): Promise<{ traceId: string; deduplicated: boolean }> {
  const tracing = ctx.tracing;
  if (tracing === null) return flow.emit(input, options);
  const traceId = options.traceId ?? uuidv7();
  const traced = tracing.beginTrace(parent, flow.name, options.tenant ?? 'default', traceId);
  const headers = { ...(options.headers ?? {}) };
  if (traced.traceparent !== undefined) headers[TRACEPARENT] = traced.traceparent;
  try {
    const result = await flow.emit(input, { ...options, traceId, headers });
    traced.settle(result);
    return result;
  } catch (error) {
    traced.settle({ error });
    throw error;
  }
}
