/**
 * Runs one node of a flow: takes envelopes from its incoming edges round-robin (FIFO per edge),
 * runs up to `concurrency` of them at once, and sends outputs to its outgoing edges, waiting for
 * room there (backpressure). Joins are collected here too.
 */
import type { Envelope } from '../envelope/envelope.js';
import { deriveId, idBits, lastIdBits, uuidv7 } from '../envelope/uuid.js';
import { RoostError } from '../errors.js';
import type { Agent } from '../runtime/agent.js';
import type { Timed } from '../resilience/timer-queue.js';
import { clockNow } from '../resilience/clock.js';
import { TimeoutLane } from '../resilience/timeout-lane.js';
import { childEnvelope, type Edge, type Msg, type RunnerFlow, type Source } from './edge.js';
import type { Handler, HandlerContext, Middleware } from './handler.js';
import type { Node } from './node.js';
import { checkSchema, type ResolvedNodePolicy } from './policy.js';
import { Run, type RunOwner } from './run.js';
import type { Trace } from './trace.js';

class JoinState implements Timed {
  timerAt = 0;
  timerIndex = -1;
  payloads: unknown[] = [];
  /** The envelopes collected: journaled as consumed only when the join fires. */
  held: Msg[] = [];
  /** It has sent its `k` on; it stays until the trace ends, so later arrivals are surplus. */
  fired = false;
  constructor(
    private readonly runner: NodeRunner,
    readonly trace: Trace,
  ) {}
  onTimer(): void {
    this.runner.joinTimedOut(this);
  }
}

/** @internal the running form of one node in one flow. */
export class NodeRunner implements RunOwner {
  readonly name: string;
  readonly inEdges: Edge[] = [];
  readonly outEdges: Edge[] = [];
  readonly outByName = new Map<string, Edge>();
  /** Runs holding a slot now. */
  running = 0;
  private rr = 0;
  private pumping = false;
  private readonly middlewares: readonly Middleware[];
  /** Join state per trace, kept until the trace ends (see `joinArrive`). */
  private readonly joins: Map<string, JoinState> | null;
  private joinsOpen = 0;
  /** Envelopes a join waits for per trace. */
  joinK = 1;
  readonly lane: TimeoutLane;

  constructor(
    readonly flow: RunnerFlow,
    readonly node: Node,
    readonly agent: Agent | null,
    readonly handler: Handler | null,
    readonly policy: ResolvedNodePolicy,
    /** Its handler sends the envelope to the fleet's workers, which validate and run middlewares themselves. */
    readonly remote = false,
  ) {
    this.name = node.name;
    this.middlewares = flow.host.middlewares;
    this.joins = node.kind === 'join' ? new Map() : null;
    this.lane = new TimeoutLane(flow.host.timers);
    if (agent !== null) agent.onRestore(() => this.pump());
  }

  /** Traces this join node is collecting envelopes for. */
  get joinsWaiting(): number {
    return this.joinsOpen;
  }

  /** Envelopes queued on the incoming edges. */
  depthIn(): number {
    const edges = this.inEdges;
    let n = 0;
    for (let i = 0; i < edges.length; i++) n += edges[i]!.queue.size;
    return n;
  }

  /** Envelopes queued on the outgoing edges. */
  depthOut(): number {
    const edges = this.outEdges;
    let n = 0;
    for (let i = 0; i < edges.length; i++) n += edges[i]!.queue.size;
    return n;
  }

  /**
   * Starts queued envelopes while slots are free. Safe to call at any time, re-entrantly. `now`
   * is the caller's clock reading when it has one (a send, a finished run), taken in this same
   * synchronous turn; otherwise the clock is read once per call (a clock read costs about
   * 100 ns on Node 20, see `clock.ts`). Node arms its own timers against a clock cached per
   * loop turn in the same way.
   */
  pump(now?: number): void {
    if (this.pumping) return; // the loop below is already running and will see the new work
    this.pumping = true;
    try {
      const edges = this.inEdges;
      const n = edges.length;
      const agent = this.agent;
      while (this.running < this.policy.concurrency) {
        if (agent !== null && agent.quarantined && agent.quarantineOptions.mode === 'park') break;
        let msg: Msg | undefined;
        for (let i = 0; i < n; i++) {
          const edge = edges[this.rr]!;
          if (++this.rr === n) this.rr = 0;
          if (edge.queue.size > 0) {
            msg = edge.queue.shift();
            break;
          }
        }
        if (msg === undefined) break;
        this.dispatch(msg, now ?? (now = clockNow()));
      }
    } finally {
      this.pumping = false;
    }
  }

