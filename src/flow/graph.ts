/**
 * Turns a flow's adjacency list into a checked graph: unique node names, known edge targets,
 * one ingress, every node reachable, and no cycle unless the flow allows cycles.
 */
import { RoostError } from '../errors.js';
import type { OverflowPolicy } from './bounded-queue.js';
import type { Adjacency, Node } from './node.js';

/** One edge of a checked graph, with its queue settings resolved. */
export interface GraphEdge {
  readonly from: Node;
  readonly to: Node;
  readonly capacity: number;
  readonly overflow: OverflowPolicy;
}

/** A checked flow graph. */
export interface Graph {
  /** Every node, ingress first. */
  readonly nodes: readonly Node[];
  readonly edges: readonly GraphEdge[];
  readonly ingress: Node;
  readonly hasCycle: boolean;
}

function invalid(flow: string, message: string, field = `flow(${flow}).edges`): RoostError {
  return new RoostError('ROOST_ERR_FLOW_INVALID', `flow ${flow}: ${message}`, { field, expected: 'a valid flow graph' });
}

/** Checks and resolves a graph; throws `ROOST_ERR_FLOW_INVALID` naming what is wrong. */
export function buildGraph(
  flow: string,
  adjacencies: readonly Adjacency[],
  defaults: { capacity: number; overflow: OverflowPolicy; allowCycles: boolean; ingress: Node | undefined },
): Graph {
  if (!isList(adjacencies) || adjacencies.length === 0) throw invalid(flow, 'expected a non-empty array of edges like a.to(b)');
  const byName = new Map<string, Node>();
  const order: Node[] = [];
  const add = (n: Node): void => {
    const seen = byName.get(n.name);
    if (seen === undefined) {
      byName.set(n.name, n);
      order.push(n);
    } else if (seen !== n) {
      throw invalid(flow, `two different nodes are named ${n.name}`);
    }
  };
  const edges: GraphEdge[] = [];
  const edgeKeys = new Set<string>();
  const addEdge = (from: Node, to: Node, options: { capacity?: number; overflow?: OverflowPolicy }): void => {
    const key = `${from.name}\u0000${to.name}`;
    if (edgeKeys.has(key)) throw invalid(flow, `edge ${from.name} -> ${to.name} is declared twice`);
    edgeKeys.add(key);
    const capacity = options.capacity ?? defaults.capacity;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1_000_000) {
      throw invalid(flow, `edge ${from.name} -> ${to.name}: capacity must be an integer from 1 to 1000000`, `flow(${flow}).edge(${from.name}->${to.name}).capacity`);
    }
    const overflow = options.overflow ?? defaults.overflow;
    if (overflow !== 'wait' && overflow !== 'reject' && overflow !== 'drop_oldest') {
      throw invalid(flow, `edge ${from.name} -> ${to.name}: overflow must be wait, reject or drop_oldest`, `flow(${flow}).edge(${from.name}->${to.name}).overflow`);
    }
    edges.push({ from, to, capacity, overflow });
  };

  for (let i = 0; i < adjacencies.length; i++) {
    const adjacency = adjacencies[i]!;
    if (typeof adjacency !== 'object' || adjacency === null || !('from' in adjacency) || !isList(adjacency.to)) {
      throw invalid(flow, `edges[${i}] is not an adjacency; build edges with a.to(b, c)`);
    }
    add(adjacency.from);
    for (const spec of adjacency.to) {
      add(spec.target);
      addEdge(adjacency.from, spec.target, spec.options);
    }
  }
  // Routers' targets are edges too; nodes reached only through a router are found here.
  for (let i = 0; i < order.length; i++) {
    const n = order[i]!;
    for (const target of n.routes) {
      add(target);
      if (!edgeKeys.has(`${n.name}\u0000${target.name}`)) addEdge(n, target, {});
    }
  }
  if (defaults.ingress !== undefined) add(defaults.ingress);

  const inDegree = new Map<string, number>(order.map((n) => [n.name, 0]));
  const out = new Map<string, Node[]>(order.map((n) => [n.name, []]));
  for (const e of edges) {
    inDegree.set(e.to.name, (inDegree.get(e.to.name) ?? 0) + 1);
    out.get(e.from.name)!.push(e.to);
  }
  let ingress = defaults.ingress;
  if (ingress === undefined) {
    const roots = order.filter((n) => inDegree.get(n.name) === 0);
    if (roots.length !== 1) {
      throw invalid(
        flow,
        roots.length === 0
          ? 'no node without incoming edges; name the first node with the `ingress` option'
          : `several nodes without incoming edges (${roots.map((n) => n.name).join(', ')}); name the first one with the \`ingress\` option`,
        `flow(${flow}).ingress`,
      );
    }
    ingress = roots[0]!;
  }
  for (const n of order) {
    if (n.kind === 'router' && out.get(n.name)!.length === 0) throw invalid(flow, `router ${n.name} has no targets`);
    if (n.kind === 'join' && n.join?.k !== undefined && n.join.k > 1 && inDegree.get(n.name)! === 0) {
      throw invalid(flow, `join ${n.name} has no incoming edges`);
    }
  }

  // Reachability and cycles, by one depth-first walk from the ingress.
  const state = new Map<string, 1 | 2>(); // 1: on the stack, 2: done
  let cycle: string[] | null = null;
  const stack: string[] = [];
  const visit = (n: Node): void => {
    state.set(n.name, 1);
    stack.push(n.name);
    for (const next of out.get(n.name)!) {
      const s = state.get(next.name);
      if (s === 1 && cycle === null) cycle = [...stack.slice(stack.indexOf(next.name)), next.name];
      else if (s === undefined) visit(next);
    }
    stack.pop();
    state.set(n.name, 2);
  };
  visit(ingress);
  const unreachable = order.filter((n) => !state.has(n.name));
  if (unreachable.length > 0) throw invalid(flow, `nodes not reachable from the ingress ${ingress.name}: ${unreachable.map((n) => n.name).join(', ')}`);
  const found = cycle as string[] | null;
  if (found !== null && !defaults.allowCycles) {
    throw invalid(flow, `cycle ${found.join(' -> ')}; set allowCycles (a hop budget then bounds each trace)`, `flow(${flow}).allowCycles`);
  }
  return { nodes: [ingress, ...order.filter((n) => n !== ingress)], edges, ingress, hasCycle: found !== null };
}

/** `Array.isArray` without narrowing (it turns a readonly array's type into `any[]`). */
function isList(value: unknown): boolean {
  return Array.isArray(value);
}
