/**
 * The fleet's wire protocol: the topics, and what travels on them between the process that owns
 * a trace and the workers that run its remote nodes. Every message is an envelope (the core
 * codec, size cap and validation apply); docs/reference/wire-formats.md describes each one.
 *
 *   <ns>/work/<flow>/<node>       a task for a node, to its worker group (one member takes it)
 *   <ns>/worker/<id>/work         a task for one worker (picked by the registry: least loaded)
 *   <ns>/owner/<id>               what workers send back to the owner of a trace
 *   <ns>/control                  aborts and cancels, to every worker
 *
 * A task is the node's input envelope with `roost-fleet-*` headers: where to answer, which
 * delivery this is, and the attempt. Workers answer with `event` envelopes whose payload is a
 * {@link WorkerMessage}.
 */
import { createHash } from 'node:crypto';
import type { Envelope } from '../envelope/envelope.js';
import { uuidv7 } from '../envelope/uuid.js';
import { ERROR_CODES, RoostError, isRoostError, type ErrorCode } from '../errors.js';
import { topicSegment } from '../transport/transport.js';

/** Header: the topic the worker answers on. */
export const H_REPLY = 'roost-fleet-reply';
/** Header: the delivery number of this envelope at this attempt (1, then 2… when sent again). */
export const H_DELIVERY = 'roost-fleet-delivery';
/** Header: the flow whose node the task is for. */
export const H_FLOW = 'roost-fleet-flow';
/** Header: the run of the owner process that sent it (aborts are remembered per run). */
export const H_EPOCH = 'roost-fleet-epoch';
/**
 * Header: the id a broker's own dedup should use for this message instead of the envelope's id
 * (JetStream's `Nats-Msg-Id`): a redelivery or a retry of a task keeps its envelope id.
 */
export const H_DEDUP_ID = 'roost-dedup-id';

/** A topic segment for a name, short enough for every broker (a long one is hashed). */
function segment(name: string): string {
  const s = topicSegment(name);
  return s.length <= 100 ? s : `h-${createHash('sha256').update(name).digest('hex').slice(0, 32)}`;
}

export function workTopic(ns: string, flow: string, node: string): string {
  return `${ns}/work/${segment(flow)}/${segment(node)}`;
}

/** The worker group of a node: group names are short and allow no dots, so it is a hash. */
export function workGroup(ns: string, flow: string, node: string): string {
  return `roost-${createHash('sha256').update(`${ns}\u0000${flow}\u0000${node}`).digest('hex').slice(0, 24)}`;
}

export function workerTopic(ns: string, worker: string): string {
  return `${ns}/worker/${segment(worker)}/work`;
}

export function ownerTopic(ns: string, owner: string): string {
  return `${ns}/owner/${segment(owner)}`;
}

export function controlTopic(ns: string): string {
  return `${ns}/control`;
}

/** One dispatch: an envelope at one attempt (a redelivery keeps it; a retry makes a new one). */
export function dispatchKey(envelopeId: string, attempt: number): string {
  return `${envelopeId}/${attempt}`;
}

/**
 * An error as it crosses the wire: a `RoostError` keeps its code; any other error its name and
 * message (the owner treats it as it would a local throw). Never a stack.
 */
export interface WireError {
  readonly code?: string;
  readonly message: string;
  readonly retryable: boolean;
  readonly name?: string;
  readonly details?: Readonly<Record<string, unknown>>;
}

/** What a worker sends the owner, about the dispatch `k`. */
export type WorkerMessage =
  /**
   * Holding these: the tasks it took in one turn of the event loop (their acknowledgement), and
   * every third of the lease all it still holds (one message per owner).
   */
  | { readonly t: 'beat'; readonly ks: readonly string[]; readonly w: string }
  /**
   * `ctx.emit`, `ctx.reply` and `ctx.chunk` of the handler, in order, numbered from 0 per run
   * (`n`): a run sent again repeats them, and the owner skips the numbers it has relayed already.
   */
  | { readonly t: 'emit'; readonly k: string; readonly w: string; readonly n: number; readonly v: unknown; readonly to?: string }
  | { readonly t: 'reply'; readonly k: string; readonly w: string; readonly n: number; readonly v: unknown }
  | { readonly t: 'chunk'; readonly k: string; readonly w: string; readonly n: number; readonly v: unknown }
  /** The handler returned `v` (absent: it returned nothing, and nothing goes on). */
  | { readonly t: 'done'; readonly k: string; readonly w: string; readonly v?: unknown }
  /** The handler threw (or the worker could not run it). */
  | { readonly t: 'fail'; readonly k: string; readonly w: string; readonly e: WireError }
  /** The worker has no room now: send it again (to another one), it does not count as an attempt. */
  | { readonly t: 'busy'; readonly k: string; readonly w: string };