  private dispatch(msg: Msg, now: number): void {
    const trace = msg.trace;
    if (!trace.running) return;
    const env = msg.env;
    if (env.deadline !== null && env.deadline <= now) {
      this.flow.nodeEvent('deadline_skip', this, msg, now, null, null, null);
      this.flow.failTrace(
        trace,
        new RoostError('ROOST_ERR_DEADLINE_EXCEEDED', `trace ${trace.id}: deadline passed before node ${this.name} could run`, {
          details: { node: this.name, deadline: env.deadline },
        }),
      );
      return;
    }
    if (this.joins !== null) {
      this.joinArrive(msg, now);
      return;
    }
    if (this.agent !== null && this.agent.quarantined) {
      const error = new RoostError('ROOST_ERR_QUARANTINED', `agent ${this.agent.name} is quarantined`, {
        details: { agent: this.agent.name, node: this.name },
      });
      this.flow.nodeEvent('node_failed', this, msg, now, null, error, null);
      this.flow.deadLetter(this.name, env, error, 0);
      this.flow.failTrace(trace, error);
      return;
    }
    this.running++;
    const run = msg as Run; // every item on this node's edges was made by its prepare()
    trace.addRun(run);
    run.begin(now);
  }

  /** The queue item for an envelope bound for this node: its run, begun when dispatched. */
  prepare(env: Envelope, trace: Trace, hops: number, firstAttempt: number = env.attempt): Msg {
    return new Run(this, env, trace, hops, firstAttempt);
  }

  /** Calls the handler through input validation and the middlewares. */
  invoke(env: Envelope, ctx: HandlerContext): unknown {
    const handler = this.handler!;
    if (this.remote) return handler(env, ctx);
    if (this.policy.validateInput !== null) checkSchema(this.policy.validateInput, env.payload, `${this.name}.input`);
    if (this.middlewares.length === 0) return handler(env, ctx);
    const chain = this.middlewares;
    // `next` always returns a promise, even when the handler (or a middleware) throws at once.
    const call = (i: number, e: Envelope): Promise<unknown> => {
      try {
        return Promise.resolve(i === chain.length ? handler(e, ctx) : chain[i]!(e, ctx, (next) => call(i + 1, next)));
      } catch (err) {
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- rethrows what the handler threw, as it was
        return Promise.reject(err);
      }
    };
    return call(0, env);
  }

  /**
   * Sends `payload` from `src` to each of `edges` (or, on an egress node, makes it an output of
   * the trace). Returns a promise only when some edge was full and the send has to wait.
   */
  forward(src: Source, payload: unknown, edges: readonly Edge[], now: number = clockNow()): Promise<void> | undefined {
    const trace = src.trace;
    if (edges.length === 0) {
      this.flow.output(trace, payload);
      return undefined;
    }
    const hops = src.hops + 1;
    if (hops > this.flow.maxHops) {
      this.flow.failTrace(
        trace,
        new RoostError('ROOST_ERR_HOP_BUDGET', `trace ${trace.id}: hop budget of ${this.flow.maxHops} spent at node ${this.name}`, {
          details: { node: this.name, maxHops: this.flow.maxHops },
        }),
      );
      return undefined;
    }
    let waits: Promise<void>[] | null = null;
    const journal = this.flow.journal;
    // With a journal, output ids are derived from the input and the output's place, so a node
    // run again after a crash sends the same envelopes on (see deriveId).
    const seq = src.outputSeq++;
    for (let i = 0; i < edges.length; i++) {
      const edge = edges[i]!;
      if (!trace.running) break;
      let id: string;
      if (journal === null) id = uuidv7(now);
      else {
        if (src.idA < 0) readIdBits(src); // an envelope read back from the journal
        id = deriveId(src.env.id.slice(0, 13), src.idA, src.idB, src.idC, edge.idSalt, seq);
      }
      if (trace.replayIds !== null && trace.replayIds.has(id)) continue; // queued already, from the journal
      const env = childEnvelope(src.env, this.name, edge.to.name, payload, id, now);
      trace.pending++;
      // Journaled before it is queued, so its consumption (maybe this same tick) comes after.
      const msg = edge.to.prepare(env, trace, hops) as Source; // a run: every node's prepare() makes one
      if (journal !== null) setIdBits(msg);
      journal?.accept({ flow: this.flow.name, node: edge.to.name, envelope: env, hops }, msg, trace);
      const wait = this.flow.enqueue(edge, msg, now);
      if (wait !== undefined) (waits ??= []).push(wait);
    }
    if (waits === null) return undefined;
    return waits.length === 1 ? waits[0] : Promise.all(waits).then(noop);
  }

