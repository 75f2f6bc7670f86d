/**
 * Nodes of a flow graph and the edges between them: `node(…)`, the two routers, `join`,
 * `subflow`, and `a.to(b, c)`. These are descriptions only; `runtime.flow(…)` builds the
 * running graph from them, so one node value can be used in several flows.
 */
import { RoostError, invalidOption } from '../errors.js';
import { checkObject } from '../validate-options.js';
import type { Envelope } from '../envelope/envelope.js';
import { assertName } from '../envelope/names.js';
import { Agent, type AgentOptions } from '../runtime/agent.js';
import type { OverflowPolicy } from './bounded-queue.js';
import type { Handler } from './handler.js';
import type { NodePolicy } from './policy.js';

/** What a node does. */
export type NodeKind = 'handler' | 'router' | 'join' | 'subflow';

/** Per-edge queue settings (the flow's defaults apply to whatever is not given). */
export interface EdgeOptions {
  /** Envelopes the edge holds (default: the flow's `queueCapacity`, 64). */
  readonly capacity?: number;
  /** What a full edge does (default: the flow's `overflow`, `wait`). */
  readonly overflow?: OverflowPolicy;
}

/** An edge target with its own queue settings: `a.to(edge(b, { capacity: 8 }))`. */
export interface EdgeSpec {
  readonly target: Node;
  readonly options: EdgeOptions;
}

/** `from` sends its outputs to each of `to`. Made by {@link Node.to}. */
export interface Adjacency {
  readonly from: Node;
  readonly to: readonly EdgeSpec[];
}

/** A flow a subflow node runs: what `runtime.flow(…)` returns fits it. */
export interface SubflowTarget {
  readonly name: string;
  emit(
    payload: unknown,
    options: { tenant?: string; deadline?: number; headers?: Record<string, string>; signal?: AbortSignal },
  ): Promise<{ traceId: string }>;
  fetch(traceId: string): Promise<unknown>;
  cancel(traceId: string): Promise<boolean>;
}

/** Settings of a {@link join} node. */
export interface JoinOptions {
  /** Envelopes of one trace to wait for (default: the node's number of incoming edges). */
  readonly k?: number;
  /** Give up on a trace's join after this long, failing it with `ROOST_ERR_JOIN_TIMEOUT` (default 30,000). */
  readonly timeoutMs?: number;
}

/** A vertex of a flow graph. */
export class Node {
  /** @internal use the factory functions. */
  constructor(
    readonly name: string,
    readonly kind: NodeKind,
    /** The agent this node runs (handler nodes), or null. */
    readonly agent: Agent | AgentOptions | null,
    /** Policy on top of the agent's. */
    readonly policy: NodePolicy | undefined,
    /** Routers: the targets a route can pick (they become edges). */
    readonly routes: readonly Node[] = [],
    /** Routers: picks the name of the target for an envelope, or null for none. */
    readonly select: ((envelope: Envelope) => string | null) | null = null,
    readonly join: Required<Pick<JoinOptions, 'timeoutMs'>> & Pick<JoinOptions, 'k'> | null = null,
    readonly subflow: SubflowTarget | null = null,
  ) {}

  /** Declares edges from this node to each target: its outputs go to all of them. */
  to(...targets: (Node | EdgeSpec)[]): Adjacency {
    return {
      from: this,
      to: targets.map((t, i) => {
        if (t instanceof Node) return { target: t, options: {} };
        if (typeof t === 'object' && t !== null && t.target instanceof Node) return t;
        throw invalidOption(`${this.name}.to[${i}]`, 'a node or edge(node, options)', t);
      }),
    };
  }
}

/** A target with its own edge settings, for {@link Node.to}. */
export function edge(target: Node, options: EdgeOptions): EdgeSpec {
  if (!(target instanceof Node)) throw invalidOption('edge.target', 'a node', target);
  checkObject('edge.options', options, ['capacity', 'overflow']);
  return { target, options };
}

/**
 * A node that runs an agent: `node(agent)` (named after it), `node(name, agent)`, or
 * `node(name, handler, policy?)` (an agent of that name is registered with the flow).
 */
export function node(agent: Agent, policy?: NodePolicy): Node;
export function node(name: string, agent: Agent, policy?: NodePolicy): Node;
export function node<I, O>(name: string, handler: Handler<I, O>, policy?: NodePolicy): Node;
export function node(a: Agent | string, b?: Agent | Handler<never, unknown> | NodePolicy, c?: NodePolicy): Node {
  if (a instanceof Agent) return new Node(a.name, 'handler', a, b as NodePolicy | undefined);
  const name = assertName('node.name', a);
  if (b instanceof Agent) return new Node(name, 'handler', b, c);
  if (typeof b !== 'function') throw invalidOption(`node(${name}).handler`, 'a handler function or an agent', b);
  return new Node(name, 'handler', { name, handler: b as Handler }, c);
}