/**
 * What an owner sends a worker on the worker's own topic: the relayed `ctx.emit` number `n` of
 * task `k` went on (room was found on the edges after the node), so the handler's `emit` resolves:
 * the flow's backpressure reaches a handler on another process.
 */
export interface RelayedMessage {
  readonly t: 'relayed';
  readonly k: string;
  readonly n: number;
}

/** The payload as a {@link RelayedMessage}, or null. */
export function readRelayedMessage(payload: unknown): RelayedMessage | null {
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) return null;
  const o = payload as Record<string, unknown>;
  return o['t'] === 'relayed' && typeof o['k'] === 'string' && Number.isInteger(o['n']) ? (o as unknown as RelayedMessage) : null;
}

/** What goes to every worker on the control topic. */
export type ControlMessage =
  /** Abort one dispatch (its run timed out at the owner). */
  | { readonly op: 'abort'; readonly k: string; readonly traceId: string; readonly epoch: string; readonly e: WireError }
  /** The trace was cancelled: abort all of its runs, and refuse its tasks still on the way. */
  | { readonly op: 'cancel'; readonly traceId: string; readonly epoch: string; readonly e: WireError };

/** Every `t` of a {@link WorkerMessage}. */
export const WORKER_MESSAGE_TYPES: readonly WorkerMessage['t'][] = ['beat', 'emit', 'reply', 'chunk', 'done', 'fail', 'busy'];
/** Every `op` of a {@link ControlMessage}. */
export const CONTROL_OPS: readonly ControlMessage['op'][] = ['abort', 'cancel'];
const WORKER_TYPES = new Set<string>(WORKER_MESSAGE_TYPES);

function isWireError(e: unknown): e is WireError {
  if (e === null || typeof e !== 'object') return false;
  const o = e as Record<string, unknown>;
  return (o['code'] === undefined || typeof o['code'] === 'string') && typeof o['message'] === 'string' && typeof o['retryable'] === 'boolean';
}

/** The payload as a worker message, or null when it is not one (counted and dropped by the caller). */
export function readWorkerMessage(payload: unknown): WorkerMessage | null {
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) return null;
  const o = payload as Record<string, unknown>;
  if (typeof o['t'] !== 'string' || !WORKER_TYPES.has(o['t']) || typeof o['w'] !== 'string') return null;
  if (o['t'] === 'beat') return Array.isArray(o['ks']) && o['ks'].every((k) => typeof k === 'string') ? (o as unknown as WorkerMessage) : null;
  if (typeof o['k'] !== 'string') return null;
  if (o['t'] === 'fail' && !isWireError(o['e'])) return null;
  if (o['t'] === 'emit' && o['to'] !== undefined && typeof o['to'] !== 'string') return null;
  if ((o['t'] === 'emit' || o['t'] === 'reply' || o['t'] === 'chunk') && !(Number.isInteger(o['n']) && (o['n'] as number) >= 0)) return null;
  return o as unknown as WorkerMessage;
}

/** The payload as a control message, or null. */
export function readControlMessage(payload: unknown): ControlMessage | null {
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) return null;
  const o = payload as Record<string, unknown>;
  if (typeof o['traceId'] !== 'string' || typeof o['epoch'] !== 'string' || !isWireError(o['e'])) return null;
  if (o['op'] === 'cancel') return o as unknown as ControlMessage;
  if (o['op'] === 'abort' && typeof o['k'] === 'string') return o as unknown as ControlMessage;
  return null;
}

/** An envelope carrying `payload` about `about` (a task), from `from` to `to`. */
export function messageEnvelope(about: Envelope, from: string, to: string, payload: unknown): Envelope {
  return {
    v: 1,
    id: uuidv7(),
    traceId: about.traceId,
    parentId: about.id,
    tenant: about.tenant,
    from,
    to,
    kind: 'event',
    payload,
    headers: {},
    deadline: null,
    createdAt: Date.now(),
    attempt: about.attempt,
    idempotencyKey: null,
  };
}

/** An error as it goes on the wire. */
export function wireError(error: Error): WireError {
  if (isRoostError(error)) {
    return { code: error.code, message: error.message, retryable: error.retryable, ...(error.details === undefined ? {} : { details: error.details }) };
  }
  const retryable = (error as { retryable?: unknown }).retryable;
  return { message: error.message, retryable: retryable !== false, ...(error.name !== 'Error' ? { name: error.name } : {}) };
}

/** The error a wire error stands for, as the owner's policy (retries, dead letters) sees it. */
export function fromWire(e: WireError): Error {
  if (e.code !== undefined && Object.hasOwn(ERROR_CODES, e.code)) {
    return new RoostError(e.code as ErrorCode, e.message, { retryable: e.retryable, ...(e.details === undefined ? {} : { details: e.details }) });
  }
  const error = new Error(e.message) as Error & { retryable?: boolean };
  if (e.name !== undefined) error.name = e.name;
  if (!e.retryable) error.retryable = false;
  return error;
}