  /**
   * A join sends on once per trace, when `k` envelopes of it have arrived. With `k` below the
   * number of branches that arrive (a quorum, "first k of n"), the later ones are surplus: they
   * are consumed and reported (`join_surplus`), never the start of a second join that would time
   * out and fail a trace that already went on.
   */
  private joinArrive(msg: Msg, now: number): void {
    const trace = msg.trace;
    const joins = this.joins!;
    let state = joins.get(trace.id);
    if (state === undefined) {
      const created = new JoinState(this, trace);
      state = created;
      joins.set(trace.id, created);
      this.joinsOpen++;
      trace.pending++; // the join holds the trace open until it sends on or gives up
      this.flow.host.timers.schedule(created, now + this.node.join!.timeoutMs);
      trace.onEnd(() => {
        this.flow.host.timers.remove(created);
        if (!created.fired) this.joinsOpen--;
        joins.delete(trace.id);
      });
    } else if (state.fired) {
      this.flow.nodeEvent('join_surplus', this, msg, now, null, null, null);
      this.flow.journal?.consume(msg.env.id, msg);
      this.flow.release(trace, now);
      return;
    }
    state.payloads.push(msg.env.payload);
    // With a journal, collected envelopes stay pending until the join fires: after a crash
    // they are queued here again and the join is rebuilt.
    if (this.flow.journal !== null) state.held.push(msg);
    this.flow.release(trace, now); // the arriving envelope is consumed
    if (state.payloads.length < this.joinK || !trace.running) return;
    this.flow.host.timers.remove(state);
    state.fired = true;
    this.joinsOpen--;
    const payloads = state.payloads;
    state.payloads = [];
    const sent = this.forward(msg as Run, payloads, this.outEdges, now); // every item queued here was made by prepare()
    const journal = this.flow.journal;
    if (journal !== null) for (const m of state.held) journal.consume(m.env.id, m);
    state.held = [];
    if (sent === undefined) this.flow.release(trace, now);
    else sent.then(() => this.flow.release(trace), noop);
  }

  /** @internal a join's timer fired before it had `k` envelopes. */
  joinTimedOut(state: JoinState): void {
    this.flow.failTrace(
      state.trace,
      new RoostError(
        'ROOST_ERR_JOIN_TIMEOUT',
        `join ${this.name}: ${state.payloads.length} of ${this.joinK} envelopes of trace ${state.trace.id} came within ${this.node.join!.timeoutMs} ms`,
        { details: { node: this.name, received: state.payloads.length, k: this.joinK } },
      ),
    );
  }

  /** Queued envelopes (for cancel), removing those of `trace`. */
  dropQueued(trace: Trace, reason: RoostError): number {
    let dropped = 0;
    for (const edge of this.inEdges) {
      if (edge.queue.size === 0 && edge.queue.waiting === 0) continue;
      dropped += edge.queue.removeWhere((m) => m.trace === trace, reason).length;
    }
    return dropped;
  }
}

function noop(): void {}

/** `src`'s id bits, from the id made last (its own, made just now). */
function setIdBits(src: Source): void {
  src.idA = lastIdBits.a;
  src.idB = lastIdBits.b;
  src.idC = lastIdBits.c;
}

/** `src`'s id bits, read from its id (an id made elsewhere, or read back from the journal). */
function readIdBits(src: Source): void {
  const bits = idBits(src.env.id);
  src.idA = bits.a;
  src.idB = bits.b;
  src.idC = bits.c;
}