/**
 * A predicate router: sends each envelope unchanged to the first target whose predicate holds,
 * else to `otherwise`, else fails the trace with `ROOST_ERR_NO_ROUTE`.
 */
export function route(
  name: string,
  cases: readonly (readonly [(envelope: Envelope) => boolean, Node])[],
  options: { otherwise?: Node } = {},
): Node {
  assertName('route.name', name);
  checkObject(`route(${name}).options`, options, ['otherwise']);
  if (!Array.isArray(cases) || cases.length === 0) throw invalidOption(`route(${name}).cases`, 'a non-empty array of [predicate, node]', cases);
  const list = cases.map(([predicate, target], i): readonly [(envelope: Envelope) => boolean, Node] => {
    if (typeof predicate !== 'function' || !(target instanceof Node)) {
      throw invalidOption(`route(${name}).cases[${i}]`, 'a [predicate, node] pair', cases[i]);
    }
    return [predicate, target];
  });
  const otherwise = options.otherwise ?? null;
  const targets = list.map(([, t]) => t);
  if (otherwise) targets.push(otherwise);
  return new Node(name, 'router', null, { timeoutMs: null }, dedupe(targets), (envelope) => {
    for (const [predicate, target] of list) if (predicate(envelope)) return target.name;
    return otherwise ? otherwise.name : null;
  });
}

/**
 * A router by discriminant: reads `payload[field]` and sends the envelope to `cases[value]`,
 * else to `otherwise`, else fails the trace with `ROOST_ERR_NO_ROUTE`.
 */
export function routeBy(name: string, field: string, cases: Readonly<Record<string, Node>>, options: { otherwise?: Node } = {}): Node {
  assertName('routeBy.name', name);
  checkObject(`routeBy(${name}).options`, options, ['otherwise']);
  if (typeof field !== 'string' || field === '') throw invalidOption(`routeBy(${name}).field`, 'a field name', field);
  const table = new Map<string, Node>();
  for (const [value, target] of Object.entries(cases)) {
    if (!(target instanceof Node)) throw invalidOption(`routeBy(${name}).cases.${value}`, 'a node', target);
    table.set(value, target);
  }
  if (table.size === 0) throw invalidOption(`routeBy(${name}).cases`, 'at least one case', cases);
  const otherwise = options.otherwise ?? null;
  const targets = [...table.values()];
  if (otherwise) targets.push(otherwise);
  return new Node(name, 'router', null, { timeoutMs: null }, dedupe(targets), (envelope) => {
    const payload = envelope.payload;
    const value = typeof payload === 'object' && payload !== null ? (payload as Record<string, unknown>)[field] : undefined;
    const target = typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean' ? table.get(String(value)) : undefined;
    return target ? target.name : otherwise ? otherwise.name : null;
  });
}

/**
 * Waits for `k` envelopes of one trace and sends on one envelope whose payload is their payloads
 * in arrival order. A trace that does not bring `k` in `timeoutMs` fails with
 * `ROOST_ERR_JOIN_TIMEOUT`; a branch that fails ends the trace (and so the join) with its error.
 * A join fires once per trace: envelopes arriving after it fired (`k` below the branches that
 * arrive) are dropped with a `join_surplus` event.
 */
export function join(name: string, options: JoinOptions = {}): Node {
  assertName('join.name', name);
  checkObject(`join(${name}).options`, options, ['k', 'timeoutMs']);
  if (options.k !== undefined && (!Number.isInteger(options.k) || options.k < 1 || options.k > 10_000)) {
    throw invalidOption(`join(${name}).k`, 'an integer from 1 to 10000', options.k);
  }
  const timeoutMs = options.timeoutMs ?? 30_000;
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 2_147_483_647) {
    throw invalidOption(`join(${name}).timeoutMs`, 'an integer from 1 to 2147483647', options.timeoutMs);
  }
  return new Node(name, 'join', null, { timeoutMs: null }, [], null, { k: options.k, timeoutMs });
}

/**
 * Runs another flow as one node: the payload is emitted into `flow` with the same tenant,
 * deadline and headers, and its result is this node's output. Cancelling the parent trace (or
 * its timeout) cancels the child trace.
 */
export function subflow(name: string, flow: SubflowTarget, policy?: NodePolicy): Node {
  assertName('subflow.name', name);
  if (typeof flow !== 'object' || flow === null || typeof flow.emit !== 'function') {
    throw new RoostError('ROOST_ERR_INVALID_OPTION', `Expected \`subflow(${name}).flow\` to be a flow made by runtime.flow()`, {
      field: `subflow(${name}).flow`,
      expected: 'a flow',
    });
  }
  return new Node(name, 'subflow', null, policy, [], null, null, flow);
}

function dedupe(nodes: Node[]): Node[] {
  return [...new Set(nodes)];
}
