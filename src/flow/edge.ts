/**
 * The pieces a flow, its node runners and their runs share: the envelope in transit, the edge
 * queue, and what a runner needs from its flow. Kept apart so those three never import each other
 * in a circle.
 */
import type { Envelope } from '../envelope/envelope.js';
import { saltHash } from '../envelope/uuid.js';
import type { RoostError } from '../errors.js';
import { BoundedQueue, type OverflowPolicy } from './bounded-queue.js';
import type { NodeEventType } from './events.js';
import type { Journal, JournalEnvelope } from '../store/journal.js';
import type { FlowHost } from './host.js';
import type { Trace } from './trace.js';

/** @internal the receiving end of an edge. */
export interface EdgeTarget {
  readonly name: string;
  /** Starts queued work; `now` (epoch ms) when the caller has just read the clock. */
  pump(now?: number): void;
  /**
   * Makes the queue item for an envelope bound for this node (the node's run, not yet begun).
   * `firstAttempt` is the attempt its retry budget counts from (default: its attempt now).
   */
  prepare(env: Envelope, trace: Trace, hops: number, firstAttempt?: number): Msg;
}

/** @internal what events say about a node. */
export interface RunnerInfo {
  readonly name: string;
  depthIn(): number;
  depthOut(): number;
}

/**
 * @internal one envelope on its way through a flow. The item queued on an edge is the run that
 * will handle it (one object per hop, not two), made by the receiving node's `prepare`.
 */
export interface Msg extends JournalEnvelope {
  readonly env: Envelope;
  readonly trace: Trace;
  /** Edges crossed so far (bounded by the flow's hop budget). */
  readonly hops: number;
  /** The attempt it came to its node with: its retry budget counts from it. */
  readonly firstAttempt: number;
}

/** @internal what {@link NodeRunner.forward} makes outputs from: a run or a queued envelope. */
export interface Source extends Msg {
  /** Sends made from it so far (numbers its outputs for their derived ids). */
  outputSeq: number;
  /** The `IdBits` of its envelope's id, for deriving its outputs' ids; `idA` -1 while not read. */
  idA: number;
  idB: number;
  idC: number;
}

/** @internal a bounded queue between two nodes (or from the ingress to the first node). */
export class Edge {
  readonly queue: BoundedQueue<Msg>;
  /** `saltHash("<from>><to>")`: what the ids of envelopes sent along this edge are derived with. */
  readonly idSalt: number;
  constructor(
    readonly from: EdgeTarget | null,
    readonly to: EdgeTarget,
    capacity: number,
    readonly overflow: OverflowPolicy,
  ) {
    this.queue = new BoundedQueue<Msg>(capacity);
    this.idSalt = saltHash(`${from === null ? 'ingress' : from.name}>${to.name}`);
  }
}

/** @internal what a node runner needs from its flow. */
export interface RunnerFlow {
  readonly name: string;
  readonly host: FlowHost;
  readonly maxHops: number;
  nodeEvent(
    type: NodeEventType,
    runner: RunnerInfo,
    src: Msg,
    now: number,
    latencyMs: number | null,
    error: Error | null,
    delayMs: number | null,
  ): void;
  chunk(trace: Trace, node: string, data: unknown): void;
  lateResult(): void;
  enqueue(edge: Edge, msg: Msg, now?: number): Promise<void> | undefined;
  release(trace: Trace, now?: number): void;
  failTrace(trace: Trace, error: RoostError): void;
  deadLetter(node: string, env: Envelope, error: RoostError, attempts: number): void;
  /** An output of the trace (egress value or `ctx.reply`). */
  output(trace: Trace, value: unknown): void;
  /** The runtime's journal, or null. */
  readonly journal: Journal | null;
}

/** Makes the envelope a node sends on: same trace, tenant, deadline and headers. */
export function childEnvelope(parent: Envelope, from: string, to: string, payload: unknown, id: string, now: number): Envelope {
  return {
    v: 1,
    id,
    traceId: parent.traceId,
    parentId: parent.id,
    tenant: parent.tenant,
    from,
    to,
    kind: 'task',
    payload,
    headers: parent.headers,
    deadline: parent.deadline,
    createdAt: now,
    attempt: 1,
    idempotencyKey: parent.idempotencyKey,
  };
}
