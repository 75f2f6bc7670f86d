/** Envelopes the transport benches send: a fresh id per message, the fields a task carries. */
import { ENVELOPE_VERSION, type Envelope } from '../../src/envelope/envelope.js';
import { uuidv7 } from '../../src/envelope/uuid.js';

export function taskEnvelope<T>(payload: T, fields: { readonly tenant: string; readonly from: string; readonly to: string; readonly traceparent: string }): Envelope<T> {
  const id = uuidv7();
  return {
    v: ENVELOPE_VERSION,
    id,
    traceId: id,
    parentId: null,
    tenant: fields.tenant,
    from: fields.from,
    to: fields.to,
    kind: 'task',
    payload,
    headers: { traceparent: fields.traceparent },
    deadline: null,
    createdAt: Date.now(),
    attempt: 1,
    idempotencyKey: null,
  };
}
