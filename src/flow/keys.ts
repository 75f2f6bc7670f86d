/**
 * The keys a run derives from its input, the same in every process that runs it (the owner of the
 * trace, or a worker of the fleet): `ctx.idempotencyKey` and the `stepKey` of `ctx.step`.
 */
import { createHash } from 'node:crypto';

/** `ctx.idempotencyKey`: a hash of (trace id, flow, node, input envelope id). */
export function runKey(traceId: string, flow: string, node: string, envelopeId: string): string {
  return createHash('sha256').update(`${traceId}\u0000${flow}\u0000${node}\u0000${envelopeId}`).digest('hex').slice(0, 32);
}

/** A step's key: a hash of (trace id, flow, node, input envelope id, step name). */
export function stepKey(traceId: string, flow: string, node: string, envelopeId: string, name: string): string {
  return createHash('sha256').update(`${traceId}\u0000${flow}\u0000${node}\u0000${envelopeId}\u0000${name}`).digest('hex').slice(0, 32);
}
