/**
 * What the routes of the HTTP service share: the runtime and its journal, the configuration, the
 * telemetry, and the one place the tenant of a request is decided (`X-Roost-Tenant` for now;
 * authentication comes later and changes only this function).
 */
import type { Span } from '@opentelemetry/api';
import type { FastifyRequest } from 'fastify';
import type { ServiceConfig } from '../config/load.js';
import { DEFAULT_TENANT, isName } from '../envelope/names.js';
import type { FleetView } from '../fleet/presence-registry.js';
import { RoostError } from '../errors.js';
import type { Runtime } from '../runtime/runtime.js';
import type { Store, StoredTrace } from '../store/store.js';
import type { Health } from '../telemetry/health.js';
import type { Logger } from '../telemetry/logger.js';
import type { RuntimeMetrics } from '../telemetry/metrics.js';
import type { Tracing } from '../telemetry/tracing.js';
import type { Admission } from './admission.js';
import { notFound } from './errors.js';
import type { EventRing } from './event-ring.js';

/** The settings of the service (a part of {@link ServiceConfig}). */
export type ServiceSettings = Pick<ServiceConfig, 'http' | 'admission' | 'websocket' | 'sse' | 'log'>;

/** @internal shared by the route modules. */
export interface ServiceContext {
  readonly runtime: Runtime;
  readonly store: Store;
  readonly settings: ServiceSettings;
  readonly logger: Logger;
  readonly metrics: RuntimeMetrics;
  readonly health: Health;
  readonly ring: EventRing;
  readonly admission: Admission;
  /** OpenTelemetry tracing, when configured (`OTEL_*`); else null. */
  readonly tracing: Tracing | null;
  /** The span of a request (null tracing: none). */
  readonly spanOf: (request: FastifyRequest) => Span | undefined;
  /** The fleet registry (presence of the other processes), when the service has one; else null. */
  readonly fleet: FleetView | null;
  /** True once shutdown began: new work is refused with `ROOST_ERR_DRAINING`. */
  readonly draining: () => boolean;
}

/** The header a request names its tenant in. */
export const TENANT_HEADER = 'x-roost-tenant';

/** The tenant of a request: the `X-Roost-Tenant` header, `default` when absent. */
export function tenantOf(request: FastifyRequest): string {
  const raw = request.headers[TENANT_HEADER];
  if (raw === undefined || raw === '') return DEFAULT_TENANT;
  const value = Array.isArray(raw) ? raw[0] : raw;
  if (!isName(value)) {
    throw new RoostError('ROOST_ERR_BAD_REQUEST', `header ${TENANT_HEADER}: expected a name matching [A-Za-z0-9._-]{1,64}`, {
      field: `header.${TENANT_HEADER}`,
      expected: 'a name matching [A-Za-z0-9._-]{1,64}',
      received: String(value).slice(0, 80),
    });
  }
  return value;
}

/** The journaled trace `traceId` of `tenant`; another tenant's, or none, is `ROOST_ERR_NOT_FOUND`. */
export async function tenantTrace(ctx: ServiceContext, traceId: string, tenant: string): Promise<StoredTrace> {
  const trace = await ctx.store.findTrace(traceId);
  if (trace === null || trace.tenant !== tenant) throw notFound('traceId', traceId, 'trace');
  return trace;
}

/** A trace as the API shows it. */
export function traceView(t: StoredTrace): Record<string, unknown> {
  const finished = t.status !== 'running';
  return {
    traceId: t.traceId,
    flow: t.flow,
    tenant: t.tenant,
    status: t.status,
    ...(t.status === 'succeeded' ? { result: t.result } : {}),
    ...(t.error !== null ? { error: t.error } : {}),
    createdAt: t.createdAt,
    updatedAt: t.updatedAt,
    finishedAt: finished ? t.updatedAt : null,
    durationMs: finished ? t.updatedAt - t.createdAt : null,
    deadline: t.deadline,
  };
}
